"""Input validation shared by the servicers: every check names the field it rejects.

Checks collect FieldViolations instead of raising at the first one, so a client learns everything
wrong with a request in one round trip.
"""

from __future__ import annotations

import contextvars
from math import isfinite
import re
import time

from google.protobuf.message import Message

from ..errors import FieldViolation, InvalidArgument

MODEL_ID = re.compile(r"^[A-Za-z0-9_.:/-]{1,128}$")
KEY = re.compile(r"^[a-z0-9_.-]{1,64}$")
ALERT_TYPE = KEY
MAX_MAP_ENTRIES = 64
MAX_LABEL_VALUE_BYTES = 1024
MAX_SOURCE_CHARS = 256
MAX_REQUEST_ID_CHARS = 128
MAX_REASON_BYTES = 1024
# Clocks of trading hosts drift; beyond this an observe_time is a bug on the sender's side.
MAX_FUTURE_SKEW_S = 300.0
MAX_PAGE_SIZE = 1000
DEFAULT_PAGE_SIZE = 50
# Ids are PostgreSQL bigints.
MAX_ID = 2**63 - 1
ASCII_DIGITS = re.compile(r"^[0-9]{1,19}$")
# google.protobuf.Timestamp's own range, which is also what datetime can hold: 0001-01-01T00:00:00Z
# .. 9999-12-31T23:59:59Z.
MIN_TIMESTAMP_S = -62_135_596_800
MAX_TIMESTAMP_S = 253_402_300_799
# google.protobuf.Duration's own documented range: +-10,000 years.
MAX_DURATION_S = 315_576_000_000
# Times a computation adds windows to or subtracts them from (the feedback report): far enough inside
# what datetime holds that the arithmetic cannot leave the calendar.
WINDOW_TIME_MIN_S = 0  # 1970-01-01
WINDOW_TIME_MAX_S = 221_845_392_000  # 9000-01-01
MAX_WINDOW_S = 366 * 86400


# What malformed() found in the request being handled, put here by the server interceptor for the
# handler's first validation to report along with its own findings (one round trip tells a client
# everything). Every handler validates before it acts; the interceptor rejects the request anyway if
# the handler did not.
pending_malformed: contextvars.ContextVar[list[FieldViolation]] = contextvars.ContextVar("pending_malformed",
                                                                                         default=[])


class Violations:
    """Collects field violations; `raise_if_any()` at the end of a validation."""

    def __init__(self, prefix: str = "") -> None:
        self.prefix = prefix
        self.items: list[FieldViolation] = []

    def add(self, field: str, description: str) -> None:
        self.items.append(FieldViolation(self.prefix + field, description))

    def raise_if_any(self) -> None:
        malformed_ = pending_malformed.get()
        if malformed_:
            pending_malformed.set([])
            self.items[:0] = malformed_
        if self.items:
            raise InvalidArgument(self.items)


def check_model_id(v: Violations, value: str, field: str = "model_id") -> None:
    if not value:
        v.add(field, "required")
    elif not MODEL_ID.match(value):
        v.add(field, "must be 1-128 characters of [A-Za-z0-9_.:/-]")


def check_request_id(v: Violations, value: str, field: str = "request_id") -> None:
    if len(value) > MAX_REQUEST_ID_CHARS:
        v.add(field, f"at most {MAX_REQUEST_ID_CHARS} characters")


def check_id(v: Violations, value: str, field: str) -> int | None:
    """Server ids are ASCII decimal bigints; returns the int or None after recording a violation.

    (str.isdigit() is no test: it accepts "²" and other scripts' digits, which int() then rejects.)"""
    if not value:
        v.add(field, "required")
        return None
    if not ASCII_DIGITS.match(value) or int(value) > MAX_ID:
        v.add(field, "must be a decimal id")
        return None
    return int(value)


# The range a google.protobuf.Timestamp may hold (0001-01-01 .. 9999-12-31); Python and PostgreSQL
# hold it too. Inside it, times are kept to the microsecond (convert.from_timestamp).
MIN_TIMESTAMP_S, MAX_TIMESTAMP_S = -62_135_596_800, 253_402_300_799


