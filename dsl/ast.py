"""Typed syntax tree of a rule file, with a span on every node, and its builder.

The builder is the set of callbacks the LALR parser calls as it reduces (``Lark(transformer=...)``
in parser.py): each node is built as soon as its text is parsed, from its children and tokens,
with no intermediate parse tree and no walk over one. Reductions happen in a loop, never by
recursion, so a file nesting expressions thousands deep cannot hit Python's recursion limit
before the depth limit is reported. Spans come from the tokens (the grammar keeps the keywords
and brackets in the rules that need them, with ``!``): a node starts where its first child or
token starts and ends where its last one ends, brackets included.

It raises nothing: literal problems are kept on the nodes (``error``) for the checker, and only
the depth and list-length limits are reported here: no later (recursive) pass may see a tree
deeper than the limit.

No types are decided here; that is checker.py's job.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Union

from lark import Token

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
# Builder: the parser's reduce callbacks
#
# Every expression callback returns ``(node, depth, span)``: the node; its nesting depth (a leaf
# is 1, an operator adds one, brackets add none); and the text it covers, which is the node's own
# span except for a bracketed expression, whose brackets are part of what its parent covers.


@dataclass(slots=True)
class _Items:
    """The items of a ``[...]`` list while it waits for its ``in``."""

    items: tuple
    depth: int
    span: Span


def _tok_span(tok: Token, offset: int) -> Span:
    return Span(tok.line + offset, tok.column, tok.end_line + offset, tok.end_column)


def _string(tok: Token, offset: int) -> StrLit:
    """A string token, its error (if any) pointing at the bad escape (strings are one line)."""
    value, error, at = decode_string(str(tok))
    error_span = Span.point(tok.line + offset, tok.column + at, 2) if error else None
    return StrLit(_tok_span(tok, offset), str(tok), value, error, error_span)


def _cover(first: Span, last: Span) -> Span:
    return Span(first.line, first.column, last.end_line, last.end_column)


class Builder(threading.local):
    """The callbacks, one per grammar rule or alias, each given the children of what was just
    reduced: tokens, and the values of the callbacks below it.

    The parser is built once (it is costly) with one Builder, then shared by every thread that
    parses; what one parse needs (its file name, the line its piece starts after, the limits, the
    diagnostics found) is per thread (``threading.local``), set by ``begin`` before each parse.
    A parse that fails is thrown away with its diagnostics (the error message replays the parser,
    which calls these callbacks again)."""

    filename = "<rules>"
    offset = 0
    max_depth = 0
    max_list = 0

    def begin(self, filename: str, line_offset: int, max_depth: int, max_list: int) -> list[Diagnostic]:
        """Prepare this thread's next parse; its diagnostics are collected in the list returned."""
        self.filename = filename
        self.offset = line_offset
        self.max_depth = max_depth
        self.max_list = max_list
        self.diagnostics: list[Diagnostic] = []
        return self.diagnostics

    # --- leaves -------------------------------------------------------------------------------
    def number(self, children):
        tok = children[0]
        span = _tok_span(tok, self.offset)
        lit = parse_numeric(str(tok))
        return (NumLit(span, str(tok), lit.kind, lit.value, lit.error), 1, span)

    def string(self, children):
        lit = _string(children[0], self.offset)
        return (lit, 1, lit.span)

    def true(self, children):
        span = _tok_span(children[0], self.offset)
        return (BoolLit(span, True), 1, span)

    def false(self, children):
        span = _tok_span(children[0], self.offset)
        return (BoolLit(span, False), 1, span)

    def path(self, children):  # NAME ("." NAME)*
        first, last = children[0], children[-1]
        span = Span(first.line + self.offset, first.column, last.end_line + self.offset, last.end_column)
        return (Name(span, tuple(str(t) for t in children[::2])), 1, span)

    def index(self, children):  # NAME "[" STRING "]"
        name, _, key_tok, close = children
        key = _string(key_tok, self.offset)
        span = _cover(_tok_span(name, self.offset), _tok_span(close, self.offset))
        return (Name(span, (str(name), key.value), True, key.error, key.error_span), 1, span)

    # --- operators ----------------------------------------------------------------------------
    def atom(self, children):  # "(" expr ")": the same node, covering its brackets
        (node, depth, _), close = children[1], children[2]
        return (node, depth, _cover(_tok_span(children[0], self.offset), _tok_span(close, self.offset)))

    def neg(self, children):  # "-" unary
        (operand, depth, covered) = children[1]
        span = _cover(_tok_span(children[0], self.offset), covered)
        return (Neg(span, operand), depth + 1, span)

    def not_(self, children):  # "not" not_test
        (operand, depth, covered) = children[1]
        span = _cover(_tok_span(children[0], self.offset), covered)
        return (Not(span, operand), depth + 1, span)

    def binop(self, children):
        (left, dl, sl), op, (right, dr, sr) = children
        span = _cover(sl, sr)
        return (BinOp(span, str(op), left, right, _tok_span(op, self.offset)), max(dl, dr) + 1, span)

    def compare(self, children):
        (left, dl, sl), op, (right, dr, sr) = children
        span = _cover(sl, sr)
        return (Compare(span, str(op), left, right, _tok_span(op, self.offset)), max(dl, dr) + 1, span)

    def _in(self, children, negated: bool):  # sum "not"? "in" list
        (operand, depth, covered), items = children[0], children[-1]
        span = _cover(covered, items.span)
        return (InList(span, operand, items.items, negated, items.span), max(depth, items.depth) + 1, span)

    def in_(self, children):
        return self._in(children, False)

    def not_in(self, children):
        return self._in(children, True)

    def list(self, children):  # "[" (expr ("," expr)* ","?)? "]"
        exprs = children[1:-1:2]
        span = _cover(_tok_span(children[0], self.offset), _tok_span(children[-1], self.offset))
        if len(exprs) > self.max_list:
            message = f"list is too long: {len(exprs)} items (the limit is {self.max_list})"
            self.diagnostics.append(Diagnostic.at("error", "limit-list", message, self.filename, span.start()))
        depth = max((d for _, d, _ in exprs), default=0)
        return _Items(tuple(e for e, _, _ in exprs), depth, span)

    def call(self, children):  # NAME "(" (expr ("," expr)*)? ")"
        name, args = children[0], children[2:-1:2]
        name_span = _tok_span(name, self.offset)
        span = _cover(name_span, _tok_span(children[-1], self.offset))
        depth = max((d for _, d, _ in args), default=0) + 1
        return (Call(span, str(name), name_span, tuple(e for e, _, _ in args)), depth, span)

    def _boolop(self, children, op: str):  # term (op term)+
        terms: list = []
        depth = 0
        for term, d, _ in children[::2]:
            if isinstance(term, BoolOp) and term.op == op:
                terms.extend(term.terms)  # (a and b) and c == a and b and c, short-circuit included
                depth = max(depth, d - 1)
            else:
                terms.append(term)
                depth = max(depth, d)
        span = _cover(children[0][2], children[-1][2])
        return (BoolOp(span, op, tuple(terms)), depth + 1, span)

    def and_(self, children):
        return self._boolop(children, "and")

    def or_(self, children):
        return self._boolop(children, "or")

    # --- rules --------------------------------------------------------------------------------
    def action(self, children):  # NAME word*
        name, words = children[0], []
        for tok in children[1:]:
            kind = {"NAME": "name", "NUMLIKE": "number", "STRING": "string"}[tok.type]
            words.append(Word(_tok_span(tok, self.offset), kind, str(tok)))
        name_span = _tok_span(name, self.offset)
        span = _cover(name_span, words[-1].span) if words else name_span
        return Action(span, str(name), name_span, tuple(words))

    def rule(self, children):  # "rule" NAME STRING? ":" "when" expr "then" action ("," action)*
        name = children[1]
        title = _string(children[2], self.offset) if children[2].type == "STRING" else None
        at = 5 if title else 4
        condition, depth, _ = children[at]
        actions = tuple(children[at + 2 :: 2])
        if depth > self.max_depth:
            message = f"expression is nested too deeply: {depth} levels (the limit is {self.max_depth})"
            self.diagnostics.append(
                Diagnostic.at("error", "limit-depth", message, self.filename, condition.span.start())
            )
            condition = None
        span = _cover(_tok_span(children[0], self.offset), actions[-1].span)
        return Rule(span, str(name), _tok_span(name, self.offset), title, condition, actions)

    def start(self, children):
        return children
