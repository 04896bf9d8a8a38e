"""Bad input is INVALID_ARGUMENT naming the field, never INTERNAL or UNKNOWN (issue 10, point 5), and
text PostgreSQL cannot store is refused before it reaches the database (point 4)."""

from __future__ import annotations

import json

import grpc
import pytest
from google.protobuf import json_format
from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from closedloop.server.api import paging
from closedloop.v1 import alert_pb2, alert_pb2_grpc, common_pb2, retrain_pb2, retrain_pb2_grpc, rules_pb2, rules_pb2_grpc

from .helpers import synthetic_model
from .test_alerts import violations


@pytest.fixture
async def channel(server):
    async with grpc.aio.insecure_channel(server.test_target) as ch:
        yield ch


async def _rejected(call, request) -> dict[str, str]:
    """The field violations of a call that must be INVALID_ARGUMENT."""
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call(request, timeout=15)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, err.value.details()
    return violations(err.value)


def _alert(**fields) -> alert_pb2.Alert:
    values = dict(model_id="fx-eurusd", type="drift", severity=common_pb2.SEVERITY_LOW)
    values.update(fields)
    return alert_pb2.Alert(**values)


@pytest.mark.parametrize("alert_id", ["²", "١٢", "9223372036854775808", "-1", " 1", "0x10"])
async def test_ids_outside_ascii_digits_or_bigint_are_invalid(channel, alert_id):
    alerts = alert_pb2_grpc.AlertServiceStub(channel)
    assert "id" in await _rejected(alerts.GetAlert, alert_pb2.GetAlertRequest(id=alert_id))
    retrain = retrain_pb2_grpc.RetrainServiceStub(channel)
    assert "id" in await _rejected(retrain.GetJob, retrain_pb2.GetJobRequest(id=alert_id))


async def test_largest_bigint_id_is_simply_not_found(channel):
    alerts = alert_pb2_grpc.AlertServiceStub(channel)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await alerts.GetAlert(alert_pb2.GetAlertRequest(id="9223372036854775807"), timeout=15)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize("seconds", [253402300800, 10**15, -62135596801, -(10**15)])
async def test_timestamps_outside_years_1_to_9999_are_invalid(channel, seconds):
    alerts = alert_pb2_grpc.AlertServiceStub(channel)
    found = await _rejected(alerts.ListAlerts, alert_pb2.ListAlertsRequest(start_time=Timestamp(seconds=seconds)))
    assert "start_time" in found
    found = await _rejected(alerts.ListAlerts, alert_pb2.ListAlertsRequest(end_time=Timestamp(seconds=5, nanos=-1)))
    assert "end_time" in found
    rules = rules_pb2_grpc.RuleServiceStub(channel)
    found = await _rejected(rules.BacktestRules, rules_pb2.BacktestRulesRequest(
        source="", start_time=Timestamp(seconds=0), end_time=Timestamp(seconds=seconds)))
    assert "end_time" in found
    retrain = retrain_pb2_grpc.RetrainServiceStub(channel)
    found = await _rejected(retrain.GetFeedbackReport, retrain_pb2.GetFeedbackReportRequest(
        start_time=Timestamp(seconds=seconds)))
    assert "start_time" in found


def _forged(cursor: dict, filters: dict) -> str:
    """A token with the right filter fingerprint and a cursor this server never issued."""
    raw = json.dumps({"c": cursor, "f": paging._fingerprint(filters)}).encode()
    import base64

    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


ALERT_FILTERS = {"model_id": "", "type": "", "state": 0, "start": "", "end": ""}
FORGED_ALERT_CURSORS = [{"t": "2026-01-01T00:00:00+00:00", "id": 10**30}, {"t": "2026-01-01T00:00:00+00:00", "id": 1e308},
                        {"t": "2026-01-01T00:00:00+00:00", "id": True}, {"t": "+275760-01-01", "id": 1},
                        {"t": 5, "id": 1}, {"t": "2026-01-01T00:00:00\ud800", "id": 1}, {"id": 1}]


@pytest.mark.parametrize("cursor", FORGED_ALERT_CURSORS)
async def test_forged_alert_page_tokens_are_invalid(channel, cursor):
    alerts = alert_pb2_grpc.AlertServiceStub(channel)
    token = _forged(cursor, ALERT_FILTERS)
    assert "page_token" in await _rejected(alerts.ListAlerts, alert_pb2.ListAlertsRequest(page_token=token))


@pytest.mark.parametrize("cursor", [{"id": 10**30}, {"id": -(10**30)}, {"id": True}, {"id": 1.5}, {"id": "7"}])
async def test_forged_job_page_tokens_are_invalid(channel, cursor):
    retrain = retrain_pb2_grpc.RetrainServiceStub(channel)
    token = _forged(cursor, {"model_id": "", "state": 0})
    assert "page_token" in await _rejected(retrain.ListJobs, retrain_pb2.ListJobsRequest(page_token=token))


@pytest.mark.parametrize("cursor", [{"m": 5}, {"m": ["a"]}, {"m": "a\ud800"}, {"m": "a\x00"}, {"m": "x" * 400}])
async def test_forged_model_page_tokens_are_invalid(channel, cursor):
    retrain = retrain_pb2_grpc.RetrainServiceStub(channel)
    token = _forged(cursor, {})
    assert "page_token" in await _rejected(retrain.ListModels, retrain_pb2.ListModelsRequest(page_token=token))


