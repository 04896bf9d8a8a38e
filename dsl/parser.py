"""Pass 1: source text -> syntax trees (ast.Rule), with syntax errors and limits as Diagnostics.

Lark's LALR parser runs with ``propagate_positions`` so every node has a span. Nothing Lark raises
escapes: UnexpectedInput becomes a Diagnostic with a message written for people ("unexpected
'then', expected an expression"), and any other LarkError an internal-error diagnostic.

Error recovery works per rule. A well-formed file is parsed in one call (the fast path). When
that fails, the file is cut at every line that starts with the keyword ``rule`` (``rule`` is
reserved, so such a line can only start a rule) and each piece is parsed on its own: the first
syntax error of every broken rule is reported, and the good rules still reach the checker, so one
``rules check`` shows all that is wrong.

Limits are checked before Lark sees the text, because Lark's cost grows with the input and a
hostile file should be refused cheaply: the file size, the number of rules, and the nesting of
brackets. Expression depth is measured again on the tree (ast.py), where operator chains count.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources

import lark
from lark.exceptions import LarkError, UnexpectedCharacters, UnexpectedInput, UnexpectedToken

from .ast import Rule, build_rules
from .diagnostics import Diagnostic, Span


@dataclass(frozen=True, slots=True)
class Limits:
    """Limits on what one rule file may hold, each reported with its own diagnostic.

    - ``max_bytes``: 2 MiB of UTF-8. Ten thousand rules of a realistic size (a title, three
      clauses, a retrain with cooldown: ~150-200 bytes) fit; parsing 2 MiB takes a few seconds on
      the development machine, an acceptable worst case for ApplyRules.
    - ``max_rules``: 10,000. The index keeps matching cost flat far beyond that, but compiling
      takes ~0.5 ms per rule, so 10,000 rules is already seconds of work per apply.
    - ``max_depth``: 64 levels of expression nesting (brackets, or operator nodes). Real rules
      use fewer than 10; the limit keeps every recursive pass after parsing (checker, compiler,
      interpreter) and the generated Python far from their own recursion limits.
    """

    max_bytes: int = 2 * 1024 * 1024
    max_rules: int = 10_000
    max_depth: int = 64


DEFAULT_LIMITS = Limits()

# A line whose first word is `rule`: where a rule starts (used to cut a broken file into rules).
_RULE_START = re.compile(r"^[ \t]*rule\b", re.MULTILINE)
# Strings and comments are skipped when counting brackets: "(" inside them does not nest.
_BRACKETS = re.compile(r'"(?:[^"\\\n]|\\.)*"|#[^\n]*|[()\[\]]')


@lru_cache(maxsize=1)
def _lark() -> lark.Lark:
    grammar = resources.files(__package__).joinpath("grammar.lark").read_text(encoding="utf-8")
    return lark.Lark(
        grammar,
        parser="lalr",
        lexer="basic",  # keywords reserved everywhere: errors point at the misplaced keyword
        propagate_positions=True,
        maybe_placeholders=False,
    )


@dataclass(slots=True)
class ParseResult:
    rules: list[Rule] = field(default_factory=list)
    diagnostics: list[Diagnostic] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not any(d.is_error for d in self.diagnostics)


def _position(text: str, offset: int) -> tuple[int, int]:
    line = text.count("\n", 0, offset) + 1
    column = offset - (text.rfind("\n", 0, offset) + 1) + 1
    return line, column


def _bracket_overflow(text: str, max_depth: int) -> int | None:
    """Offset of the first bracket nested deeper than ``max_depth``, if any."""
    depth = 0
    for m in _BRACKETS.finditer(text):
        ch = m.group()
        if ch in "([":
            depth += 1
            if depth > max_depth:
                return m.start()
        elif ch in ")]":
            depth = max(depth - 1, 0)
    return None


def parse_source(source: str, filename: str, limits: Limits = DEFAULT_LIMITS) -> ParseResult:
    """Parse a whole rule file. Never raises for any input text."""
    result = ParseResult()
    size = len(source.encode("utf-8", "surrogatepass"))
    if size > limits.max_bytes:
        result.diagnostics.append(
            Diagnostic.at(
                "error",
                "limit-size",
                f"rule file is too large: {size} bytes (the limit is {limits.max_bytes})",
                filename,
                Span.point(1, 1),
            )
        )
        return result
    starts = [m.start() + len(m.group()) - 4 for m in _RULE_START.finditer(source)]
    if len(starts) > limits.max_rules:
        line, column = _position(source, starts[limits.max_rules])
        result.diagnostics.append(_too_many(len(starts), limits, filename, Span.point(line, column, 4)))
        return result

    if _bracket_overflow(source, limits.max_depth) is None:
        try:
            tree = _lark().parse(source)
        except LarkError:
            pass  # parse again rule by rule below, to report every broken rule
        else:
            rules, diags = build_rules(tree, filename, 0, limits.max_depth)
            result.rules, result.diagnostics = rules, diags
            _check_count(result, limits, filename)
            return result

    _parse_in_pieces(source, filename, limits, [m.start() for m in _RULE_START.finditer(source)], result)
    _check_count(result, limits, filename)
    return result


def _too_many(count: int, limits: Limits, filename: str, span: Span) -> Diagnostic:
    return Diagnostic.at(
        "error", "limit-rules", f"too many rules: {count} (the limit is {limits.max_rules})", filename, span
    )


def _check_count(result: ParseResult, limits: Limits, filename: str) -> None:
    # Rules that do not start a line escape the count before parsing; count them here too.
    if len(result.rules) > limits.max_rules:
        extra = result.rules[limits.max_rules]
        result.diagnostics.append(_too_many(len(result.rules), limits, filename, extra.name_span))
        del result.rules[limits.max_rules :]


def _parse_in_pieces(source: str, filename: str, limits: Limits, starts: list[int], result: ParseResult) -> None:
    bounds = [0] + starts + [len(source)]
    line_offset = 0
    for begin, end in zip(bounds, bounds[1:]):
        if begin == end:
            continue
        piece = source[begin:end]
        overflow = _bracket_overflow(piece, limits.max_depth)
        if overflow is not None:
            line, column = _position(piece, overflow)
            result.diagnostics.append(
                Diagnostic.at(
                    "error",
                    "limit-depth",
                    f"expression is nested too deeply: brackets deeper than {limits.max_depth} levels",
                    filename,
                    Span.point(line + line_offset, column),
                )
            )
        else:
            try:
                tree = _lark().parse(piece)
            except UnexpectedInput as exc:
                result.diagnostics.append(syntax_diagnostic(exc, filename, line_offset))
            except LarkError as exc:  # not expected from a plain parse; reported, never raised
                result.diagnostics.append(
                    Diagnostic.at("error", "internal", f"parser failure: {exc}", filename, Span.point(line_offset + 1, 1))
                )
            else:
                rules, diags = build_rules(tree, filename, line_offset, limits.max_depth)
                result.rules.extend(rules)
                result.diagnostics.extend(diags)
        line_offset += piece.count("\n")


# ---------------------------------------------------------------------------------------------
# Syntax error messages

_EXPRESSION_START = {"NAME", "NUMLIKE", "STRING", "_LPAR", "MINUS", "_NOT", "_TRUE", "_FALSE"}
_OPERATORS = {"COMPOP", "PLUS", "MINUS", "STAR", "SLASH", "_AND", "_OR", "_IN", "_NOT"}
_DISPLAY = {
    "NAME": "a name",
    "NUMLIKE": "a number",
    "STRING": "a string",
    "COMPOP": "a comparison",
    "$END": "end of input",
    "_RULE": "'rule'",
    "_WHEN": "'when'",
    "_THEN": "'then'",
    "_AND": "'and'",
    "_OR": "'or'",
    "_NOT": "'not'",
    "_IN": "'in'",
    "_TRUE": "'true'",
    "_FALSE": "'false'",
    "_COLON": "':'",
    "_COMMA": "','",
    "_DOT": "'.'",
    "_LPAR": "'('",
    "_RPAR": "')'",
    "_LBRACKET": "'['",
    "_RBRACKET": "']'",
    "PLUS": "'+'",
    "MINUS": "'-'",
    "STAR": "'*'",
    "SLASH": "'/'",
}
# The order expected things are listed in: what is most likely missing first.
_ORDER = ["_COLON", "_WHEN", "_THEN", "_RPAR", "_RBRACKET", "_COMMA", "_RULE", "STRING", "NAME", "$END"]


def _describe_token(tok: lark.Token) -> str:
    if tok.type == "$END":
        return "end of input"
    if tok.type == "NAME":
        return f"name '{tok}'"
    if tok.type == "NUMLIKE":
        return f"number '{tok}'"
    if tok.type == "STRING":
        return f"string {tok}"
    return f"'{tok}'"


def _describe_expected(expected: set[str]) -> str:
    parts: list[str] = []
    rest = set(expected)
    if {"NAME", "NUMLIKE", "_LPAR"} <= rest:
        parts.append("an expression")
        rest -= _EXPRESSION_START
    if {"COMPOP", "PLUS"} <= rest or {"_AND", "_OR"} <= rest:
        parts.append("an operator")
        rest -= _OPERATORS
    ordered = sorted(rest, key=lambda t: (_ORDER.index(t) if t in _ORDER else len(_ORDER), t))
    parts.extend(_DISPLAY.get(t, t) for t in ordered)
    if not parts:
        return "nothing more"
    if len(parts) == 1:
        return parts[0]
    return ", ".join(parts[:-1]) + " or " + parts[-1]


def syntax_diagnostic(exc: UnexpectedInput, filename: str, line_offset: int = 0) -> Diagnostic:
    """A Diagnostic for one Lark syntax error, positions moved down by ``line_offset``."""
    if isinstance(exc, UnexpectedCharacters):
        ch = exc.char
        if ch == '"':
            message = "unterminated string (a string ends with \" on the same line)"
        elif ch == "'":
            message = "unexpected character \"'\": strings are written in double quotes"
        elif ch == "=":
            message = "unexpected character '=': compare with '=='"
        elif ch == "!":
            message = "unexpected character '!': write 'not' or '!='"
        elif ch == "&" or ch == "|":
            message = f"unexpected character '{ch}': write 'and' / 'or'"
        else:
            message = f"unexpected character {ch!r}"
        span = Span.point(exc.line + line_offset, exc.column)
        return Diagnostic.at("error", "syntax", message, filename, span)

    if isinstance(exc, UnexpectedToken):
        tok = exc.token
        try:
            expected = set(exc.interactive_parser.accepts())
        except Exception:  # accepts() replays the parser; fall back to the table's answer
            expected = set(exc.expected or ())
        if tok.type == "$END":
            line = getattr(tok, "end_line", None) or exc.line
            column = getattr(tok, "end_column", None) or exc.column
            span = Span.point(line + line_offset, column)
        else:
            span = Span(tok.line + line_offset, tok.column, tok.end_line + line_offset, tok.end_column)
        message = f"unexpected {_describe_token(tok)}, expected {_describe_expected(expected)}"
        if tok.type == "COMPOP" and "COMPOP" not in expected and "NUMLIKE" not in expected:
            message = "comparisons do not chain: write 'a < b and b < c'"
        elif tok.type.startswith("_") and tok.type[1:].isalpha() and "NAME" in expected and "NUMLIKE" not in expected:
            message += f" ('{tok}' is a keyword)"
        return Diagnostic.at("error", "syntax", message, filename, span)

    line = getattr(exc, "line", 1) or 1
    column = getattr(exc, "column", 1) or 1
    return Diagnostic.at("error", "syntax", f"syntax error: {exc}", filename, Span.point(line + line_offset, column))
