"""Diagnostics: what every pass of the rule language reports instead of raising.

A diagnostic carries a span (1-based line and column; ``end_column`` is exclusive, like Lark's
tokens) so that the CLI, the gRPC API and the tests all point at the same characters.
``render`` gives the compiler-style form users expect::

    rules/prod.rules:3:17: error: cannot compare duration with number
        when model.age > 30
                         ^~
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Literal, Mapping

from .text import lines_of

Severity = Literal["error", "warning"]


@dataclass(frozen=True, slots=True)
class Span:
    """A range of source text. Columns are 1-based; ``end_column`` points one past the last
    character, so a one-character token at column 5 has ``end_column == 6``."""

    line: int
    column: int
    end_line: int
    end_column: int

    @classmethod
    def point(cls, line: int, column: int, width: int = 1) -> "Span":
        return cls(line, column, line, column + max(1, width))

    def shifted(self, lines: int) -> "Span":
        """The same span ``lines`` further down (rules parsed one chunk at a time)."""
        return Span(self.line + lines, self.column, self.end_line + lines, self.end_column)

    def start(self) -> "Span":
        """Only the first character: for spans too long to underline usefully."""
        return Span(self.line, self.column, self.line, self.column + 1)


@dataclass(frozen=True, slots=True)
class Diagnostic:
    severity: Severity
    message: str
    filename: str
    line: int
    column: int
    end_line: int
    end_column: int
    code: str

    @classmethod
    def at(cls, severity: Severity, code: str, message: str, filename: str, span: Span) -> "Diagnostic":
        return cls(severity, message, filename, span.line, span.column, span.end_line, span.end_column, code)

    @property
    def is_error(self) -> bool:
        return self.severity == "error"

    def header(self) -> str:
        return f"{self.filename}:{self.line}:{self.column}: {self.severity}: {self.message}"

    def __str__(self) -> str:
        return self.header()

    def render(self, source: str | None) -> str:
        """``file:line:column: severity: message``, then the source line and a caret line.

        The caret line copies the tabs of the source line so the marks stay aligned in any
        terminal. A span running past its first line is underlined to the end of that line.
        A line longer than ``SNIPPET_WIDTH`` is cut around the column, marked with "...".
        """
        head = self.header()
        if not source:
            return head
        lines = lines_of(source)
        if not 1 <= self.line <= len(lines):
            return head
        text = lines.line(self.line)
        start = min(max(self.column - 1, 0), len(text))
        if self.end_line == self.line:
            stop = max(self.end_column - 1, start + 1)
        else:
            stop = max(len(text), start + 1)
        stop = min(stop, max(len(text), start + 1))
        if len(text) > SNIPPET_WIDTH:  # show the part around the column, as compilers do
            first = max(0, start - SNIPPET_WIDTH // 2)
            last = min(len(text), first + SNIPPET_WIDTH)
            lead = "..." if first > 0 else ""
            tail = "..." if last < len(text) else ""
            shift = first - len(lead)
            text, start, stop = lead + text[first:last] + tail, start - shift, min(stop, last) - shift
        pad = "".join("\t" if ch == "\t" else " " for ch in text[:start])
        marks = "^" + "~" * max(stop - start - 1, 0)
        return f"{head}\n    {text}\n    {pad}{marks}"


SNIPPET_WIDTH = 120  # characters of a long source line shown around the column


def sort_key(diag: Diagnostic) -> tuple[int, int, int, str]:
    """File order; on the same spot, errors before warnings."""
    return (diag.line, diag.column, 0 if diag.is_error else 1, diag.message)


def render_all(diagnostics: Iterable[Diagnostic], source: str | Mapping[str, str] | None) -> str:
    """Every diagnostic rendered; ``source`` is the text of their file, or a mapping from
    file name to text when they come from several files (a folder of rules)."""
    if isinstance(source, Mapping):
        return "\n".join(d.render(source.get(d.filename)) for d in diagnostics)
    return "\n".join(d.render(source) for d in diagnostics)


class RuleCompileError(Exception):
    """Raised by ``compile_rules``/``format_source`` when a rule file has errors.

    ``diagnostics`` holds every diagnostic of the file (warnings too), sorted by position, so a
    caller can show all of them at once. ``source`` is the file's text (or, for a folder, a
    mapping from file name to text) that ``render`` shows the lines of.
    """

    def __init__(self, diagnostics: list[Diagnostic], source: str | Mapping[str, str] | None = None):
        self.diagnostics = list(diagnostics)
        self.source = source
        errors = [d for d in self.diagnostics if d.is_error]
        first = errors[0] if errors else (self.diagnostics[0] if self.diagnostics else None)
        more = f" (and {len(errors) - 1} more errors)" if len(errors) > 1 else ""
        super().__init__(f"{first}{more}" if first else "rule file does not compile")

    @property
    def errors(self) -> list[Diagnostic]:
        return [d for d in self.diagnostics if d.is_error]

    def render(self) -> str:
        return render_all(self.diagnostics, self.source)
