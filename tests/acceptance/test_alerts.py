"""AlertService through the real client: round trips, paging, validation, idempotency, workflow."""

from __future__ import annotations

import asyncio
import datetime as dt
import math

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from closedloop.v1 import alert_pb2, common_pb2


def violations(exc: grpc.aio.AioRpcError) -> dict[str, str]:
    """field -> description from the google.rpc.BadRequest details of an INVALID_ARGUMENT."""
    status = rpc_status.from_call(exc)
    assert status is not None, "INVALID_ARGUMENT must carry google.rpc.Status details"
    out = {}
    for detail in status.details:
        bad = error_details_pb2.BadRequest()
        if detail.Unpack(bad):
            out.update({v.field: v.description for v in bad.field_violations})
    return out


async def count_alerts(server) -> int:
    async with server.pool.acquire() as conn:
        return await conn.fetchval("SELECT count(*) FROM monitoring_alert_triggers")


async def test_create_then_get_round_trip(client):
    observed = dt.datetime(2026, 11, 1, 12, 0, tzinfo=dt.timezone.utc)
    created = await client.create_alert("fx-eurusd", "drift", "high", metrics={"drift_score": 0.12},
                                        labels={"desk": "fx"}, source="monitor-a", observe_time=observed)
    assert created.id.isdigit()
    assert created.state == alert_pb2.ALERT_STATE_OPEN  # model not registered; 0.12 matches no rule
    fetched = await client.get_alert(created.id)
    assert fetched.model_id == "fx-eurusd" and fetched.type == "drift"
    assert fetched.severity == common_pb2.SEVERITY_HIGH
    assert dict(fetched.metrics) == {"drift_score": 0.12}
    assert dict(fetched.labels) == {"desk": "fx"}
    assert fetched.observe_time.ToDatetime(tzinfo=dt.timezone.utc) == observed
    assert fetched.create_time.seconds > 0 and fetched.rule_set_version >= 1


async def test_reply_is_sent_after_commit(client, server):
    alert = await client.create_alert("m1", "drift", "low", metrics={"drift_score": 0.01})
    async with server.pool.acquire() as conn:
        assert await conn.fetchval("SELECT model_id FROM monitoring_alert_triggers WHERE id = $1",
                                   int(alert.id)) == "m1"


async def test_get_unknown_alert_is_not_found(client):
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await client.get_alert("987654")
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize("kwargs, field", [
    (dict(model_id="", type="drift", severity="high"), "alert.model_id"),
    (dict(model_id="x" * 129, type="drift", severity="high"), "alert.model_id"),
    (dict(model_id="bad id!", type="drift", severity="high"), "alert.model_id"),
    (dict(model_id="m", type="", severity="high"), "alert.type"),
    (dict(model_id="m", type="Drift Alert", severity="high"), "alert.type"),
    (dict(model_id="m", type="drift", severity=0), "alert.severity"),
    (dict(model_id="m", type="drift", severity=9), "alert.severity"),
    (dict(model_id="m", type="drift", severity="high", metrics={"x": math.nan}), "alert.metrics['x']"),
    (dict(model_id="m", type="drift", severity="high", metrics={"x": math.inf}), "alert.metrics['x']"),
    (dict(model_id="m", type="drift", severity="high", metrics={"x": -math.inf}), "alert.metrics['x']"),
    (dict(model_id="m", type="drift", severity="high", metrics={f"k{i}": 1.0 for i in range(65)}), "alert.metrics"),
    (dict(model_id="m", type="drift", severity="high", labels={f"k{i}": "v" for i in range(65)}), "alert.labels"),
    (dict(model_id="m", type="drift", severity="high", metrics={"Bad Key": 1.0}), "alert.metrics['Bad Key']"),
    (dict(model_id="m", type="drift", severity="high", labels={"desk": "x" * 1025}), "alert.labels['desk']"),
    (dict(model_id="m", type="drift", severity="high", source="s" * 257), "alert.source"),
    (dict(model_id="m", type="drift", severity="high",
          observe_time=dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=2)), "alert.observe_time"),
    (dict(model_id="m", type="drift", severity="high", request_id="r" * 129), "request_id"),
])
async def test_bad_input_is_rejected_naming_the_field_and_nothing_is_written(client, server, kwargs, field):
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await client.create_alert(**kwargs)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in violations(err.value), violations(err.value)
    assert await count_alerts(server) == 0


async def test_all_violations_reported_at_once(client):
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await client.create_alert("", "", 0, metrics={"x": math.nan})
    assert {"alert.model_id", "alert.type", "alert.severity", "alert.metrics['x']"} <= set(violations(err.value))