async def test_issued_page_tokens_still_page(channel):
    alerts = alert_pb2_grpc.AlertServiceStub(channel)
    for i in range(3):
        await alerts.CreateAlert(alert_pb2.CreateAlertRequest(alert=_alert(), request_id=f"page-{i}"), timeout=15)
    seen = []
    token = ""
    while True:
        page = await alerts.ListAlerts(alert_pb2.ListAlertsRequest(page_size=2, page_token=token), timeout=15)
        seen += [a.id for a in page.alerts]
        token = page.next_page_token
        if not token:
            break
    assert len(seen) == len(set(seen)) == 3


async def _raw(channel, method: str, payload: bytes, *, stream: bool = False):
    """Send bytes as the request of `method`; returns the error the server answered with."""
    if stream:
        call = channel.stream_stream(method)(iter([payload]), timeout=15)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            async for _ in call:
                pass
    else:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await channel.unary_unary(method)(payload, timeout=15)
    return err.value


def _deep_register_request(depth: int) -> bytes:
    request = retrain_pb2.RegisterModelRequest()
    s = request.model.training.params
    for _ in range(depth):
        s = s.fields["a"].struct_value
    return request.SerializeToString()


async def test_invalid_utf8_and_deep_nesting_are_invalid_argument(channel):
    bad_utf8 = alert_pb2.CreateAlertRequest(alert=_alert(), request_id="x").SerializeToString().replace(
        b"\x12\x01x", b"\x12\x01\xff")
    for method, payload, stream in (
            ("/closedloop.v1.AlertService/CreateAlert", bad_utf8, False),
            ("/closedloop.v1.AlertService/StreamAlerts", bad_utf8, True),
            ("/closedloop.v1.RetrainService/RegisterModel", _deep_register_request(200), False),
            ("/closedloop.v1.RetrainService/GetModel", b"\xff\xff\xff", False)):
        error = await _raw(channel, method, payload, stream=stream)
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, (method, error.code(), error.details())
    # and the server still serves
    alerts = alert_pb2_grpc.AlertServiceStub(channel)
    created = await alerts.CreateAlert(alert_pb2.CreateAlertRequest(alert=_alert()), timeout=15)
    assert created.id


NUL_ALERTS = [
    ("alert.labels['desk']", dict(labels={"desk": "f\x00x"})),
    ("alert.source", dict(source="mon\x00itor")),
    ("alert.model_id", dict(model_id="fx\x00")),
    ("alert.type", dict(type="dr\x00ift")),
]


@pytest.mark.parametrize("field,fields", NUL_ALERTS, ids=[f for f, _ in NUL_ALERTS])
async def test_nul_in_alert_text_is_invalid_and_names_the_field(channel, field, fields):
    alerts = alert_pb2_grpc.AlertServiceStub(channel)
    found = await _rejected(alerts.CreateAlert, alert_pb2.CreateAlertRequest(alert=_alert(**fields)))
    assert any(f.startswith(field) for f in found), found
    found = await _rejected(alerts.CreateAlert, alert_pb2.CreateAlertRequest(alert=_alert(), request_id="r\x00"))
    assert "request_id" in found


async def test_nul_elsewhere_is_invalid(channel):
    retrain = retrain_pb2_grpc.RetrainServiceStub(channel)
    found = await _rejected(retrain.SubmitRetrain, retrain_pb2.SubmitRetrainRequest(
        model_id="fx-eurusd", reason="because\x00"))
    assert "reason" in found
    rules = rules_pb2_grpc.RuleServiceStub(channel)
    found = await _rejected(rules.ApplyRules, rules_pb2.ApplyRulesRequest(source="", filename="a\x00.rules"))
    assert "filename" in found


@pytest.mark.parametrize("request_", [
    retrain_pb2.GetFeedbackReportRequest(end_time=Timestamp(seconds=253402300799)),
    retrain_pb2.GetFeedbackReportRequest(end_time=Timestamp(seconds=-62135596000)),
    retrain_pb2.GetFeedbackReportRequest(false_negative_window=Duration(seconds=315576000000)),
], ids=["end-9999", "end-year-1", "window-10000y"])
async def test_report_windows_that_leave_the_calendar_are_invalid(channel, request_):
    retrain = retrain_pb2_grpc.RetrainServiceStub(channel)
    found = await _rejected(retrain.GetFeedbackReport, request_)
    assert {"end_time", "false_negative_window"} & set(found), found


async def test_cooldowns_that_leave_the_calendar_are_invalid(channel):
    """A 10,000-year cooldown was accepted, then every later alert of the model failed in the decision."""
    retrain = retrain_pb2_grpc.RetrainServiceStub(channel)
    model = json_format.ParseDict(synthetic_model("m1"), retrain_pb2.Model())
    model.cooldown_override.seconds = 315576000000
    found = await _rejected(retrain.RegisterModel, retrain_pb2.RegisterModelRequest(model=model))
    assert "model.cooldown_override" in found
    rules = rules_pb2_grpc.RuleServiceStub(channel)
    source = 'rule r:\n    when type == "drift"\n    then retrain full priority high cooldown 99999999999d\n'
    assert "source" in await _rejected(rules.ApplyRules, rules_pb2.ApplyRulesRequest(source=source))
