"""The HTTP side's alert JSON codec (server/http/alert_json.py) against protobuf's json_format.

The codec is only allowed to be faster: for any body, parse_create_request gives the message
json_format.Parse gives, or the same INVALID_ARGUMENT; alert_json renders what MessageToJson renders.
"""

from __future__ import annotations

import datetime as dt
import json
import math

import pytest
from google.protobuf import json_format
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from closedloop.server.errors import InvalidArgument
from google.protobuf.timestamp_pb2 import Timestamp

from closedloop.server.api.convert import ALERT_STATES, created_alert_message
from closedloop.server.api.validation import MAX_TIMESTAMP_S, MIN_TIMESTAMP_S, malformed
from closedloop.server.http import alert_json as alert_json_module
from closedloop.server.http.alert_json import (_timestamp_json, alert_json, created_alert_json, parse_create_request,
                                               parse_create_request_checked, parse_json)
from closedloop.v1 import alert_pb2

SETTINGS = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])

text = st.text(max_size=12)
# Numbers as a sender writes them, plus what json_format must judge: bools, NaN, huge integers.
numbers = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(min_value=-10**400, max_value=10**400),
                    st.booleans(), st.just("0.5"), st.none())
enum_values = st.one_of(st.sampled_from(["SEVERITY_LOW", "SEVERITY_HIGH", "SEVERITY_UNSPECIFIED", "HIGH", ""]),
                        st.integers(min_value=-2, max_value=9), st.none())
times = st.one_of(st.sampled_from(["2026-11-27T15:00:00Z", "2026-11-27T15:00:00.123456789Z", "2026-11-27T15:00:00+02:00",
                                   "2026-13-01T00:00:00Z", "yesterday", "",
                                   "0001-01-01T00:30:00+01:00"]),  # an offset moving it before year 1
                  st.integers(), st.none())


@st.composite
def alert_objects(draw) -> dict:
    names = {"model_id": ["modelId", "model_id"], "observe_time": ["observeTime", "observe_time"]}
    candidates = {
        "model_id": st.one_of(text, st.integers(), st.none()),
        "type": st.one_of(st.sampled_from(["drift", "risk"]), text, st.none()),
        "severity": enum_values,
        "metrics": st.one_of(st.dictionaries(text, numbers, max_size=4), st.lists(numbers, max_size=2), st.none()),
        "labels": st.one_of(st.dictionaries(text, st.one_of(text, st.integers(), st.none()), max_size=4), st.none()),
        "source": st.one_of(text, st.none()),
        "observe_time": times,
        "id": text,  # output only: json_format's road
        "bogus": text,
    }
    out = {}
    for field in draw(st.lists(st.sampled_from(sorted(candidates)), unique=True, max_size=7)):
        spelling = draw(st.sampled_from(names.get(field, [field])))
        out[spelling] = draw(candidates[field])
    if draw(st.booleans()) and "modelId" in out:  # a field by both of its names
        out["model_id"] = out["modelId"]
    return out


