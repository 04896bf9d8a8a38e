"""Rule source as HTML: syntax highlighting and the diff between two stored versions.

The highlighter is a regex scan with the token shapes of dsl/grammar.lark (comments, strings,
numbers and durations, keywords, names, operators); it only colours, so text it does not recognise
is shown as it is. Every piece of text is escaped: rule files are operator input, and their comments
and strings can hold anything.
"""

from __future__ import annotations

import difflib
import re

from markupsafe import Markup, escape

KEYWORDS = frozenset({"rule", "when", "then", "and", "or", "not", "in", "true", "false"})
# One alternation, tried in order at each position; the last group takes any other character.
_TOKEN = re.compile(r"""
    (?P<comment>\#[^\n]*)
  | (?P<string>"[^"\\\n]*(?:\\.[^"\\\n]*)*")
  | (?P<number>[0-9](?:[eE][+-]?[0-9]|[0-9A-Za-z_.])*%?)
  | (?P<name>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<op>==|!=|<=|>=|[<>+\-*/])
  | (?P<other>[^\#"0-9A-Za-z_=!<>+\-*/]+|.)
""", re.VERBOSE | re.DOTALL)


def highlight(source: str) -> Markup:
    """The source as HTML spans (classes tok-comment, tok-string, tok-number, tok-keyword, tok-op)."""
    out = []
    for m in _TOKEN.finditer(source):
        kind, text = m.lastgroup, m.group()
        if kind == "name" and text in KEYWORDS:
            kind = "keyword"
        if kind in ("other", "name"):
            out.append(str(escape(text)))
        else:
            out.append(f'<span class="tok-{kind}">{escape(text)}</span>')
    return Markup("".join(out))


def diff_lines(old: str, new: str, old_name: str, new_name: str) -> list[tuple[str, str]]:
    """(kind, line) for a unified diff: kind is add, del, hunk, file or same."""
    out = []
    for line in difflib.unified_diff(old.splitlines(), new.splitlines(), old_name, new_name, lineterm=""):
        if line.startswith(("+++", "---")):
            kind = "file"
        elif line.startswith("@@"):
            kind = "hunk"
        elif line.startswith("+"):
            kind = "add"
        elif line.startswith("-"):
            kind = "del"
        else:
            kind = "same"
        out.append((kind, line))
    return out
