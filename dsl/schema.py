"""What a rule can see and say: types, alert and model fields, enum members, units, actions.

This is the checker's whole view of the world. The alert fields mirror the ``Alert`` protobuf
message (protos/closedloop/v1/alert.proto); ``proto_field`` names the message field each one is
derived from, and tests/dsl/test_schema_matches_proto.py holds the two equal, so the language and
the wire format cannot drift apart. The model facts come from the model registry.

Nothing here imports the generated stubs: the DSL must load without them.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from enum import Enum
from fractions import Fraction


class Type(Enum):
    NUMBER = "number"
    STRING = "string"
    BOOL = "bool"
    DURATION = "duration"
    SEVERITY = "severity"  # also the type of the bare words low/medium/high/critical
    METRICS = "map of numbers"
    LABELS = "map of strings"
    MODEL = "model"  # the namespace `model`, not a value
    ERROR = "<error>"  # an operand that already produced a diagnostic; silences follow-ups

    def __str__(self) -> str:
        return self.value


# Types a comparison operator accepts. Strings and bools compare only for (in)equality: ordering
# "drift" < "risk" would mean something only by accident.
ORDERED = frozenset({Type.NUMBER, Type.DURATION, Type.SEVERITY})
EQUATABLE = ORDERED | {Type.STRING, Type.BOOL}

# Severity (of alerts) and priority (of retrains) share the order low < medium < high < critical
# and the numbers 1..4 of the proto enums Severity and Priority.
LEVELS: dict[str, int] = {"low": 1, "medium": 2, "high": 3, "critical": 4}
LEVEL_NAMES: dict[int, str] = {v: k for k, v in LEVELS.items()}


@dataclass(frozen=True, slots=True)
class Field:
    """One field a rule can read.

    ``attr`` is the attribute on AlertFacts/ModelFacts the compiled code reads. ``optional``
    fields may be absent at run time (None); reading one makes the enclosing comparison
    "missing", never an exception.
    """

    name: str
    type: Type
    owner: str  # "alert" or "model"
    attr: str
    optional: bool
    doc: str
    proto_field: str | None = None  # the Alert message field it mirrors


ALERT_FIELDS: dict[str, Field] = {
    f.name: f
    for f in (
        Field("type", Type.STRING, "alert", "type", False, "kind of alert, e.g. \"drift\"", "type"),
        Field("model_id", Type.STRING, "alert", "model_id", False, "the model the alert is about", "model_id"),
        Field("severity", Type.SEVERITY, "alert", "severity", False, "low, medium, high or critical", "severity"),
        Field("source", Type.STRING, "alert", "source", False, "the service that sent the alert", "source"),
        Field("age", Type.DURATION, "alert", "age_seconds", False, "time since the alert's observe_time", "observe_time"),
        Field("metrics", Type.METRICS, "alert", "metrics", False, "metrics.NAME is a number", "metrics"),
        Field("labels", Type.LABELS, "alert", "labels", False, "labels.NAME is a string", "labels"),
    )
}

# Facts of the model registry. Only model.registered is known for an unregistered model; the
# others are then missing (a rule reading them does not match).
MODEL_FIELDS: dict[str, Field] = {
    f.name: f
    for f in (
        Field("model.age", Type.DURATION, "model", "age_seconds", True, "time since the current version was trained"),
        Field("model.version", Type.NUMBER, "model", "version", True, "current version number"),
        Field("model.last_retrained", Type.DURATION, "model", "last_retrained_seconds", True, "time since the last retrain"),
        Field("model.enabled", Type.BOOL, "model", "enabled", True, "automated retraining enabled in the registry"),
        Field("model.registered", Type.BOOL, "model", "registered", False, "the model is in the registry"),
    )
}

MAP_FIELDS = {"metrics": Type.NUMBER, "labels": Type.STRING}  # map field -> type of its entries

# Every name a rule can write, for "did you mean" suggestions.
KNOWN_NAMES: tuple[str, ...] = tuple(ALERT_FIELDS) + tuple(MODEL_FIELDS) + tuple(LEVELS)

FUNCTIONS = ("abs", "min", "max", "has")

KEYWORDS = frozenset({"rule", "when", "then", "and", "or", "not", "in", "true", "false"})

# ---------------------------------------------------------------------------------------------
# Actions. Each action lists the arguments it accepts; the checker turns the words after an action
# name into an ActionSpec and rejects anything else.

RETRAIN_MODES = ("full", "incremental")
ACTION_ARGS: dict[str, tuple[str, ...]] = {
    "retrain": ("priority", "cooldown"),  # plus the mode, first
    "rollback": ("priority", "cooldown"),
    "record": (),
    "notify": (),
}
ACTIONS = tuple(ACTION_ARGS)

# ---------------------------------------------------------------------------------------------
# Units and numeric literals. The lexer takes any run of digits, letters, dots and a final % as
# one token so that a malformed literal ("30x", "1.5.2h", "10%%") gets its own precise
# diagnostic instead of a puzzling syntax error two tokens later.

UNITS: dict[str, int] = {"w": 604800, "d": 86400, "h": 3600, "m": 60, "s": 1}
_NUMBER = re.compile(r"[0-9]+(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")
_PERCENT = re.compile(r"([0-9]+(?:\.[0-9]+)?)%")
_DURATION_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)([a-zA-Z]+)")
# No real threshold needs more digits; the bound keeps exact arithmetic on literals cheap.
MAX_LITERAL_CHARS = 100
MAX_EXACT_INTEGER = 2**53  # every integer up to here is a float exactly


@dataclass(frozen=True, slots=True)
class NumericLiteral:
    kind: str  # "number" | "percent" | "duration" | "bad"
    value: float
    error: str | None = None


def parse_numeric(text: str) -> NumericLiteral:
    """Classify a numeric-looking token: plain number, percentage, duration, or malformed.

    A value is the float nearest to the exact decimal written, rounded once: ``12.3%`` is
    exactly the float of 0.123 (not 12.3 / 100, which is 0.12300000000000001). A literal a float
    cannot hold (``1e400``, ``1e-400``, an integer above 2^53 that would be rounded) is "bad"."""
    if len(text) > MAX_LITERAL_CHARS:
        message = f"numeric literal is too long: {len(text)} characters (the limit is {MAX_LITERAL_CHARS})"
        return NumericLiteral("bad", 0.0, message)
    if _NUMBER.fullmatch(text):
        value = float(text)  # correctly rounded from the decimal text
        if text.isdigit() and math.isfinite(value) and int(text) != int(value):
            return NumericLiteral(
                "bad", 0.0, f"integer {text} cannot be represented exactly (it would be {int(value)}); "
                f"integers up to {MAX_EXACT_INTEGER} are exact"
            )
        return _in_range("number", value, text)
    m = _PERCENT.fullmatch(text)
    if m:
        return _in_range("percent", float(Fraction(m.group(1)) / 100), text)
    if text.endswith("%"):
        return NumericLiteral("bad", 0.0, f"malformed percentage '{text}': expected a number followed by %, e.g. 10%")
    if not any(c.isalpha() for c in text):
        return NumericLiteral("bad", 0.0, f"malformed number '{text}'")
    seconds = _parse_duration(text)
    if isinstance(seconds, str):
        return NumericLiteral("bad", 0.0, seconds)
    return _in_range("duration", seconds, text)


def _in_range(kind: str, value: float, text: str) -> NumericLiteral:
    if not math.isfinite(value):
        return NumericLiteral("bad", 0.0, f"number '{text}' is out of range (the largest is about 1.8e308)")
    mantissa = text.split("e")[0].split("E")[0]
    if value == 0 and any(c in "123456789" for c in mantissa):
        return NumericLiteral("bad", 0.0, f"number '{text}' is too small: it would be 0")
    return NumericLiteral(kind, value)


def _parse_duration(text: str) -> float | str:
    """Seconds, or an error message. Compound durations name each unit once, largest first.
    Summed exactly, rounded once."""
    pos, total, last_rank = 0, Fraction(0), -1
    order = list(UNITS)
    while pos < len(text):
        m = _DURATION_PART.match(text, pos)
        if not m or m.group(2) not in UNITS:
            bad = m.group(2) if m else text[pos:]
            return (
                f"malformed duration '{text}': unknown unit '{bad}' (units are s, m, h, d and w, e.g. 30d)"
                if m
                else f"malformed duration '{text}': expected a number followed by s, m, h, d or w, e.g. 30d"
            )
        rank = order.index(m.group(2))
        if rank <= last_rank:
            return f"malformed duration '{text}': name each unit once, largest first, e.g. 1h30m"
        last_rank = rank
        total += Fraction(m.group(1)) * UNITS[m.group(2)]
        pos = m.end()
    try:
        return float(total)
    except OverflowError:
        return math.inf


def format_duration(seconds: float) -> str:
    """The canonical text of a duration: 86400 -> "1d", 5400 -> "1h30m", 0 -> "0s"."""
    if seconds < 0:
        return "-" + format_duration(-seconds)
    if seconds != int(seconds):
        return f"{seconds:g}s"
    rest, parts = int(seconds), []
    for unit, size in UNITS.items():
        n, rest = divmod(rest, int(size))
        if n:
            parts.append(f"{n}{unit}")
    return "".join(parts) or "0s"


_ESCAPE = re.compile(r"\\(.?)", re.DOTALL)
_ESCAPES = {'"': '"', "\\": "\\", "n": "\n", "t": "\t"}


def decode_string(text: str) -> tuple[str, str | None, int]:
    """The value of a string token (with its quotes), an error for the first unknown escape,
    and that escape's offset in ``text`` (0 when there is no error).

    Decoded by hand: only \\" \\\\ \\n and \\t exist, and nothing from a rule file goes near eval.
    """
    body = text[1:-1]
    if "\\" not in body:
        return body, None, 0
    bad: list[re.Match] = []

    def replace(m: re.Match) -> str:
        ch = m.group(1)
        if ch in _ESCAPES and ch:
            return _ESCAPES[ch]
        if ch and not bad:
            bad.append(m)
        return ch or "\\"

    value = _ESCAPE.sub(replace, body)
    if not bad:
        return value, None, 0
    m = bad[0]
    return value, f"unknown escape '\\{m.group(1)}' in string (use \\\", \\\\, \\n or \\t)", m.start() + 1


def quote_string(value: str) -> str:
    """The canonical string literal for a value (inverse of decode_string)."""
    body = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\t", "\\t")
    return f'"{body}"'


_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def is_plain_key(key: str) -> bool:
    """Whether metrics.KEY can be written with dots (else it needs metrics["KEY"])."""
    parts = key.split(".")
    return all(_IDENT.fullmatch(p) and p not in KEYWORDS for p in parts)
