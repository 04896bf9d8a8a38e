"""The v1 API's conventions through the real server and client (README, "Proto style notes"): request
id fields, the optional synthetic target, trained vs serving version, feedback figure names, and
timestamps stored to the microsecond."""

from __future__ import annotations

import datetime as dt

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from closedloop import AsyncClient
from closedloop.server.app import create_server
from closedloop.v1 import alert_pb2, retrain_pb2

from .conftest import make_settings
from .helpers import synthetic_model
from .test_alerts import violations


def test_requests_name_their_resource_by_its_own_id_field():
    # A request acting on one resource uses the resource's identifier field name, at field 1.
    for request, resource, name in [
        (alert_pb2.GetAlertRequest, alert_pb2.Alert, "id"),
        (alert_pb2.UpdateAlertStateRequest, alert_pb2.Alert, "id"),
        (retrain_pb2.GetJobRequest, retrain_pb2.RetrainJob, "id"),
        (retrain_pb2.CancelJobRequest, retrain_pb2.RetrainJob, "id"),
        (retrain_pb2.WatchJobRequest, retrain_pb2.RetrainJob, "id"),
        (retrain_pb2.GetModelRequest, retrain_pb2.Model, "model_id"),
        (retrain_pb2.RollbackModelRequest, retrain_pb2.Model, "model_id"),
    ]:
        assert request.DESCRIPTOR.fields_by_name[name].number == 1, request
        assert name in resource.DESCRIPTOR.fields_by_name
    # The job requests' field was job_id; the number is unchanged, so old clients' bytes decode.
    old_bytes = b"\x0a\x0242"  # field 1, length-delimited, "42": what GetJobRequest(job_id="42") sent
    assert retrain_pb2.GetJobRequest.FromString(old_bytes).id == "42"


async def test_bad_ids_name_the_id_field(client):
    for call in (client.get_alert, client.get_job, client.cancel_job):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await call("not-a-number")
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "id" in violations(err.value), violations(err.value)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await client.update_alert_state(alert_id="x", state="resolved")
    assert "id" in violations(err.value)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await client.get_job(job_id="999999")  # the client keeps its keyword
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


async def test_synthetic_models_register_without_target(client):
    spec = synthetic_model("syn-cls")
    del spec["training"]["target"]
    model = await client.register_model(spec)
    assert model.training.target == "direction"  # chosen by the classification metric, and stored
    assert (await client.get_model("syn-cls")).training.target == "direction"

    regression = synthetic_model("syn-reg")
    regression["training"].update(estimator="linear_model.Ridge", params={}, metric="rmse")
    del regression["training"]["target"]
    assert (await client.register_model(regression)).training.target == "next_return"


@pytest.mark.parametrize("training, message", [
    ({"target": "y"}, "synthetic source"),                        # not a column the source produces
    ({"target": "", "synthetic": None, "file": {"path": "/data/x.csv"}}, "required"),  # others need one
])
async def test_a_target_the_source_cannot_give_is_invalid(client, training, message):
    spec = synthetic_model("bad-target")
    spec["training"].update({k: v for k, v in training.items() if v is not None})
    for k in [k for k, v in training.items() if v is None]:
        del spec["training"][k]
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await client.register_model(spec)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    found = violations(err.value)
    assert message in found.get("model.training.target", ""), found


async def test_observe_time_is_stored_to_the_microsecond(client):
    # The proto comment promises truncation to the microsecond, everywhere the time comes back.
    sent = Timestamp(seconds=int(dt.datetime.now(dt.timezone.utc).timestamp()) - 60, nanos=123_456_789)
    created = await client.create_alert("ts-model", "drift", "low", observe_time=sent, request_id="ts-1")
    assert (created.observe_time.seconds, created.observe_time.nanos) == (sent.seconds, 123_456_000)
    fetched = await client.get_alert(created.id)
    assert fetched.observe_time == created.observe_time
    # The filters truncate the same way: a start_time inside the same microsecond still finds it.
    listed = await client.list_alerts(model_id="ts-model", start_time=sent)
    assert [a.id for a in listed.alerts] == [created.id]
    # The idempotent retry of the same request returns the stored alert.
    again = await client.create_alert("ts-model", "drift", "low", observe_time=sent, request_id="ts-1")
    assert again.id == created.id and again.observe_time == created.observe_time


RULES = """
rule drift_retrain:
    when type == "drift" and metrics.drift_score > 0.25
    then retrain full priority high
"""


@pytest.fixture
async def live(database_url, tmp_path):
    srv, port = await create_server(make_settings(database_url, tmp_path, run_workers=True, workers=1))
    try:
        async with AsyncClient(f"127.0.0.1:{port}", timeout=60) as client:
            yield client
    finally:
        await srv.stop(2)


async def finish(client, job_id: str) -> retrain_pb2.RetrainJob:
    last = None
    async for job in client.watch_job(job_id):
        last = job
    return last


async def test_a_kept_champion_stays_the_serving_version_and_feedback_says_what_it_counts(live):
    client = live
    # A margin no challenger can clear: the first version is promoted (there is no champion), every
    # later challenger is trained and kept aside.
    spec = synthetic_model("fx-kept")
    spec["training"]["promotion_margin"] = 1.0
    await client.register_model(spec)
    await client.apply_rules(RULES, "conventions.rules")
    first = await finish(client, (await client.submit_retrain("fx-kept")).id)
    assert (first.promoted, first.trained_version, first.serving_version) == (True, 1, 1)

    alert = await client.create_alert("fx-kept", "drift", "high", metrics={"drift_score": 0.5})
    job = await finish(client, alert.actions[0].job_id)
    assert job.state == retrain_pb2.JOB_STATE_SUCCEEDED and not job.promoted
    assert (job.trained_version, job.serving_version) == (2, 1)
    assert job.new_version == job.trained_version  # deprecated, same figure
    assert (await client.get_job(job.id)).serving_version == 1
    assert (await client.get_model("fx-kept")).current_version == job.serving_version

    report = await client.feedback_report(model_id="fx-kept")
    [rule] = [r.stats for r in report.rules if r.rule == "drift_retrain"]
    assert (rule.retrains, rule.succeeded, rule.finished_rate) == (1, 1, 1.0)  # it finished...
    assert (rule.helped, rule.helped_rate) == (0, 0.0)                          # ...but did not help
    terms = {d.term for d in report.definitions}
    assert {"finished rate", "helped rate"} <= terms and "success rate" not in terms


@pytest.mark.parametrize("bad", [Timestamp(seconds=10**13), Timestamp(seconds=1, nanos=-5)])
async def test_times_out_of_range_are_invalid_argument_naming_the_field(client, bad):
    later = Timestamp(seconds=2_000_000_000)
    calls = [
        (lambda: client.list_alerts(start_time=bad), "start_time"),
        (lambda: client.list_alerts(end_time=bad), "end_time"),
        (lambda: client.feedback_report(start_time=bad), "start_time"),
        (lambda: client.backtest_rules("", bad, later), "start_time"),
        (lambda: client.evaluate_rules(alert_pb2.Alert(model_id="m", type="drift", severity=1, create_time=bad),
                                       source="rule r:\n    when type == \"drift\"\n    then record\n"),
         "alert.create_time"),
    ]
    for call, field in calls:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await call()
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, field
        assert field in violations(err.value), violations(err.value)
