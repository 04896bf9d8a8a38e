"""Input validation shared by the servicers: every check names the field it rejects.

Checks collect FieldViolations instead of raising at the first one, so a client learns everything
wrong with a request in one round trip.
"""

from __future__ import annotations

import math
import re
import time

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


class Violations:
    """Collects field violations; `raise_if_any()` at the end of a validation."""

    def __init__(self, prefix: str = "") -> None:
        self.prefix = prefix
        self.items: list[FieldViolation] = []

    def add(self, field: str, description: str) -> None:
        self.items.append(FieldViolation(self.prefix + field, description))

    def raise_if_any(self) -> None:
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
    """Server ids are decimal digits; returns the int or None after recording a violation."""
    if not value:
        v.add(field, "required")
        return None
    if not value.isdigit() or len(value) > 18:
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
    for key, value in alert.metrics.items():
        if not KEY.match(key):
            v.add(f"{field}.metrics[{key[:70]!r}]", "key must be 1-64 characters of [a-z0-9_.-]")
        if not math.isfinite(value):
            v.add(f"{field}.metrics[{key[:70]!r}]", f"must be a finite number, got {value}")
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


def check_page(v: Violations, page_size: int, page_token: str) -> int:
    if page_size < 0:
        v.add("page_size", "must not be negative")
    if len(page_token) > 512:
        v.add("page_token", "not a token this server issued")
    if page_size == 0:
        return DEFAULT_PAGE_SIZE
    return min(page_size, MAX_PAGE_SIZE)
