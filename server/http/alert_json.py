"""The JSON of POST /v1/alerts and its reply, without protobuf's pure-Python json_format on the common path.

json_format walks descriptors field by field in Python: ~35 µs to parse a CreateAlertRequest and ~30 µs
to render an Alert, a sixth of what an HTTP alert costs the server. The shapes here are fixed and small,
so this module reads and writes them directly: orjson, and the C `json` module where orjson cannot
tell what json_format would (see `_decode`).

It is an accelerator, not a second definition of the mapping. `parse_create_request` takes the fast
road only for a body made of the fields a sender sets, each of the JSON type it must have; anything
else (a null, an output-only field, an enum given by an unknown number, a duplicated key, NaN, a body
that is not JSON) goes to json_format, which gives the answer and the error message it always gave.
`alert_json` renders what json_format's MessageToJson renders (fields in number order, defaults
omitted, int64 as strings, enums by name, non-finite doubles as "NaN"/"Infinity"), from a plan
made once from the Alert and Action descriptors. Both are checked
against json_format on many generated messages (tests/unit/test_alert_json.py).
"""

from __future__ import annotations

import functools
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from google.protobuf import json_format
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.timestamp_pb2 import Timestamp

from closedloop.v1 import alert_pb2, common_pb2

from ..api.convert import ALERT_STATES, timestamp
from ..api.validation import MAX_TIMESTAMP_S, MIN_TIMESTAMP_S, malformed
from ..errors import FieldViolation, InvalidArgument


class _NotFast(Exception):
    """The body is outside the fast road's shapes: json_format decides."""


def parse_json(text: str, message):
    """`message` filled from protobuf JSON by json_format; a body that is not one is INVALID_ARGUMENT on `body`."""
    try:
        return json_format.Parse(text, message)
    except json_format.ParseError as exc:
        raise InvalidArgument(FieldViolation("body", f"not a {type(message).__name__} in JSON: {exc}")) from None


def parse_create_request(text: str) -> alert_pb2.CreateAlertRequest:
    """A CreateAlertRequest from its JSON, exactly as json_format.Parse would read it."""
    try:
        return _parse_create(text)
    except Exception:  # noqa: BLE001 - any surprise at all: the reference parser answers
        return parse_json(text, alert_pb2.CreateAlertRequest())


@dataclass(frozen=True, slots=True)
class CheckedCreate:
    """A parsed POST /v1/alerts body: the request, what malformed() finds in it, and for a body of the
    fast road its alert's fields as JSON values by .proto name (`created_alert_json` renders the reply
    from them); None for a body json_format read."""

    request: alert_pb2.CreateAlertRequest
    violations: list[FieldViolation]
    sent: dict | None


def parse_create_request_checked(text: str) -> CheckedCreate:
    """The request and what validation.malformed finds in it (NUL, non-finite numbers, timestamps
    outside years 1-9999), without walking a body of the fast road that cannot hold any: its strings
    came through a JSON decoder, which yields NUL only from a \\u0000 escape, and its numbers are finite.
    Its one timestamp is checked here as well (an offset can move it outside the years; protobuf's
    parser refuses that today, but the walk's rule should not rest on one version's parser)."""
    sent: dict = {}
    try:
        request = _parse_create(text, sent)
    except Exception:  # noqa: BLE001 - as parse_create_request: the reference parser answers
        request = parse_json(text, alert_pb2.CreateAlertRequest())
        return CheckedCreate(request, malformed(request), None)
    ts = request.alert.observe_time
    if "\\u0000" in text or not MIN_TIMESTAMP_S <= ts.seconds <= MAX_TIMESTAMP_S:
        return CheckedCreate(request, malformed(request), sent)
    return CheckedCreate(request, [], sent)


def _unique_keys(pairs: list) -> dict:
    # json_format refuses a key given twice; the plain dict would keep the last one silently.
    obj = dict(pairs)
    if len(obj) != len(pairs):
        raise _NotFast
    return obj


_STRICT = json.JSONDecoder(object_pairs_hook=_unique_keys)
# A closing quote, JSON's whitespace, a colon: how every key of an object ends.
_KEY_END = re.compile(r'"[ \t\n\r]*:')


def _keys_written(text: str) -> int:
    """At least the number of object keys written in `text`, a JSON text without backslashes.

    Without backslashes no string holds a quote, so every quote opens or closes a string, and every
    key is a string followed by optional whitespace and a colon: one match each. A string value that
    begins with a colon (or whitespace and a colon) adds a match, so the count is never below the
    keys written. The parsed objects hold one entry per distinct key: when they hold as many as
    this counts, no key was written twice (json_format refuses a body that repeats one)."""
    if '" ' in text or '"\t' in text or '"\n' in text or '"\r' in text:
        return len(_KEY_END.findall(text))
    return text.count('":')


