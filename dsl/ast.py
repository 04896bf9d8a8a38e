"""Typed syntax tree of a rule file, with a span on every node, and its builder.

The builder turns Lark's parse tree into these dataclasses after ``parse()`` returned. It is an
explicit-stack post-order walk rather than a ``lark.Transformer``: rule files may nest
expressions thousands deep (a hostile or generated file), and a recursive walk would hit Python's
recursion limit before the depth limit could be reported. It raises nothing: literal problems are
kept on the nodes (``error``) for the checker, and only the depth and list-length limits are
reported here: no later (recursive) pass may see a tree deeper than the limit.

No types are decided here; that is checker.py's job.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union

from lark import Token, Tree

from .diagnostics import Diagnostic, Span
from .schema import decode_string, parse_numeric


@dataclass(frozen=True, slots=True)
class NumLit:
    span: Span
    text: str
    kind: str  # "number" | "percent" | "duration" | "bad"
    value: float
    error: str | None = None


@dataclass(frozen=True, slots=True)
class StrLit:
    span: Span
    text: str  # as written, with quotes
    value: str
    error: str | None = None
    error_span: Span | None = None  # the bad escape


@dataclass(frozen=True, slots=True)
class BoolLit:
    span: Span
    value: bool


@dataclass(frozen=True, slots=True)
class Name:
    """A bare or dotted name: ``severity``, ``medium``, ``metrics.drift_score``, ``model.age``.
    ``metrics["p&l"]`` is a Name too, with ``bracket`` set (the key is not an identifier)."""

    span: Span
    parts: tuple[str, ...]
    bracket: bool = False
    error: str | None = None
    error_span: Span | None = None  # the bad escape in the key

    @property
    def dotted(self) -> str:
        return ".".join(self.parts)


@dataclass(frozen=True, slots=True)
class Neg:
    span: Span
    operand: "Expr"


@dataclass(frozen=True, slots=True)
class Not:
    span: Span
    operand: "Expr"


@dataclass(frozen=True, slots=True)
class BinOp:
    span: Span
    op: str  # + - * /
    left: "Expr"
    right: "Expr"
    op_span: Span


@dataclass(frozen=True, slots=True)
class Compare:
    span: Span
    op: str  # == != < <= > >=
    left: "Expr"
    right: "Expr"
    op_span: Span


@dataclass(frozen=True, slots=True)
class InList:
    span: Span
    operand: "Expr"
    items: tuple["Expr", ...]
    negated: bool
    list_span: Span


@dataclass(frozen=True, slots=True)
class Call:
    span: Span
    func: str
    func_span: Span
    args: tuple["Expr", ...]


@dataclass(frozen=True, slots=True)
class BoolOp:
    """``and``/``or`` over two or more terms, flattened: ``a and (b and c)`` has three terms."""

    span: Span
    op: str  # "and" | "or"
    terms: tuple["Expr", ...]


Expr = Union[NumLit, StrLit, BoolLit, Name, Neg, Not, BinOp, Compare, InList, Call, BoolOp]


@dataclass(frozen=True, slots=True)
class Word:
    """One word after an action name: a name, a numeric literal or a string."""

    span: Span
    kind: str  # "name" | "number" | "string"
    text: str


@dataclass(frozen=True, slots=True)
class Action:
    span: Span
    name: str
    name_span: Span
    words: tuple[Word, ...]


@dataclass(frozen=True, slots=True)
class Rule:
    span: Span
    name: str
    name_span: Span
    title: StrLit | None
    condition: Expr | None  # None when the depth limit dropped it (already reported)
    actions: tuple[Action, ...]


# ---------------------------------------------------------------------------------------------
# Builder


@dataclass(slots=True)
class _Items:
    """The items of a ``[...]`` list while it waits for its ``in``."""

    span: Span
    items: tuple


def _tok_span(tok: Token, offset: int) -> Span:
    return Span(tok.line + offset, tok.column, tok.end_line + offset, tok.end_column)


def _string(tok: Token, offset: int) -> StrLit:
    """A string token, its error (if any) pointing at the bad escape (strings are one line)."""
    value, error, at = decode_string(str(tok))
    error_span = Span.point(tok.line + offset, tok.column + at, 2) if error else None
    return StrLit(_tok_span(tok, offset), str(tok), value, error, error_span)


class _Builder:
    def __init__(self, filename: str, line_offset: int, max_depth: int, max_list: int):
        self.filename = filename
        self.offset = line_offset
        self.max_depth = max_depth
        self.max_list = max_list
        self.diagnostics: list[Diagnostic] = []

    def span(self, tree: Tree) -> Span:
        m = tree.meta
        return Span(m.line + self.offset, m.column, m.end_line + self.offset, m.end_column)

    def build(self, tree: Tree) -> list[Rule]:
        # values: Token, or (node, depth) for everything built.
        stack: list[tuple[object, bool]] = [(tree, False)]
        values: list = []
        while stack:
            node, done = stack.pop()
            if not isinstance(node, Tree):
                values.append(node)
                continue
            if not done:
                stack.append((node, True))
                stack.extend((child, False) for child in reversed(node.children))
                continue
            n = len(node.children)
            args = values[len(values) - n :] if n else []
            if n:
                del values[len(values) - n :]
            values.append(getattr(self, "b_" + str(node.data))(node, args))
        (rules, _depth) = values[0]
        return rules

    # --- leaves -------------------------------------------------------------------------------
    def b_number(self, tree, args):
        tok = args[0]
        lit = parse_numeric(str(tok))
        return (NumLit(self.span(tree), str(tok), lit.kind, lit.value, lit.error), 1)

    def b_string(self, tree, args):
        return (_string(args[0], self.offset), 1)

    def b_true(self, tree, args):
        return (BoolLit(self.span(tree), True), 1)

    def b_false(self, tree, args):
        return (BoolLit(self.span(tree), False), 1)

    def b_path(self, tree, args):
        return (Name(self.span(tree), tuple(str(t) for t in args)), 1)

    def b_index(self, tree, args):
        key = _string(args[1], self.offset)
        return (Name(self.span(tree), (str(args[0]), key.value), True, key.error, key.error_span), 1)

    # --- operators ----------------------------------------------------------------------------
    def b_neg(self, tree, args):
        (operand, d) = args[1]
        return (Neg(self.span(tree), operand), d + 1)

    def b_not_(self, tree, args):
        (operand, d) = args[0]
        return (Not(self.span(tree), operand), d + 1)

    def b_binop(self, tree, args):
        (left, dl), op, (right, dr) = args
        return (BinOp(self.span(tree), str(op), left, right, _tok_span(op, self.offset)), max(dl, dr) + 1)

    def b_compare(self, tree, args):
        (left, dl), op, (right, dr) = args
        return (Compare(self.span(tree), str(op), left, right, _tok_span(op, self.offset)), max(dl, dr) + 1)

    def _in(self, tree, args, negated: bool):
        (operand, d), (items, di) = args
        node = InList(self.span(tree), operand, items.items, negated, items.span)
        return (node, max(d, di) + 1)

    def b_in_(self, tree, args):
        return self._in(tree, args, False)

    def b_not_in(self, tree, args):
        return self._in(tree, args, True)

    def b_list(self, tree, args):
        depth = max((d for _, d in args), default=0)
        span = self.span(tree)
        if len(args) > self.max_list:
            self.diagnostics.append(
                Diagnostic.at(
                    "error",
                    "limit-list",
                    f"list is too long: {len(args)} items (the limit is {self.max_list})",
                    self.filename,
                    span.start(),
                )
            )
        return (_Items(span, tuple(e for e, _ in args)), depth)

    def b_call(self, tree, args):
        name, rest = args[0], args[1:]
        depth = max((d for _, d in rest), default=0) + 1
        node = Call(self.span(tree), str(name), _tok_span(name, self.offset), tuple(e for e, _ in rest))
        return (node, depth)

    def _boolop(self, tree, args, op: str):
        terms: list = []
        depth = 0
        for term, d in args:
            if isinstance(term, BoolOp) and term.op == op:
                terms.extend(term.terms)  # (a and b) and c == a and b and c, short-circuit included
                depth = max(depth, d - 1)
            else:
                terms.append(term)
                depth = max(depth, d)
        return (BoolOp(self.span(tree), op, tuple(terms)), depth + 1)

    def b_and_(self, tree, args):
        return self._boolop(tree, args, "and")

    def b_or_(self, tree, args):
        return self._boolop(tree, args, "or")

    # --- rules --------------------------------------------------------------------------------
    def b_action(self, tree, args):
        name, words = args[0], []
        for tok in args[1:]:
            kind = {"NAME": "name", "NUMLIKE": "number", "STRING": "string"}[tok.type]
            words.append(Word(_tok_span(tok, self.offset), kind, str(tok)))
        return (Action(self.span(tree), str(name), _tok_span(name, self.offset), tuple(words)), 0)

    def b_rule(self, tree, args):
        name = args[0]
        i = 1
        title = None
        if isinstance(args[1], Token):  # the optional title string
            title = _string(args[1], self.offset)
            i = 2
        condition, depth = args[i]
        actions = tuple(a for a, _ in args[i + 1 :])
        if depth > self.max_depth:
            self.diagnostics.append(
                Diagnostic.at(
                    "error",
                    "limit-depth",
                    f"expression is nested too deeply: {depth} levels (the limit is {self.max_depth})",
                    self.filename,
                    condition.span.start(),
                )
            )
            condition = None
        rule = Rule(self.span(tree), str(name), _tok_span(name, self.offset), title, condition, actions)
        return (rule, 0)

    def b_start(self, tree, args):
        return ([r for r, _ in args], 0)


def build_rules(
    tree: Tree, filename: str, line_offset: int, max_depth: int, max_list: int
) -> tuple[list[Rule], list[Diagnostic]]:
    """Rules of one parse tree; positions moved down by ``line_offset`` lines."""
    builder = _Builder(filename, line_offset, max_depth, max_list)
    rules = builder.build(tree)
    return rules, builder.diagnostics
