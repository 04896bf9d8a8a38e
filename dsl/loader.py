"""Reading rules from disk exactly as the server runs them: one file, or a folder of files.

``serve --rules PATH`` and ``closedloop rules check PATH`` both go through here, so they cannot
disagree. A folder means its ``*.rules`` files in name order, joined into one source (each
preceded by a ``# --- NAME`` comment line) that the server compiles and stores. Each file is
checked on its own first, so a diagnostic points at its own file and line; then what only the
whole set can break is checked (the same rule name in two files, the limits of the joined text)
and reported at the real files and lines too, never at a line of the joined text.

Files are UTF-8; a leading byte-order mark is dropped, and bytes that are not UTF-8 are a
diagnostic at their line and column.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from pathlib import Path

from .diagnostics import Diagnostic, RuleCompileError, Span, sort_key
from .parser import DEFAULT_LIMITS, Limits, check_limits
from .ruleset import CheckResult, CompiledRuleSet, check, compile_rules
from .text import decode_source, lines_of

PATTERN = "*.rules"


@dataclass(frozen=True, slots=True)
class RuleFile:
    filename: str
    text: str
    first_line: int  # where the text starts in the joined source (1 for a single file)


@dataclass(slots=True)
class RuleTree:
    """The rule files named by one path, in load order, and the problems reading them."""

    path: str
    is_folder: bool
    files: list[RuleFile] = field(default_factory=list)
    diagnostics: list[Diagnostic] = field(default_factory=list)  # unreadable files, bad UTF-8
    source: str = ""  # what the server compiles: the file, or the folder's files joined

    @property
    def filename(self) -> str:
        return self.path

    @property
    def sources(self) -> dict[str, str]:
        """File name -> text, for rendering diagnostics of several files."""
        return {f.filename: f.text for f in self.files}

    def locate(self, line: int) -> tuple[str, int]:
        """The file and line of a line of the joined source (a header line: the file's first)."""
        starts = [f.first_line for f in self.files]
        i = max(bisect.bisect_right(starts, line) - 1, 0)
        return self.files[i].filename, max(line - self.files[i].first_line + 1, 1)


def read_source(path: Path) -> tuple[str | None, Diagnostic | None]:
    """The text of one file, or a one-line diagnostic (with the position, for bad UTF-8)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        message = f"cannot read: {exc.strerror or exc}"
        return None, Diagnostic.at("error", "read", message, str(path), Span.point(1, 1))
    text, error = decode_source(data)
    if error is not None:
        return None, Diagnostic.at("error", "encoding", error.message, str(path), Span.point(error.line, error.column))
    return text, None


def read_rule_tree(path: str | Path) -> RuleTree:
    """Read a rule file or folder. Raises FileNotFoundError for a path that does not exist or a
    folder without rule files; problems with the files themselves are diagnostics."""
    path = Path(path)
    if path.is_dir():
        names = sorted(f for f in path.glob(PATTERN) if f.is_file())
        if not names:
            raise FileNotFoundError(f"{path}: no {PATTERN} files in this folder")
    elif path.exists():
        names = [path]
    else:
        raise FileNotFoundError(f"{path}: no such file or folder")
    tree = RuleTree(str(path), path.is_dir())
    parts, line = [], 1
    for name in names:
        text, problem = read_source(name)
        if problem is not None:
            tree.diagnostics.append(problem)
            continue
        if tree.is_folder:
            header = f"# --- {name.name}\n"
            parts.append(header + text)
            line += 1
        else:
            parts.append(text)
        tree.files.append(RuleFile(str(name), text, line))
        # the join adds one "\n" after each file: the next file starts on the line after it
        line += len(lines_of(text + "\n")) if text else 1
    tree.source = "\n".join(parts)
    return tree


def check_rule_tree(tree: RuleTree, limits: Limits = DEFAULT_LIMITS, *,
                    targets: frozenset[str] | None = None) -> CheckResult:
    """Every diagnostic of the tree, at real files and lines, and its error-free rules: what
    loading it would report. Never raises."""
    out = CheckResult(list(tree.diagnostics))
    first_seen: dict[str, tuple[str, Span]] = {}
    located: list[tuple[str, Span]] = []  # every rule's name, in load order
    for f in tree.files:
        result = check(f.text, f.filename, limits=limits, targets=targets)
        out.diagnostics += result.diagnostics
        out.defined += result.defined
        duplicates = set()
        for name, span in result.defined:
            located.append((f.filename, span))
            other, other_span = first_seen.setdefault(name, (f.filename, span))
            if other == f.filename:
                continue  # the first definition, or a duplicate the checker reported in its file
            duplicates.add(name)
            here, there = f"{f.filename}:{span.line}:{span.column}", f"{other}:{other_span.line}:{other_span.column}"
            message = f"duplicate rule name '{name}' (first defined at {there})"
            out.diagnostics.append(Diagnostic.at("error", "duplicate-rule", message, f.filename, span))
            message = f"rule '{name}' is defined again at {here}"
            out.diagnostics.append(Diagnostic.at("error", "duplicate-rule", message, other, other_span))
        out.rules += [r for r in result.rules if r.name not in duplicates]
    if tree.is_folder and out.ok:
        # The server compiles the joined text: its limits hold for the files together.
        for d in check_limits(tree.source, tree.filename, limits):
            filename, line = tree.locate(d.line)
            message = f"{d.message}, counting all files of {tree.path}"
            out.diagnostics.append(Diagnostic.at("error", d.code, message, filename, Span.point(line, d.column)))
        if out.ok and len(located) > limits.max_rules:  # rules not starting a line escape check_limits
            filename, span = located[limits.max_rules]
            message = f"too many rules: {len(located)} (the limit is {limits.max_rules})"
            message += f", counting all files of {tree.path}"
            out.diagnostics.append(Diagnostic.at("error", "limit-rules", message, filename, span))
    order = {f.filename: i for i, f in enumerate(tree.files)}
    out.diagnostics.sort(key=lambda d: (order.get(d.filename, -1), *sort_key(d)))
    return out


def load_rule_tree(path: str | Path, limits: Limits = DEFAULT_LIMITS, *,
                   targets: frozenset[str] | None = None) -> CompiledRuleSet:
    """Compile a rule file or folder as the server runs it. Raises FileNotFoundError (see
    ``read_rule_tree``) or RuleCompileError with diagnostics at real files and lines."""
    tree = read_rule_tree(path)
    if not tree.is_folder and not tree.diagnostics:
        return compile_rules(tree.source, tree.filename, limits=limits, targets=targets)  # real positions
    result = check_rule_tree(tree, limits, targets=targets)
    if not result.ok:
        raise RuleCompileError(result.diagnostics, tree.sources)
    return compile_rules(tree.source, tree.filename, limits=limits, targets=targets)
