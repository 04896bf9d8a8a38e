"""Rule unit tests (`closedloop rules test`), and reading alerts and model facts from plain data.

A test file is TOML (read with the standard library's tomllib, so no extra dependency)::

    # tests/rules/default_test.toml
    rules = "default"               # the bundled rules; or a path relative to this file, or a list

    [[tests]]
    name = "drift above 0.25 retrains fully"
    alert = { type = "drift", model_id = "m1", severity = "high", metrics = { drift_score = 0.3 } }
    model = { version = 3, age = "40d" }    # omit: the model is unregistered
    expect = ["drift_auto_retrain: retrain full priority high cooldown 24h"]

    [[tests]]
    name = "a low-severity performance alert triggers nothing"
    alert = { type = "performance", severity = "low", metrics = { performance_drop = 0.5 } }
    expect = []

``expect`` lists the rules that must match, each ``"RULE"`` (any actions) or ``"RULE: ACTION,
ACTION"`` with the actions in canonical form; the order does not matter and no other rule may
match. Like promtool, a failure shows what was expected and what the rules did.

Alert fields: type (required), model_id, severity (low/medium/high/critical or 1-4), metrics,
labels, source, age (a duration such as "2h", or seconds). Model facts: registered, enabled,
version, age, last_retrained. Unknown keys are errors, so a typo cannot pass silently. Numbers
must be finite and within a float's range, as the server's AlertService requires.

Input files (TOML tests, JSON alerts) are read with ``read_data``: bad UTF-8, bad syntax and
absurd nesting are a FactsError with the line and column, never a traceback.
"""

from __future__ import annotations

import json
import math
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from .facts import AlertFacts, ModelFacts, RuleMatch
from .schema import LEVELS, format_duration, parse_numeric
from .text import Lines, decode_source


class FactsError(ValueError):
    """Bad alert/model data in a test file or an explain input; ``line``/``column`` when the
    place in the file is known."""

    def __init__(self, message: str, line: int | None = None, column: int | None = None):
        super().__init__(message)
        self.line, self.column = line, column

    def where(self, path: object) -> str:
        """``path:line:column: error: message`` (or without the position when unknown)."""
        at = f"{path}:{self.line}:{self.column}" if self.line is not None else f"{path}"
        return f"{at}: error: {self}"


# Alerts and test files nest three levels or so; far deeper input is refused before a parser
# recurses into it (json and tomllib recurse per level).
MAX_NESTING = 32
_NESTING = re.compile(r'"[^"\\\n]*(?:\\.[^"\\\n]*)*"|\'[^\'\n]*\'|#[^\n]*|[\[\]{}]')
_TOML_AT = re.compile(r"\(at line (\d+), column (\d+)\)$")
_BIG_INT_DIGITS = 300  # longer JSON integers are read as floats (and found out of range)


def read_data(data: bytes, kind: str) -> Any:
    """Parse the bytes of a JSON (``kind == "json"``) or TOML file. Raises FactsError."""
    text, error = decode_source(data)
    if error is not None:
        raise FactsError(error.message, error.line, error.column)
    depth = 0
    for m in _NESTING.finditer(text):
        ch = m.group()
        if ch in "[{":
            depth += 1
            if depth > MAX_NESTING:
                line, column = Lines(text).position(m.start())
                raise FactsError(f"nested more than {MAX_NESTING} levels deep", line, column)
        elif ch in "]}":
            depth -= 1
    try:
        if kind == "json":
            return json.loads(text, parse_int=lambda s: int(s) if len(s) <= _BIG_INT_DIGITS else float(s))
        return tomllib.loads(text)
    except json.JSONDecodeError as exc:
        raise FactsError(f"not valid JSON: {exc.msg}", exc.lineno, exc.colno) from None
    except tomllib.TOMLDecodeError as exc:
        m = _TOML_AT.search(str(exc))
        message = _TOML_AT.sub("", str(exc)).strip()
        raise FactsError(f"not valid TOML: {message}", *(map(int, m.groups()) if m else ())) from None
    except RecursionError:
        raise FactsError(f"nested too deeply (more than {MAX_NESTING} levels)") from None
    except ValueError as exc:  # e.g. an integer of more than 4300 digits in TOML
        raise FactsError(f"not valid {kind.upper()}: {exc}") from None


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:20]}...({len(text)} characters)"