def _decode(text: str) -> tuple[Any, int | None]:
    """The body's JSON value and, for orjson's road, `_keys_written` (for the caller to compare with
    the keys it read); None when the strict decoder, which refuses a repeated key itself, read it.

    orjson (~5x faster than json.loads with a hook) keeps the last of a repeated key, and escapes
    can spell one key two ways, so it takes only a text without backslashes. What it refuses that
    json.loads accepts (NaN, lone surrogates) goes to json_format, which gives the answer."""
    if "\\" in text:
        return _STRICT.decode(text), None
    try:
        return orjson.loads(text), _keys_written(text)
    except orjson.JSONDecodeError:
        raise _NotFast from None


def _parse_create(text: str, sent: dict | None = None) -> alert_pb2.CreateAlertRequest:
    """The fast road; `sent`, when given, receives the alert's fields (see CheckedCreate)."""
    body, written = _decode(text)
    if type(body) is not dict:
        raise _NotFast
    request = alert_pb2.CreateAlertRequest()
    keys = len(body)
    seen: set[str] = set()
    for key, value in body.items():
        name = _REQUEST_FIELDS.get(key)
        if name is None or name in seen:  # unknown, or given by both of its names: json_format says why
            raise _NotFast
        seen.add(name)
        if name == "request_id" and type(value) is str:
            request.request_id = value
        elif name == "alert" and type(value) is dict:
            request.alert.SetInParent()  # `"alert": {}` is a present, empty alert, as json_format reads it
            keys += _fill_alert(request.alert, value, sent)
        else:
            raise _NotFast
    if written is not None and keys != written:
        raise _NotFast  # a key given twice, or a string value that looks like a key's end: json_format decides
    return request


_REQUEST_FIELDS = {"requestId": "request_id", "request_id": "request_id", "alert": "alert"}
# The fields a sender sets, by both JSON names (json_format accepts the lowerCamelCase and the .proto name).
_ALERT_FIELDS = {"modelId": "model_id", "model_id": "model_id", "type": "type", "severity": "severity",
                 "metrics": "metrics", "labels": "labels", "source": "source",
                 "observeTime": "observe_time", "observe_time": "observe_time"}
_SEVERITY_BY_NAME = {v.name: v.number for v in common_pb2.Severity.DESCRIPTOR.values}


def _fill_alert(alert: alert_pb2.Alert, fields: dict, sent: dict | None) -> int:
    """Fills `alert`; returns the keys its objects held (its own, its metrics' and its labels')."""
    seen: set[str] = set()
    keys = len(fields)
    out = {} if sent is None else sent
    for key, value in fields.items():
        name = _ALERT_FIELDS.get(key)
        if name is None or name in seen:
            raise _NotFast
        seen.add(name)
        kind = type(value)
        if name in ("model_id", "type", "source") and kind is str:
            setattr(alert, name, value)
            out[name] = value
        elif name == "severity" and kind is str and value in _SEVERITY_BY_NAME:
            alert.severity = _SEVERITY_BY_NAME[value]
            out[name] = value
        elif name == "metrics" and kind is dict:
            metrics = {}
            for k, v in value.items():
                # bool is an int to Python but not a number to json_format; NaN and infinities take
                # json_format's road (they are refused later by validation, with its message).
                if type(v) is float and math.isfinite(v):
                    metrics[k] = v
                elif type(v) is int:
                    metrics[k] = float(v)
                else:
                    raise _NotFast
            alert.metrics.update(metrics)
            out[name] = metrics
            keys += len(value)
        elif name == "labels" and kind is dict:
            for v in value.values():
                if type(v) is not str:
                    raise _NotFast
            alert.labels.update(value)
            out[name] = value
            keys += len(value)
        elif name == "observe_time" and kind is str:
            alert.observe_time.FromJsonString(value)
        else:
            raise _NotFast
    return keys


def _double(value: float):
    if math.isfinite(value):
        return value
    return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")


@functools.lru_cache(maxsize=1024)
def _whole_seconds_json(seconds: int) -> str:
    """Timestamp.ToJsonString's text for a whole second, without the "Z". A reply's three times are
    mostly one second, and replies come in bursts of the same second: cached."""
    stamp = Timestamp(seconds=seconds)
    return stamp.ToJsonString()[:-1]