async def test_same_request_id_returns_the_stored_alert(client, server):
    first = await client.create_alert("m1", "drift", "high", metrics={"drift_score": 0.1}, request_id="req-1")
    again = await client.create_alert("m1", "drift", "high", metrics={"drift_score": 0.1}, request_id="req-1")
    assert again == first
    assert await count_alerts(server) == 1


async def test_ten_duplicates_at_once_make_one_row(client, server):
    replies = await asyncio.gather(*[
        client.create_alert("m1", "risk", "critical", metrics={"risk_score": 10}, request_id="burst")
        for _ in range(10)])
    assert len({r.id for r in replies}) == 1
    assert all(r == replies[0] for r in replies)
    assert await count_alerts(server) == 1


async def test_same_request_id_with_other_payload_is_already_exists(client, server):
    await client.create_alert("m1", "drift", "high", metrics={"drift_score": 0.1}, request_id="req-2")
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await client.create_alert("m1", "drift", "high", metrics={"drift_score": 0.9}, request_id="req-2")
    assert err.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert await count_alerts(server) == 1


async def test_list_filters_and_pages(client):
    base = dt.datetime(2026, 10, 1, tzinfo=dt.timezone.utc)
    for i in range(7):
        await client.create_alert("pager", "drift" if i % 2 else "risk", "low", metrics={"n": i},
                                  observe_time=base + dt.timedelta(minutes=i))
    await client.create_alert("other", "drift", "low", observe_time=base)
    seen, token = [], ""
    while True:
        page = await client.list_alerts(model_id="pager", page_size=3, page_token=token)
        assert len(page.alerts) <= 3
        seen += [int(a.metrics["n"]) for a in page.alerts]
        token = page.next_page_token
        if not token:
            break
    assert seen == [6, 5, 4, 3, 2, 1, 0]  # newest first, no gaps or repeats
    drift = await client.list_alerts(model_id="pager", type="drift")
    assert sorted(int(a.metrics["n"]) for a in drift.alerts) == [1, 3, 5]
    window = await client.list_alerts(start_time=base + dt.timedelta(minutes=2),
                                      end_time=base + dt.timedelta(minutes=4))
    assert sorted(int(a.metrics["n"]) for a in window.alerts) == [2, 3]
    opened = await client.list_alerts(model_id="pager", state="open", page_size=1000)
    assert len(opened.alerts) == 7


async def test_paging_bad_arguments(client):
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await client.list_alerts(page_size=-1)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "page_size" in violations(err.value)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await client.list_alerts(page_token="not-a-token")
    assert "page_token" in violations(err.value)
    await client.create_alert("a", "drift", "low")
    await client.create_alert("a", "drift", "low")
    page = await client.list_alerts(model_id="a", page_size=1)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await client.list_alerts(model_id="b", page_size=1, page_token=page.next_page_token)
    assert "page_token" in violations(err.value)


async def test_page_size_is_capped(client):
    resp = await client.list_alerts(page_size=1_000_000)
    assert resp.next_page_token == ""


async def test_acknowledge_then_resolve_and_illegal_moves(client):
    alert = await client.create_alert("wf", "drift", "low")
    acked = await client.update_alert_state(alert.id, "acknowledged")
    assert acked.state == alert_pb2.ALERT_STATE_ACKNOWLEDGED
    resolved = await client.update_alert_state(alert.id, "resolved")
    assert resolved.state == alert_pb2.ALERT_STATE_RESOLVED
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await client.update_alert_state(alert.id, "acknowledged")
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await client.update_alert_state(alert.id, "open")
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await client.update_alert_state("424242", "resolved")
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


async def test_stream_replies_in_order_and_commits_each(client, server):
    def requests():
        for i in range(300):
            yield alert_pb2.CreateAlertRequest(
                alert=alert_pb2.Alert(model_id="stream", type="drift", severity=1, metrics={"i": float(i)}),
                request_id=f"s-{i}")

    replies = [r async for r in client.stream_alerts(requests())]
    assert [int(r.metrics["i"]) for r in replies] == list(range(300))
    assert await count_alerts(server) == 300


async def test_stream_bad_message_ends_stream_naming_position_and_keeps_the_rest(client, server):
    def requests():
        for i in range(5):
            alert = alert_pb2.Alert(model_id="stream", type="drift", severity=1, metrics={"i": float(i)})
            if i == 3:
                alert.metrics["bad"] = math.nan
            yield alert_pb2.CreateAlertRequest(alert=alert, request_id=f"b-{i}")

    got = []
    with pytest.raises(grpc.aio.AioRpcError) as err:
        async for r in client.stream_alerts(requests()):
            got.append(r)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "requests[3].alert.metrics['bad']" in violations(err.value)
    assert len(got) == 3
    assert await count_alerts(server) == 3