def _number(value: Any, what: str) -> float:
    """A finite float, refused as the server refuses it (NaN, infinities, out of range)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise FactsError(f"{what}: expected a number, got {_short(value)}")
    try:
        number = float(value)
    except OverflowError:
        number = math.inf
    if not math.isfinite(number):
        raise FactsError(f"{what}: must be a finite number, got {_short(value)}")
    return number


def _duration(value: Any, what: str) -> float:
    if isinstance(value, bool):
        raise FactsError(f"{what}: expected a duration such as \"2h\" or a number of seconds, got {value!r}")
    if isinstance(value, (int, float)):
        return _number(value, what)
    if isinstance(value, str):
        lit = parse_numeric(value.strip())
        if lit.kind == "duration" or (lit.kind == "number"):
            return lit.value
        raise FactsError(f"{what}: {lit.error or 'expected a duration such as 2h'}")
    raise FactsError(f"{what}: expected a duration such as \"2h\" or a number of seconds, got {value!r}")


def _severity(value: Any) -> int:
    if isinstance(value, str):
        name = value.strip().lower().removeprefix("severity_")
        if name in LEVELS:
            return LEVELS[name]
    elif isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 4:
        return value
    raise FactsError(f"severity: expected low, medium, high or critical, got {value!r}")


def _check_keys(data: Mapping, allowed: set[str], what: str) -> None:
    if not isinstance(data, Mapping):
        raise FactsError(f"{what}: expected a table/object, got {type(data).__name__}")
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise FactsError(f"unknown {what} field '{unknown[0]}' (known: {', '.join(sorted(allowed))})")


_ALERT_KEYS = {"type", "model_id", "severity", "metrics", "labels", "source", "age", "age_seconds"}
_MODEL_KEYS = {"registered", "enabled", "version", "age", "last_retrained"}


def alert_from_mapping(data: Mapping) -> AlertFacts:
    _check_keys(data, _ALERT_KEYS, "alert")
    if not isinstance(data.get("type"), str):
        raise FactsError("alert: 'type' is required and must be a string")
    metrics = data.get("metrics", {})
    labels = data.get("labels", {})
    _check_keys(metrics, set(metrics) if isinstance(metrics, Mapping) else set(), "metrics")
    _check_keys(labels, set(labels) if isinstance(labels, Mapping) else set(), "labels")
    values = {str(k): _number(v, f"metrics.{k}") for k, v in metrics.items()}
    age = data.get("age", data.get("age_seconds", 0.0))
    return AlertFacts(
        type=data["type"],
        model_id=str(data.get("model_id", "model")),
        severity=_severity(data.get("severity", "medium")),
        metrics=values,
        labels={str(k): str(v) for k, v in labels.items()},
        source=str(data.get("source", "")),
        age_seconds=_duration(age, "alert age"),
    )


def model_from_mapping(data: Mapping | None) -> ModelFacts | None:
    if data is None:
        return None
    _check_keys(data, _MODEL_KEYS, "model")
    registered = data.get("registered", True)
    if registered is False and len(data) == 1:
        return None  # `model = { registered = false }` is an unregistered model
    version = data.get("version", 1)
    if isinstance(version, bool) or not isinstance(version, int):
        raise FactsError(f"model version: expected an integer, got {version!r}")
    age = data.get("age")
    last = data.get("last_retrained")
    return ModelFacts(
        registered=bool(registered),
        enabled=bool(data.get("enabled", True)),
        version=version,
        age_seconds=None if age is None else _duration(age, "model age"),
        last_retrained_seconds=None if last is None else _duration(last, "model last_retrained"),
    )


def describe_match(m: RuleMatch) -> str:
    return f"{m.rule}: {', '.join(a.describe() for a in m.actions)}"


@dataclass
class TestCase:
    name: str
    alert: AlertFacts
    model: ModelFacts | None
    expect: list[str]


@dataclass
class TestFile:
    path: Path
    rules: list[Path | str]  # paths, or "default"
    tests: list[TestCase] = field(default_factory=list)


def load_test_file(path: Path) -> TestFile:
    """Read and validate a test file; raises FactsError (with the test's name) on bad content,
    OSError when it cannot be read."""
    data = read_data(path.read_bytes(), "toml")
    _check_keys(data, {"rules", "tests"}, "test file")
    rules = data.get("rules")
    if isinstance(rules, str):
        rules = [rules]
    if not rules or not all(isinstance(r, str) for r in rules):
        raise FactsError("'rules' must name the rule file(s) to test, or \"default\"")
    resolved: list[Path | str] = [r if r == "default" else (path.parent / r) for r in rules]
    out = TestFile(path, resolved)
    for i, case in enumerate(data.get("tests", [])):
        name = case.get("name", f"test #{i + 1}") if isinstance(case, Mapping) else f"test #{i + 1}"
        try:
            _check_keys(case, {"name", "alert", "model", "expect"}, "test")
            expect = case.get("expect")
            if not isinstance(expect, list) or not all(isinstance(e, str) for e in expect):
                raise FactsError("'expect' must be a list of \"rule\" or \"rule: actions\" strings")
            if "alert" not in case:
                raise FactsError("'alert' is required")
            out.tests.append(TestCase(name, alert_from_mapping(case["alert"]), model_from_mapping(case.get("model")), expect))
        except FactsError as exc:
            raise FactsError(f"{name}: {exc}") from None
    if not out.tests:
        raise FactsError("no [[tests]] in file")
    return out


def _expectation(text: str) -> tuple[str, tuple[str, ...] | None]:
    rule, colon, actions = text.partition(":")
    if not colon:
        return rule.strip(), None
    return rule.strip(), tuple(" ".join(map(_canonical_word, a.split())) for a in actions.split(","))


def _canonical_word(word: str) -> str:
    # "cooldown 24h" in a test means the same as the canonical "cooldown 1d"
    lit = parse_numeric(word) if word[:1].isdigit() else None
    return format_duration(lit.value) if lit is not None and lit.kind == "duration" else word


def compare(expected: list[str], matches: list[RuleMatch]) -> bool:
    """Whether the matches are exactly the expected ones, in any order. An expectation without
    ':' checks only that the rule matched, not its actions."""
    got = {m.rule: tuple(a.describe() for a in m.actions) for m in matches}
    want = [_expectation(e) for e in expected]
    if sorted(rule for rule, _ in want) != sorted(m.rule for m in matches):
        return False
    return all(actions is None or got[rule] == actions for rule, actions in want)