def check_time(v: Violations, ts, field: str) -> bool:
    """A request's Timestamp that can be stored; False after recording a violation."""
    if not (MIN_TIMESTAMP_S <= ts.seconds <= MAX_TIMESTAMP_S and 0 <= ts.nanos <= 999_999_999):
        v.add(field, "not a valid timestamp (0001-01-01 to 9999-12-31, nanos 0 to 999999999)")
        return False
    return True


def check_alert(v: Violations, alert, field: str = "alert") -> None:
    """An Alert as sent by a client (output-only fields are ignored, not rejected)."""
    check_model_id(v, alert.model_id, f"{field}.model_id")
    if not alert.type:
        v.add(f"{field}.type", "required")
    elif not ALERT_TYPE.match(alert.type):
        v.add(f"{field}.type", "must be 1-64 characters of [a-z0-9_.-]")
    if alert.severity == 0:
        v.add(f"{field}.severity", "required (SEVERITY_LOW, _MEDIUM, _HIGH or _CRITICAL)")
    elif alert.severity not in (1, 2, 3, 4):
        v.add(f"{field}.severity", f"unknown value {alert.severity}")
    if len(alert.metrics) > MAX_MAP_ENTRIES:
        v.add(f"{field}.metrics", f"at most {MAX_MAP_ENTRIES} entries, got {len(alert.metrics)}")
    for key in alert.metrics:  # values are finite: see malformed()
        if not KEY.match(key):
            v.add(f"{field}.metrics[{key[:70]!r}]", "key must be 1-64 characters of [a-z0-9_.-]")
    if len(alert.labels) > MAX_MAP_ENTRIES:
        v.add(f"{field}.labels", f"at most {MAX_MAP_ENTRIES} entries, got {len(alert.labels)}")
    for key, value in alert.labels.items():
        if not KEY.match(key):
            v.add(f"{field}.labels[{key[:70]!r}]", "key must be 1-64 characters of [a-z0-9_.-]")
        if len(value.encode()) > MAX_LABEL_VALUE_BYTES:
            v.add(f"{field}.labels[{key[:70]!r}]", f"value over {MAX_LABEL_VALUE_BYTES} bytes")
    if len(alert.source) > MAX_SOURCE_CHARS:
        v.add(f"{field}.source", f"at most {MAX_SOURCE_CHARS} characters")
    if alert.HasField("observe_time"):
        ts = alert.observe_time
        if ts.nanos < 0 or ts.nanos > 999_999_999 or ts.seconds < 0:
            v.add(f"{field}.observe_time", "not a valid timestamp")
        elif ts.seconds > time.time() + MAX_FUTURE_SKEW_S:
            v.add(f"{field}.observe_time", f"more than {int(MAX_FUTURE_SKEW_S)} s in the future")


def check_window_time(v: Violations, ts, field: str) -> None:
    """A time a report computes windows around: between 1970 and 9000 (malformed() checked the rest)."""
    if not WINDOW_TIME_MIN_S <= ts.seconds < WINDOW_TIME_MAX_S:
        v.add(field, "must be between 1970-01-01 and 9000-01-01")


def check_page(v: Violations, page_size: int, page_token: str) -> int:
    if page_size < 0:
        v.add("page_size", "must not be negative")
    if len(page_token) > 512:
        v.add("page_token", "not a token this server issued")
    if page_size == 0:
        return DEFAULT_PAGE_SIZE
    return min(page_size, MAX_PAGE_SIZE)


def malformed(message: Message, prefix: str = "") -> list[FieldViolation]:
    """What no RPC can accept, wherever in a request it is: text PostgreSQL cannot store (NUL),
    numbers that are not finite, timestamps outside years 1-9999 and durations outside +-10,000 years.

    The server interceptor runs this on every request before its handler, so a field added to any
    message is covered without anyone remembering to; handlers check what is specific to them."""
    out: list[FieldViolation] = []
    _walk(message, prefix, out)
    return out


