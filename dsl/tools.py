"""`closedloop rules check|fmt|test|explain` as plain functions; the CLI wires them to argparse.

Each takes paths and the text stream to write to (the CLI passes stdout, and owns what happens
when that pipe closes) and returns the exit status: 0 when all is well, 1 when a file has errors
(or would be reformatted, or a test failed). A problem with any file read is one line naming the
file and, when there is one, the line and column; never a traceback.

``check`` loads each path exactly as ``serve --rules PATH`` would (loader.py): a folder is its
``*.rules`` files together. ``fmt`` works file by file; for ``test`` a folder means its ``*.toml``
files, sorted by name.
"""

from __future__ import annotations

from pathlib import Path
from typing import TextIO

from . import load_default_rules
from .diagnostics import RuleCompileError, render_all
from .formatter import format_source
from .loader import check_rule_tree, load_rule_tree, read_rule_tree, read_source
from .ruleset import CompiledRuleSet, compile_rules
from .ruletest import (
    FactsError,
    alert_from_mapping,
    compare,
    describe_match,
    load_test_file,
    model_from_mapping,
    read_data,
)


def expand(paths: list[str], pattern: str = "*.rules") -> tuple[list[Path], list[str]]:
    """Files named by ``paths`` (folders expanded), and problems with paths that do not exist."""
    files, problems = [], []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(f for f in p.glob(pattern) if f.is_file())
            if not found:
                problems.append(f"{p}: no {pattern} files in this folder")
            files += found
        elif p.is_file():
            files.append(p)
        else:
            problems.append(f"{p}: no such file or folder")
    return files, problems


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def cmd_check(paths: list[str], out: TextIO) -> int:
    """Report every diagnostic of every path, loaded as the server loads it; 1 on any error."""
    errors = warnings = rules = files = 0
    failed = False
    for path in paths:
        try:
            tree = read_rule_tree(path)
        except OSError as exc:
            out.write(f"{exc}\n")
            failed = True
            continue
        result = check_rule_tree(tree)
        if result.diagnostics:
            out.write(render_all(result.diagnostics, tree.sources) + "\n")
        files += len(tree.files) + sum(d.code in ("read", "encoding") for d in tree.diagnostics)
        errors += sum(d.is_error for d in result.diagnostics)
        warnings += sum(not d.is_error for d in result.diagnostics)
        rules += len(result.rules)
    failed = failed or errors > 0
    verdict = "FAILED" if failed else "ok"
    out.write(
        f"{verdict}: {_plural(files, 'file')}, {_plural(rules, 'valid rule')}, "
        f"{_plural(errors, 'error')}, {_plural(warnings, 'warning')}\n"
    )
    return 1 if failed else 0


def cmd_fmt(paths: list[str], write: bool, check: bool, out: TextIO) -> int:
    """Print the canonical form (default), rewrite files in place (``write``), or only report
    files that are not canonical (``check``, exit 1 if any)."""
    files, problems = expand(paths)
    for problem in problems:
        out.write(problem + "\n")
    status = 1 if problems else 0
    for path in files:
        source, problem = read_source(path)
        if problem is not None:
            out.write(problem.header() + "\n")
            status = 1
            continue
        try:
            formatted = format_source(source, str(path))
        except RuleCompileError as exc:
            out.write(exc.render() + "\n")
            status = 1
            continue
        if check:
            if formatted != source:
                out.write(f"would reformat {path}\n")
                status = 1
        elif write:
            if formatted != source:
                path.write_text(formatted, encoding="utf-8")
                out.write(f"reformatted {path}\n")
        else:
            out.write(formatted)
    return status


def _load_rules(target: Path | str, out: TextIO, cache: dict) -> CompiledRuleSet | None:
    key = str(target)
    if key not in cache:
        compiled = None
        try:
            if target == "default":
                compiled = compile_rules(*load_default_rules())
            else:
                compiled = load_rule_tree(target)
        except OSError as exc:
            out.write(f"{exc}\n")
        except RuleCompileError as exc:
            out.write(exc.render() + "\n")
        cache[key] = compiled
    return cache[key]


def cmd_test(paths: list[str], out: TextIO) -> int:
    """Run rule unit tests; print each failure with expected and got; 1 if any failed."""
    files, problems = expand(paths, "*.toml")
    for problem in problems:
        out.write(problem + "\n")
    passed = failed = 0
    broken = bool(problems)
    cache: dict = {}
    for path in files:
        try:
            test_file = load_test_file(path)
        except FactsError as exc:
            out.write(exc.where(path) + "\n")
            broken = True
            continue
        except OSError as exc:
            out.write(f"{path}: error: cannot read: {exc.strerror or exc}\n")
            broken = True
            continue
        rule_sets = [_load_rules(r, out, cache) for r in test_file.rules]
        if any(rs is None for rs in rule_sets):
            out.write(f"{path}: the rules under test do not load\n")
            broken = True
            continue
        for case in test_file.tests:
            matches = [m for rs in rule_sets for m in rs.match(case.alert, case.model)]
            if compare(case.expect, matches):
                passed += 1
                continue
            failed += 1
            out.write(f"FAIL {path}: {case.name}\n")
            out.write("  expected: " + ("; ".join(case.expect) or "(no rule matches)") + "\n")
            out.write("  got:      " + ("; ".join(describe_match(m) for m in matches) or "(no rule matched)") + "\n")
    out.write(f"{_plural(passed + failed, 'test')}: {passed} passed, {failed} failed\n")
    return 1 if failed or broken else 0


def _mark(value: bool | None) -> str:
    return {True: "true", False: "false", None: "missing"}[value]


def cmd_explain(rules_path: str, alert_json_path: str, out: TextIO) -> int:
    """Per rule and per clause of RULES: true, false or missing for the alert in ALERT.json,
    and the actions that result. The JSON holds the alert's fields, and optionally ``"model":
    {...}`` with the model's facts (or ``{"alert": {...}, "model": {...}}``)."""
    rule_set = _load_rules(rules_path if rules_path == "default" else Path(rules_path), out, {})
    if rule_set is None:
        return 1
    try:
        data = read_data(Path(alert_json_path).read_bytes(), "json")
        if not isinstance(data, dict):
            raise FactsError("expected a JSON object")
        alert_data = data.get("alert", {k: v for k, v in data.items() if k != "model"})
        alert = alert_from_mapping(alert_data)
        model = model_from_mapping(data.get("model"))
    except FactsError as exc:
        out.write(exc.where(alert_json_path) + "\n")
        return 1
    except OSError as exc:
        out.write(f"{alert_json_path}: error: cannot read: {exc.strerror or exc}\n")
        return 1
    actions = []
    for exp in rule_set.explain(alert, model):
        verdict = {True: "MATCH", False: "no match", None: "no match (missing values)"}[exp.matched]
        out.write(f"{exp.rule}: {verdict}\n")
        for text, value in exp.clauses:
            out.write(f"  {_mark(value):8} {text}\n")
        for action in exp.actions:
            out.write(f"  -> {action.describe()}\n")
            actions.append(f"{exp.rule}: {action.describe()}")
    out.write("actions: " + ("; ".join(actions) if actions else "none") + "\n")
    return 0