async def test_concurrent_creates_share_commits(client, server):
    before = server.ingestor.batches_committed
    await asyncio.gather(*[client.create_alert("gc", "drift", "low", metrics={"i": i}) for i in range(200)])
    batches = server.ingestor.batches_committed - before
    assert await count_alerts(server) == 200
    assert batches < 100, f"{batches} commits for 200 concurrent alerts: no group commit"


async def test_stream_flow_control_bounds_memory_while_the_database_is_slow(client, server, monkeypatch):
    import asyncpg

    from closedloop.server.api.alerts import STREAM_WINDOW

    total = 3000
    taken = 0
    submit_later = server.ingestor.submit_later

    async def counting_submit_later(new, received):
        nonlocal taken
        taken += 1
        return await submit_later(new, received)

    monkeypatch.setattr(server.ingestor, "submit_later", counting_submit_later)

    def requests():
        for i in range(total):
            yield alert_pb2.CreateAlertRequest(
                alert=alert_pb2.Alert(model_id="slow", type="drift", severity=1, labels={"blob": "x" * 1000}),
                request_id=f"fc-{i}")

    blocker = await asyncpg.connect(server.database_url)
    tx = blocker.transaction()
    await tx.start()
    await blocker.execute("LOCK TABLE monitoring_alert_triggers IN EXCLUSIVE MODE")  # the database stalls
    replies = []

    async def consume():
        async for r in client.stream_alerts(requests()):
            replies.append(r)

    task = asyncio.ensure_future(consume())
    await asyncio.sleep(1.5)
    stalled_at = taken
    await tx.rollback()  # the database is back
    await blocker.close()
    await asyncio.wait_for(task, 60)
    # While nothing commits, the server holds at most one window of requests; gRPC flow control
    # keeps the rest with the sender.
    assert stalled_at <= STREAM_WINDOW + 2, f"the server took {stalled_at} of {total} requests while stalled"
    assert len(replies) == total and await count_alerts(server) == total


async def test_created_reply_equals_the_stored_alert_on_every_path(client, server):
    """CreateAlert, StreamAlerts and BatchCreateAlerts build a new alert's reply from the request
    (api/convert.created_alert_message); it must equal what GetAlert reads back, including when the
    request carries output-only fields (ignored) and a time finer than the microsecond (truncated)."""
    from closedloop.v1 import alert_pb2_grpc

    sent = alert_pb2.Alert(model_id="reply-m", type="drift", severity=common_pb2.SEVERITY_LOW,
                           metrics={"drift_score": 0.01, "psi": 0.2}, labels={"desk": "fx", "venue": "ebs"},
                           source="mon", id="999", state=alert_pb2.ALERT_STATE_RESOLVED, rule_set_version=77,
                           actions=[alert_pb2.Action(id="5", rule="forged")])
    sent.observe_time.FromNanoseconds(1_790_000_000_123_456_789)
    sent.create_time.FromSeconds(1)
    async with grpc.aio.insecure_channel(server.test_target) as channel:
        stub = alert_pb2_grpc.AlertServiceStub(channel)
        replies = [await stub.CreateAlert(alert_pb2.CreateAlertRequest(alert=sent, request_id="reply-unary"))]

        async def one():
            yield alert_pb2.CreateAlertRequest(alert=sent, request_id="reply-stream")
        replies += [r async for r in stub.StreamAlerts(one())]
        batch = await stub.BatchCreateAlerts(alert_pb2.BatchCreateAlertsRequest(
            requests=[alert_pb2.CreateAlertRequest(alert=sent, request_id="reply-batch")]))
        replies.append(batch.results[0].alert)
        # A repeat is answered from the stored row: the same again.
        replies.append(await stub.CreateAlert(alert_pb2.CreateAlertRequest(alert=sent, request_id="reply-unary")))
    assert len({r.id for r in replies}) == 3
    for reply in replies:
        stored = await client.get_alert(reply.id)
        assert reply == stored
        assert reply.observe_time.nanos == 123_456_000 and not reply.actions and reply.state == alert_pb2.ALERT_STATE_OPEN


async def test_created_reply_with_decisions_equals_the_stored_alert(client):
    from .helpers import synthetic_model

    await client.register_model(synthetic_model("reply-acting"))
    created = await client.create_alert("reply-acting", "drift", "high", metrics={"drift_score": 0.9})
    assert created.actions, "the default drift rule decides something for a registered model"
    assert created == await client.get_alert(created.id)
