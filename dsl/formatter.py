"""Canonical text of rules: `closedloop rules fmt`, and the condition text in RuleInfo/explain.

The formatter prints the syntax tree, never the source, so its output depends only on the tree
(and the comments): fmt(fmt(x)) == fmt(x) holds by construction, and since the printed text
parses back to the same tree, formatting cannot change what a rule means. Parentheses are
printed where precedence needs them, plus around an ``and`` inside an ``or`` (legal without,
but people misread it), and around a comparison under ``not``.

Layout::

    # comments above the rule stay above it
    rule name "title":
        when a and b            # one line while it fits in 88 columns, else one term per line
        then action, action

Comments are kept. A comment inside a rule (e.g. at the end of its ``then`` line) moves to the
block of comments just above the rule: the tree does not say where inside a rule it belonged.
"""

from __future__ import annotations

import re

from . import ast
from .diagnostics import Diagnostic, RuleCompileError, Span
from .collector import gc_paused
from .parser import DEFAULT_LIMITS, STRING_OR_COMMENT, Limits, check_limits, parse_source
from .schema import decode_string, is_plain_key, quote_string
from .text import normalize_newlines

MAX_WIDTH = 88
INDENT = "    "

# precedence: or < and < not < comparison < + - < * / < unary minus < atoms
_OR, _AND, _NOT, _CMP, _SUM, _PRODUCT, _UNARY, _ATOM = range(1, 9)
# Terms of and/or are printed at `not` level: an `or` inside an `and` needs its parentheses, and
# an `and` inside an `or` gets them too: `(a and b) or c` reads unambiguously.
_TERM = _NOT


def _prec(e: ast.Expr) -> int:
    if isinstance(e, ast.BoolOp):
        return _OR if e.op == "or" else _AND
    if isinstance(e, ast.Not):
        return _NOT
    if isinstance(e, (ast.Compare, ast.InList)):
        return _CMP
    if isinstance(e, ast.BinOp):
        return _SUM if e.op in "+-" else _PRODUCT
    if isinstance(e, ast.Neg):
        return _UNARY
    return _ATOM


def expr_text(e: ast.Expr, ctx: int = 0) -> str:
    """Canonical one-line text of an expression, parenthesised when its context needs it."""
    text = _bare(e)
    return f"({text})" if _prec(e) < ctx else text


def _bare(e: ast.Expr) -> str:
    if isinstance(e, ast.BoolOp):
        return f" {e.op} ".join(expr_text(t, _TERM) for t in e.terms)
    if isinstance(e, ast.Not):
        inner = e.operand
        if isinstance(inner, (ast.Compare, ast.InList, ast.BoolOp)):
            return f"not ({_bare(inner)})"
        return "not " + expr_text(inner, _NOT)
    if isinstance(e, ast.Compare):
        return f"{expr_text(e.left, _SUM)} {e.op} {expr_text(e.right, _SUM)}"
    if isinstance(e, ast.InList):
        items = ", ".join(expr_text(i, _OR) for i in e.items)
        keyword = "not in" if e.negated else "in"
        return f"{expr_text(e.operand, _SUM)} {keyword} [{items}]"
    if isinstance(e, ast.BinOp):
        level = _SUM if e.op in "+-" else _PRODUCT
        # the right operand of the same level keeps its parentheses: a - (b - c)
        return f"{expr_text(e.left, level)} {e.op} {expr_text(e.right, level + 1)}"
    if isinstance(e, ast.Neg):
        return "-" + expr_text(e.operand, _ATOM if isinstance(e.operand, ast.Neg) else _UNARY)
    if isinstance(e, ast.Call):
        return f"{e.func}({', '.join(expr_text(a, _OR) for a in e.args)})"
    if isinstance(e, ast.Name):
        return name_text(e)
    if isinstance(e, ast.NumLit):
        return e.text
    if isinstance(e, ast.StrLit):
        return e.text if e.error else quote_string(e.value)
    if isinstance(e, ast.BoolLit):
        return "true" if e.value else "false"
    raise TypeError(f"not an expression: {e!r}")


