"""Pass 1: source text -> syntax trees (ast.Rule), with syntax errors and limits as Diagnostics.

Lark's LALR parser builds the syntax tree as it reduces: its callbacks are ast.Builder's, so no
parse tree is made and nothing walks one (positions come from the tokens, not from Lark's
``propagate_positions``, which was over half the cost of a parse). Nothing Lark raises escapes: UnexpectedInput becomes a Diagnostic with a message written for people ("unexpected
'then', expected an expression"), and any other LarkError an internal-error diagnostic.

Lines break where text.py says (the rule diagnostics use too): the text is normalized to ``\n``
breaks before Lark, which counts only ``\n``.

The file is cut at every line that starts with the keyword ``rule`` (``rule`` is reserved, so such
a line can only start a rule) and parsed in batches of rules. A batch that fails is parsed again
rule by rule: the first syntax error of every broken rule is reported, and the good rules still
reach the checker, so one ``rules check`` shows all that is wrong, at the cost of re-parsing one
batch per broken rule, never the whole file.

Limits are checked before Lark sees the text (``check_limits``), because Lark's cost grows with
the input and a hostile file should be refused cheaply: the file size, the number of tokens, the
number of rules, and the nesting of brackets. Expression depth and list length are measured again
on the tree (ast.py), where operator chains count. Bidirectional controls in comments and strings
get a warning.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources

import lark
from lark.exceptions import LarkError, UnexpectedCharacters, UnexpectedInput, UnexpectedToken

from .ast import Builder, Rule
from .collector import gc_paused
from .diagnostics import Diagnostic, Span
from .text import BIDI_CONTROLS, Lines, normalize_newlines


@dataclass(frozen=True, slots=True)
class Limits:
    """Limits on what one rule file may hold, each reported with its own diagnostic.

    - ``max_bytes``: 2 MiB of UTF-8; comments and titles may use it, rules run into
      ``max_tokens`` first.
    - ``max_tokens``: 80,000 words, numbers, strings and symbols (comments do not count).
      Checking costs per token (~12 µs each: Lark's lexer and LALR loop with the AST built as it
      reduces, then the checker), so this, not the size, bounds the time and memory of the worst
      legal file: ~1 s of CPU and under 30 MB on the development machine (bench/dsl_limits.py),
      so a loaded machine stays under 2 s. That is ~3,000 rules of a realistic size (a title,
      three clauses, a retrain with cooldown: ~26 tokens), or 10,000 short ones.
    - ``max_rules``: 10,000. The index keeps matching cost flat far beyond that, but compiling
      takes ~0.5 ms per rule, so 10,000 rules is already seconds of work per apply.
    - ``max_list``: items in one ``in [...]`` list; a longer list belongs in a label, not a rule.
    - ``max_depth``: 64 levels of expression nesting (brackets, or operator nodes). Real rules
      use fewer than 10; the limit keeps every recursive pass after parsing (checker, compiler,
      interpreter) and the generated Python far from their own recursion limits.
    """

    max_bytes: int = 2 * 1024 * 1024
    max_tokens: int = 80_000
    max_rules: int = 10_000
    max_list: int = 1_000
    max_depth: int = 64


DEFAULT_LIMITS = Limits()

# A string (unrolled: no backtracking state per character) or a comment.
STRING_OR_COMMENT = r'"[^"\\\n]*(?:\\.[^"\\\n]*)*"|#[^\n]*'
# A line whose first word is `rule`: where a rule starts (used to cut a file into rules).
_RULE_START = re.compile(r"^[ \t]*rule\b", re.MULTILINE)
# Strings and comments are skipped when counting brackets: "(" inside them does not nest.
_BRACKETS = re.compile(STRING_OR_COMMENT + r"|[()\[\]]")
# Tokens as the lexer sees them, closely enough to count them (comments are group 1: not counted).
_TOKENS = re.compile(
    r'"[^"\\\n]*(?:\\.[^"\\\n]*)*"|(#[^\n]*)|[A-Za-z_][A-Za-z0-9_]*|[0-9][0-9A-Za-z_.%]*|[=!<>]=|\S'
)
_STRING_OR_COMMENT = re.compile(STRING_OR_COMMENT)
# Rules parsed together in one Lark call (up to this many, or this many characters, whichever
# comes first): a batch with a syntax error is parsed again rule by rule, so a broken rule costs
# a re-parse of its batch only, and only one batch's parse trees are alive at a time.
_BATCH_RULES = 64
_BATCH_CHARS = 16_384


# The one Builder the cached parser calls; each thread's parse sets its own state (Builder.begin).
_BUILDER = Builder()


@lru_cache(maxsize=1)
def _lark() -> lark.Lark:
    grammar = resources.files(__package__).joinpath("grammar.lark").read_text(encoding="utf-8")
    return lark.Lark(
        grammar,
        parser="lalr",
        lexer="basic",  # keywords reserved everywhere: errors point at the misplaced keyword
        transformer=_BUILDER,  # ast nodes built as the parser reduces: no parse tree
        maybe_placeholders=False,
    )


@dataclass(slots=True)
class ParseResult:
    rules: list[Rule] = field(default_factory=list)
    diagnostics: list[Diagnostic] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not any(d.is_error for d in self.diagnostics)


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


def check_limits(source: str, filename: str = "<rules>", limits: Limits = DEFAULT_LIMITS) -> list[Diagnostic]:
    """The size, token and rule-count limits, checked in one cheap pass before any parsing:
    what the RPCs call to refuse a hostile request before it costs anything. [] when within."""
    size = len(source.encode("utf-8", "surrogatepass"))
    if size > limits.max_bytes:
        message = f"rule file is too large: {size} bytes (the limit is {limits.max_bytes})"
        return [Diagnostic.at("error", "limit-size", message, filename, Span.point(1, 1))]
    text = normalize_newlines(source)
    if len(text) > limits.max_tokens:  # a token is at least one character: shorter files pass
        count = 0
        for m in _TOKENS.finditer(text):
            if m.group(1) is None:
                count += 1
                if count > limits.max_tokens:
                    line, column = Lines(text).position(m.start())
                    message = f"too many tokens: more than {limits.max_tokens} words, numbers, strings and symbols"
                    return [Diagnostic.at("error", "limit-tokens", message, filename, Span.point(line, column))]
    starts = [m.end() - 4 for m in _RULE_START.finditer(text)]
    if len(starts) > limits.max_rules:
        line, column = Lines(text).position(starts[limits.max_rules])
        return [_too_many(len(starts), limits, filename, Span.point(line, column, 4))]
    return []


def parse_source(source: str, filename: str, limits: Limits = DEFAULT_LIMITS) -> ParseResult:
    """Parse a whole rule file. Never raises for any input text.

    The file is parsed in batches of rules (cut where a line starts with ``rule``), so the
    parse trees of one batch at a time are alive, and a syntax error costs a re-parse of its
    batch only, rule by rule, reporting the first error of every broken rule."""
    with gc_paused():
        result = ParseResult(diagnostics=check_limits(source, filename, limits))
        if not result.diagnostics:
            _parse_batches(normalize_newlines(source), filename, limits, result)
    return result


def _parse_batches(text: str, filename: str, limits: Limits, result: ParseResult) -> None:
    lines = Lines(text)
    starts = [m.start() for m in _RULE_START.finditer(text)]
    if not starts or starts[0] != 0:
        starts.insert(0, 0)
    bounds = starts + [len(text)]
    first = 0
    while first < len(starts):
        last = first + 1
        while last < len(starts) and last - first < _BATCH_RULES and bounds[last + 1] - bounds[first] <= _BATCH_CHARS:
            last += 1
        if not _parse_piece(text, bounds[first], bounds[last], lines, filename, limits, result, alone=last - first == 1):
            for i in range(first, last):
                _parse_piece(text, bounds[i], bounds[i + 1], lines, filename, limits, result, alone=True)
        first = last
    _check_count(result, limits, filename)
    _bidi_warnings(text, lines, filename, result)


def _parse_piece(
    text: str, begin: int, end: int, lines: Lines, filename: str, limits: Limits, result: ParseResult, alone: bool
) -> bool:
    """Parse ``text[begin:end]`` into ``result``. A piece of several rules that fails adds
    nothing and returns False (the caller retries rule by rule); a piece ``alone`` reports."""
    if begin == end:
        return True
    piece = text[begin:end]
    line_offset = lines.position(begin)[0] - 1
    overflow = _bracket_overflow(piece, limits.max_depth)
    if overflow is not None:
        if not alone:
            return False
        line, column = lines.position(begin + overflow)
        message = f"expression is nested too deeply: brackets deeper than {limits.max_depth} levels"
        result.diagnostics.append(Diagnostic.at("error", "limit-depth", message, filename, Span.point(line, column)))
        return True
    diagnostics = _BUILDER.begin(filename, line_offset, limits.max_depth, limits.max_list)
    try:
        rules = _lark().parse(piece)
    except UnexpectedInput as exc:
        if not alone:
            return False
        result.diagnostics.append(syntax_diagnostic(exc, filename, line_offset))
        return True
    except LarkError as exc:  # not expected from a plain parse; reported, never raised
        if not alone:
            return False
        message = f"parser failure: {exc}"
        result.diagnostics.append(Diagnostic.at("error", "internal", message, filename, Span.point(line_offset + 1, 1)))
        return True
    result.rules.extend(rules)
    result.diagnostics.extend(diagnostics)
    return True


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


def _bidi_warnings(text: str, lines: Lines, filename: str, result: ParseResult) -> None:
    """Warn at each bidirectional control in a comment or string (elsewhere the lexer already
    refuses it): it can make the rule display differently from what it does."""
    if not BIDI_CONTROLS.search(text):
        return
    for m in _STRING_OR_COMMENT.finditer(text):
        where = "comment" if m.group().startswith("#") else "string"
        for b in BIDI_CONTROLS.finditer(m.group()):
            line, column = lines.position(m.start() + b.start())
            message = (
                f"bidirectional control character U+{ord(b.group()):04X} in a {where}: the text may "
                "display in another order than it is read"
            )
            result.diagnostics.append(Diagnostic.at("warning", "bidi", message, filename, Span.point(line, column)))


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