@st.composite
def bodies(draw) -> str:
    body: object = {}
    if draw(st.booleans()):
        body["alert"] = draw(st.one_of(alert_objects(), st.none(), st.integers()))
    if draw(st.booleans()):
        body[draw(st.sampled_from(["requestId", "request_id"]))] = draw(st.one_of(text, st.integers(), st.none()))
    if draw(st.integers(0, 20)) == 0:
        body = draw(st.sampled_from([[], "alert", 3, None]))
    rendered = json.dumps(body, allow_nan=True)
    damage = draw(st.integers(0, 30))
    if damage == 0:
        rendered = rendered[: len(rendered) // 2]  # not JSON
    elif damage == 1 and rendered.startswith("{\"alert\""):
        rendered = rendered.replace("{", "{\"requestId\": \"a\", \"requestId\": \"b\", ", 1)  # a key twice
    return rendered


def reference(body: str):
    try:
        return parse_json(body, alert_pb2.CreateAlertRequest())
    except InvalidArgument as exc:
        return ("error", str(exc), [(v.field, v.description) for v in exc.violations])


def fast(body: str):
    try:
        return parse_create_request(body)
    except InvalidArgument as exc:
        return ("error", str(exc), [(v.field, v.description) for v in exc.violations])


@SETTINGS
@given(bodies())
def test_parse_matches_json_format(body):
    assert fast(body) == reference(body)


@SETTINGS
@given(bodies())
def test_the_checked_parse_finds_what_the_malformed_walk_finds(body):
    """The HTTP side skips the walk for bodies that cannot hold what it looks for: it must find the
    same violations as walking every request (NUL from a \\u0000 escape, times before year 1)."""
    try:
        checked = parse_create_request_checked(body)
    except InvalidArgument as exc:
        assert fast(body) == ("error", str(exc), [(v.field, v.description) for v in exc.violations])
        return
    assert checked.request == fast(body)
    assert ([(v.field, v.description) for v in checked.violations]
            == [(v.field, v.description) for v in malformed(checked.request)])


def test_the_checked_parse_reports_nul_and_refuses_a_time_before_year_one():
    nul = json.dumps({"alert": {"modelId": "fx\u0000", "labels": {"k": "a\u0000"}}})
    assert {v.field for v in parse_create_request_checked(nul).violations} == {"alert.model_id", "alert.labels['k']"}
    early = json.dumps({"alert": {"modelId": "fx", "observeTime": "0001-01-01T00:30:00+01:00"}})
    with pytest.raises(InvalidArgument):  # protobuf's parser refuses it already; the walk would too
        parse_create_request_checked(early)
    clean = json.dumps({"alert": {"modelId": "fx", "observeTime": "2026-11-27T15:00:00Z"}, "requestId": "r"})
    assert parse_create_request_checked(clean).violations == []


stored_rows = st.fixed_dictionaries({
    "id": st.integers(1, 2**62), "state": st.sampled_from(sorted(ALERT_STATES)),
    "rule_set_version": st.integers(0, 2**40),
    "observe_time": st.datetimes(min_value=dt.datetime(1971, 1, 1), max_value=dt.datetime(9998, 1, 1),
                                 timezones=st.just(dt.timezone.utc)),
    "create_time": st.datetimes(min_value=dt.datetime(1971, 1, 1), max_value=dt.datetime(9998, 1, 1),
                                timezones=st.just(dt.timezone.utc))})


finite = st.floats(allow_nan=False, allow_infinity=False)


@st.composite
def sender_bodies(draw) -> str:
    """Bodies as senders write them: the fast road's, every field of either spelling, or left out."""
    fields = {
        ("modelId", "model_id"): text, ("type",): text,
        ("severity",): st.sampled_from(["SEVERITY_UNSPECIFIED", "SEVERITY_LOW", "SEVERITY_CRITICAL"]),
        ("metrics",): st.dictionaries(text, st.one_of(finite, st.integers(-2**53, 2**53)), max_size=4),
        ("labels",): st.dictionaries(text, text, max_size=3), ("source",): text,
        ("observeTime", "observe_time"): st.sampled_from(["2026-11-27T15:00:00Z", "2026-11-27T15:00:00.25+02:00"]),
    }
    alert = {}
    for names, values in fields.items():
        if draw(st.booleans()):
            alert[draw(st.sampled_from(names))] = draw(values)
    return json.dumps({"alert": alert, "requestId": draw(text)})


@SETTINGS
@given(st.one_of(sender_bodies(), bodies()), stored_rows)
def test_the_reply_from_the_parsed_body_is_the_reply_from_the_message(body, stored):
    """created_alert_json (the HTTP side's common reply) renders what alert_json renders of the Alert
    CreateAlert answers for the same body and stored row."""
    try:
        checked = parse_create_request_checked(body)
    except InvalidArgument:
        return
    if checked.sent is None:
        return  # json_format's road: the reply is rendered from the message
    reference = alert_json(created_alert_message(checked.request.alert, stored))
    _same_json(created_alert_json(checked.sent, stored), reference)


@SETTINGS
@given(st.integers(MIN_TIMESTAMP_S, MAX_TIMESTAMP_S),
       st.one_of(st.just(0), st.integers(1, 999).map(lambda k: k * 1_000_000),
                 st.integers(1, 999_999).map(lambda k: k * 1_000), st.integers(1, 999_999_999)))
def test_timestamps_render_as_protobuf_renders_them(seconds, nanos):
    ts = Timestamp(seconds=seconds, nanos=nanos)
    assert _timestamp_json(ts) == ts.ToJsonString()


@st.composite
def respelled_bodies(draw) -> str:
    """A sender's body written the ways JSON allows and the fast road must not misread: whitespace
    around colons, escapes (a key can be spelled two ways), a key repeated inside a nested object
    (orjson keeps the last silently; json_format refuses it), string values ending like a key."""
    body = json.loads(draw(sender_bodies()))
    alert = body["alert"]
    if draw(st.booleans()):
        alert.setdefault("labels", {})["desk"] = draw(st.sampled_from([":", " :x", '": 1', "a\":", "fx"]))
    text_ = json.dumps(body, ensure_ascii=draw(st.booleans()), indent=draw(st.sampled_from([None, 0, 2])),
                       separators=draw(st.sampled_from([None, (",", " : "), (",", ":"), (" ,", "\t:\n")])))
    repeat = draw(st.sampled_from(["", "labels", "metrics", "alert", "escaped"]))
    if repeat in ("labels", "metrics") and repeat in alert:
        text_ = text_.replace(f'"{repeat}"', f'"{repeat}": {{"k": "v"}}, "{repeat}"', 1)
    elif repeat == "alert" and "type" in alert:
        text_ = text_.replace('"type"', '"type": "x", "type"', 1)
    elif repeat == "escaped" and "type" in alert:
        text_ = text_.replace('"type"', '"type": "a", "\\u0074ype"', 1)
    return text_


@SETTINGS
@given(respelled_bodies())
def test_parse_of_respelled_bodies_matches_json_format(body):
    assert fast(body) == reference(body)


def test_a_key_repeated_in_a_nested_object_is_refused_as_json_format_refuses_it():
    for body in ['{"alert": {"labels": {"desk": "fx", "desk": "eq"}}}',
                 '{"alert": {"metrics": {"x": 1, "x": 2}}}',
                 '{"alert": {"modelId": "a", "modelId": "b"}}',
                 '{"alert" : {"type" : "a" , "type" : "b"}}',
                 '{"alert": {"type": "a", "\\u0074ype": "b"}}']:
        result = fast(body)
        assert result == reference(body) and result[0] == "error", body
    # A value that ends like a key does not hide anything: the same message either way.
    body = '{"alert": {"labels": {"desk": ":", "d2": " :"}, "type": "drift"}}'
    assert fast(body) == reference(body) and fast(body).alert.labels["desk"] == ":"


def test_parse_takes_the_common_body_without_json_format(monkeypatch):
    body = json.dumps({"alert": {"modelId": "fx-1", "type": "drift", "severity": "SEVERITY_HIGH",
                                 "metrics": {"drift_score": 0.4, "n": 3}, "labels": {"desk": "fx"},
                                 "source": "mon", "observeTime": "2026-11-27T15:00:00.5Z"}, "requestId": "r-1"})
    expected = reference(body)
    monkeypatch.setattr(json_format, "Parse", lambda *a, **k: pytest.fail("json_format was used"))
    monkeypatch.setattr(alert_json_module, "_STRICT", None)  # nor the strict decoder: orjson's road
    assert parse_create_request(body) == expected


def test_parse_refuses_like_json_format():
    for body in ["{", '{"alert": {"severity": "LOUD"}}', '{"requestId": "a", "requestId": "b"}',
                 '{"alert": {"observeTime": "soon"}}', '{"alertz": {}}', '{"alert": {"labels": {"a": 1}}}']:
        result = fast(body)
        assert result == reference(body)
        assert result[0] == "error" and result[2][0][0] == "body"
    # Shapes json_format accepts, oddly or not: the same message either way.
    for body in ["[]", '{"alert": {"metrics": {"x": NaN}}}', '{"alert": {"modelId": "a", "model_id": "b"}}']:
        assert fast(body) == reference(body)




@st.composite
def alerts(draw) -> alert_pb2.Alert:
    a = alert_pb2.Alert(
        id=draw(text), model_id=draw(text), type=draw(text), severity=draw(st.integers(0, 6)),
        metrics=draw(st.dictionaries(text, st.one_of(finite, st.sampled_from([math.inf, -math.inf, math.nan])),
                                     max_size=4)),
        labels=draw(st.dictionaries(text, text, max_size=3)), source=draw(text), state=draw(st.integers(0, 7)),
        rule_set_version=draw(st.integers(0, 2**62)))
    for field in ("observe_time", "create_time", "update_time"):
        if draw(st.booleans()):
            getattr(a, field).FromNanoseconds(draw(st.integers(0, 4 * 10**18)))
    for _ in range(draw(st.integers(0, 3))):
        action = a.actions.add(id=draw(text), alert_id=draw(text), rule=draw(text), kind=draw(st.integers(0, 6)),
                               mode=draw(st.integers(0, 3)), priority=draw(st.integers(0, 5)),
                               state=draw(st.integers(0, 9)), job_id=draw(text), reason=draw(text),
                               model_id=draw(text), rule_set_version=draw(st.integers(0, 99)))
        for field in ("cooldown_until", "create_time"):
            if draw(st.booleans()):
                getattr(action, field).FromNanoseconds(draw(st.integers(0, 4 * 10**18)))
    return a


def _same_json(ours: str, theirs: str) -> None:
    ours_obj, theirs_obj = json.loads(ours), json.loads(theirs)
    # NaN != NaN: compare the rendered strings json_format uses for it, which both must produce.
    assert ours_obj == theirs_obj
    assert list(ours_obj) == list(theirs_obj)  # fields in the same (number) order
    for mine, ref in zip(ours_obj.get("actions", []), theirs_obj.get("actions", [])):
        assert list(mine) == list(ref)


@SETTINGS
@given(alerts())
def test_render_matches_json_format(alert):
    _same_json(alert_json(alert), json_format.MessageToJson(alert, indent=None))


def test_render_of_an_empty_alert():
    assert alert_json(alert_pb2.Alert()).decode() == "{}" == json_format.MessageToJson(alert_pb2.Alert(), indent=None)