def _walk(message: Message, prefix: str, out: list[FieldViolation]) -> None:
    name = message.DESCRIPTOR.full_name
    if name == "google.protobuf.Timestamp":
        if not (MIN_TIMESTAMP_S <= message.seconds <= MAX_TIMESTAMP_S and 0 <= message.nanos <= 999_999_999):
            out.append(FieldViolation(prefix.rstrip("."), "not a timestamp between years 1 and 9999"))
        return
    if name == "google.protobuf.Duration":
        if not (abs(message.seconds) <= MAX_DURATION_S and abs(message.nanos) <= 999_999_999
                and message.seconds * message.nanos >= 0):
            out.append(FieldViolation(prefix.rstrip("."), "not a valid duration"))
        return
    # Inlined per shape and kind, the path built only for a finding: this runs on every request.
    for fd, value in message.ListFields():
        shape, kind = _shapes.get(fd) or _shape(fd)  # cached: descriptor look-ups cost more than the checks
        if kind is None:
            continue  # ints, bools, enums, bytes: any value is storable; handlers check meaning
        name = fd.name
        if shape == _SINGLE:
            _check(kind, value, prefix + name, out)
        elif shape == _REPEATED:
            for i, item in enumerate(value):
                _check(kind, item, f"{prefix}{name}[{i}]", out)
        else:
            for key, item in value.items():
                if isinstance(key, str) and "\x00" in key:
                    out.append(FieldViolation(_entry(prefix, name, key), "key contains a NUL character"))
                if kind == _STRING:
                    if "\x00" in item:
                        out.append(FieldViolation(_entry(prefix, name, key), "contains a NUL character"))
                elif kind == _FLOAT:
                    if not isfinite(item):
                        out.append(FieldViolation(_entry(prefix, name, key), f"must be a finite number, got {item}"))
                elif kind == _MESSAGE:
                    _walk(item, _entry(prefix, name, key) + ".", out)


def _entry(prefix: str, name: str, key) -> str:
    return f"{prefix}{name}[{key[:70]!r}]" if isinstance(key, str) else f"{prefix}{name}[{key}]"


_SINGLE, _REPEATED, _MAP = range(3)
_MESSAGE, _STRING, _FLOAT, _KEY_ONLY = range(4)
_shapes: dict = {}


# Packed number columns whose handler checks every value itself, vectorised: a monitoring batch carries
# tens of thousands of them (a Python loop here would cost more than the handler), and in a feature
# column NaN is a value (missing), not an error. api/monitor.py refuses what each of them must not hold.
HANDLER_CHECKED_NUMBERS = frozenset({
    "closedloop.v1.DoubleColumn.values",
    "closedloop.v1.ObservationBatch.predictions",
    "closedloop.v1.OutcomeBatch.outcomes",
    "closedloop.v1.OutcomeBatch.predictions",
})


def _shape(fd) -> tuple[int, int | None]:
    """(shape, what to check of the values) of a field, worked out once per field and kept in _shapes."""
    if fd.full_name in HANDLER_CHECKED_NUMBERS:
        _shapes[fd] = _REPEATED, None
        return _shapes[fd]
    shape = _REPEATED if fd.is_repeated else _SINGLE
    value_fd = fd
    if fd.message_type is not None and fd.message_type.GetOptions().map_entry:
        shape, value_fd = _MAP, fd.message_type.fields_by_name["value"]
    kind = {value_fd.TYPE_MESSAGE: _MESSAGE, value_fd.TYPE_STRING: _STRING, value_fd.TYPE_DOUBLE: _FLOAT,
            value_fd.TYPE_FLOAT: _FLOAT}.get(value_fd.type)
    if kind is None and shape == _MAP and fd.message_type.fields_by_name["key"].type == fd.TYPE_STRING:
        kind = _KEY_ONLY
    _shapes[fd] = shape, kind
    return shape, kind


def _check(kind: int, value, path: str, out: list[FieldViolation]) -> None:
    if kind == _MESSAGE:
        _walk(value, path + ".", out)
    elif kind == _STRING:
        if "\x00" in value:
            out.append(FieldViolation(path, "contains a NUL character"))
    elif not isfinite(value):
        out.append(FieldViolation(path, f"must be a finite number, got {value}"))