def _timestamp_json(ts: Timestamp) -> str:
    """What Timestamp.ToJsonString renders: the fraction in 0, 3, 6 or 9 digits, as few as exact."""
    nanos = ts.nanos
    whole = _whole_seconds_json(ts.seconds)
    if nanos == 0:
        return whole + "Z"
    if nanos % 1_000_000 == 0:
        return f"{whole}.{nanos // 1_000_000:03d}Z"
    if nanos % 1_000 == 0:
        return f"{whole}.{nanos // 1_000:06d}Z"
    return f"{whole}.{nanos:09d}Z"


def _enum_name(field: FieldDescriptor):
    names = {v.number: v.name for v in field.enum_type.values}
    return lambda number: names.get(number, number)  # an unknown number is rendered as the number


def _renderer(descriptor):
    """The fields of a message type as (attribute, JSON name, presence by HasField, value -> JSON),
    in field-number order, from its descriptor once; only the field types Alert and Action use."""
    fields = []
    for f in sorted(descriptor.fields, key=lambda f: f.number):
        if f.message_type is not None and f.message_type.GetOptions().map_entry:
            value_type = f.message_type.fields_by_name["value"].type
            convert = ((lambda m: {k: _double(v) for k, v in m.items()}) if value_type == FieldDescriptor.TYPE_DOUBLE
                       else dict)
        elif f.message_type is not None and f.message_type.full_name == "google.protobuf.Timestamp":
            convert = _timestamp_json
        elif f.message_type is not None and f.is_repeated:
            nested = _renderer(f.message_type)
            convert = (lambda render: lambda items: [render(item) for item in items])(nested)
        elif f.type == FieldDescriptor.TYPE_ENUM:
            convert = _enum_name(f)
        elif f.type == FieldDescriptor.TYPE_INT64:
            convert = str  # JSON's numbers lose int64 precision: the mapping writes them as strings
        elif f.type == FieldDescriptor.TYPE_STRING:
            convert = None
        else:
            raise TypeError(f"alert_json has no rendering for {f.full_name}")
        has_presence = f.message_type is not None and not f.is_repeated
        fields.append((f.name, f.json_name, has_presence, convert))

    def render(message) -> dict:
        out = {}
        for name, json_name, has_presence, convert in fields:
            if has_presence:
                if message.HasField(name):
                    out[json_name] = convert(getattr(message, name))
                continue
            value = getattr(message, name)
            if value:  # proto3 scalars, maps and lists: the default (0, "", empty) is left out
                out[json_name] = value if convert is None else convert(value)
        return out

    return render


_render_alert = _renderer(alert_pb2.Alert.DESCRIPTOR)
# The fields of Alert a sender sets that the reply repeats as sent, in field-number order (observe_time
# is the stored one: to the microsecond), with their JSON names.
_SENT_IN_ORDER = (("model_id", "modelId"), ("type", "type"), ("severity", "severity"), ("metrics", "metrics"),
                  ("labels", "labels"), ("source", "source"))
assert [f.name for f in sorted(alert_pb2.Alert.DESCRIPTOR.fields, key=lambda f: f.number)][:7] == \
    ["id", *(name for name, _ in _SENT_IN_ORDER)], "Alert's fields moved: update _SENT_IN_ORDER"
_ALERT_STATE_NAMES = {v.number: v.name for v in alert_pb2.AlertState.DESCRIPTOR.values}


def created_alert_json(sent: dict, stored: Mapping[str, Any]) -> bytes:
    """alert_json(convert.created_alert_message(...)) for a new alert without actions, rendered from the
    fields its body held (CheckedCreate.sent) and what the server stored: ~3x cheaper than filling an
    Alert and walking it. Defaults are left out as MessageToJson leaves them out."""
    out = {"id": str(stored["id"])}
    for name, json_name in _SENT_IN_ORDER:
        value = sent.get(name)
        if value and (name != "severity" or _SEVERITY_BY_NAME[value]):
            out[json_name] = value
    created = _timestamp_json(timestamp(stored["create_time"]))
    out["observeTime"] = _timestamp_json(timestamp(stored["observe_time"]))
    out["createTime"] = created
    state = ALERT_STATES[stored["state"]]
    if state:
        out["state"] = _ALERT_STATE_NAMES[state]
    if stored["rule_set_version"]:
        out["ruleSetVersion"] = str(stored["rule_set_version"])
    out["updateTime"] = created
    return orjson.dumps(out)


def alert_json(alert: alert_pb2.Alert) -> bytes:
    """json_format.MessageToJson(alert, indent=None), field for field, as UTF-8. (Numbers are written
    as orjson writes them, 1e+16 as 1e16: the same values.)"""
    return orjson.dumps(_render_alert(alert))