def name_text(e: ast.Name) -> str:
    if e.bracket:
        head, key = e.parts
        if not e.error and is_plain_key(key):
            return f"{head}.{key}"
        return f"{head}[{quote_string(key)}]"
    return e.dotted


def action_text(a: ast.Action) -> str:
    words = [a.name]
    for w in a.words:
        if w.kind == "string":
            value, error, _ = decode_string(w.text)
            words.append(w.text if error else quote_string(value))
        else:
            words.append(w.text)
    return " ".join(words)


def rule_lines(rule: ast.Rule) -> list[str]:
    header = f"rule {rule.name}"
    if rule.title is not None:
        title = rule.title
        header += " " + (title.text if title.error else quote_string(title.value))
    lines = [header + ":"]
    cond = rule.condition
    assert cond is not None, "format only rules that parsed"
    one_line = f"{INDENT}when {expr_text(cond)}"
    if len(one_line) > MAX_WIDTH and isinstance(cond, ast.BoolOp):
        ctx = _TERM
        lines.append(f"{INDENT}when {expr_text(cond.terms[0], ctx)}")
        lines += [f"{INDENT * 2}{cond.op} {expr_text(t, ctx)}" for t in cond.terms[1:]]
    else:
        lines.append(one_line)
    lines.append(f"{INDENT}then " + ", ".join(action_text(a) for a in rule.actions))
    return lines


_COMMENT_OR_STRING = re.compile(STRING_OR_COMMENT)


def _comments(source: str) -> list[tuple[int, str]]:
    """(line, text) of every comment; strings are skipped so a "#" inside one is not a comment.
    ``source`` has its line breaks normalized, as the parser saw it."""
    out = []
    line, last = 1, 0
    for m in _COMMENT_OR_STRING.finditer(source):
        if m.group().startswith("#"):
            line += source.count("\n", last, m.start())
            last = m.start()
            out.append((line, m.group().rstrip()))
    return out


def format_rules(rules: list[ast.Rule], source: str) -> str:
    comments = _comments(normalize_newlines(source))
    out: list[str] = []
    ci = 0

    def block(items: list[tuple[int, str]], adjacent_from: int) -> None:
        # Comments keep one blank line where the source had one or more, except those moved
        # out of a rule (index >= adjacent_from), which join the block without a gap.
        prev = None
        for k, (line, text) in enumerate(items):
            if prev is not None and k < adjacent_from and line - prev > 1:
                out.append("")
            out.append(text)
            prev = line

    for rule in sorted(rules, key=lambda r: r.span.line):
        leading, inner = [], []
        while ci < len(comments) and comments[ci][0] <= rule.span.end_line:
            (inner if comments[ci][0] >= rule.span.line else leading).append(comments[ci])
            ci += 1
        if out:
            out.append("")
        if leading or inner:
            block(leading + inner, len(leading))
            if not inner and rule.span.line - leading[-1][0] > 1:
                out.append("")
        out += rule_lines(rule)
    if ci < len(comments):
        if out:
            out.append("")
        block(comments[ci:], len(comments))
    return "\n".join(out) + "\n" if out else ""


def format_source(source: str, filename: str = "<rules>", limits: Limits = DEFAULT_LIMITS) -> str:
    """The canonical text of a rule file. Raises RuleCompileError when it does not parse
    (type errors do not stop formatting: `fmt` is useful on a file still being written), and
    when the canonical text would break a limit the source kept (it could grow past the size
    limit by indentation): fmt never writes a file that `check` refuses."""
    with gc_paused():
        parsed = parse_source(source, filename, limits)
        if not parsed.ok:
            raise RuleCompileError(parsed.diagnostics, source)
        formatted = format_rules(parsed.rules, source)
        over = check_limits(formatted, filename, limits)
    if over:
        message = f"the formatted file would break a limit, so it is not written: {over[0].message}"
        raise RuleCompileError([Diagnostic.at("error", over[0].code, message, filename, Span.point(1, 1))], source)
    return formatted
