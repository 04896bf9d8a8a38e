"""One bad alert never fails its neighbours in a group commit (issue 10, point 4).

A poisoned alert is sent among good ones, under concurrent unary load and under StreamAlerts: one that
validation lets through but the database write fails on (a store call patched to fail for its
request_id), and one with a real NUL character. Every good alert is stored and answered OK; only the
poisoned one gets an error, and it is INVALID_ARGUMENT.
"""

from __future__ import annotations

import asyncio

import asyncpg
import grpc
import pytest

from closedloop.server.store import alerts as alert_store
from closedloop.v1 import alert_pb2, alert_pb2_grpc, common_pb2

from .test_alerts import count_alerts

POISON = "poison-1"


@pytest.fixture
async def stub(server):
    async with grpc.aio.insecure_channel(server.test_target) as ch:
        yield alert_pb2_grpc.AlertServiceStub(ch)


@pytest.fixture(params=["refused-by-database", "nul-label"])
def poison(request, monkeypatch):
    """The poisoned request, and the sizes of the batches it was written in (when patched)."""
    labels = {"desk": "fx"}
    batches: list[int] = []
    if request.param == "refused-by-database":
        real = alert_store.insert_alerts
        first = []

        async def insert_alerts(conn, alerts, *args, **kwargs):
            if any(a.request_id == POISON for a in alerts):
                batches.append(len(alerts))
                raise asyncpg.exceptions.CharacterNotInRepertoireError("invalid byte sequence for encoding")
            if not first:
                # The first write holds the writer a moment, so the requests sent meanwhile (the
                # poison among them) queue up and share a batch, however fast or slow the machine:
                # otherwise the poison could be written alone, and the test would prove nothing.
                first.append(len(alerts))
                await asyncio.sleep(0.3)
            return await real(conn, alerts, *args, **kwargs)

        monkeypatch.setattr(alert_store, "insert_alerts", insert_alerts)
    else:
        labels = {"desk": "f\x00x"}
    return _request(POISON, labels), batches


def _request(request_id: str, labels: dict | None = None) -> alert_pb2.CreateAlertRequest:
    alert = alert_pb2.Alert(model_id="fx-eurusd", type="drift", severity=common_pb2.SEVERITY_LOW,
                            metrics={"drift_score": 0.01}, labels=labels or {"desk": "fx"})
    return alert_pb2.CreateAlertRequest(alert=alert, request_id=request_id)


async def _outcome(call):
    try:
        await call
        return grpc.StatusCode.OK
    except grpc.aio.AioRpcError as exc:
        return exc.code()


async def test_poisoned_alert_under_unary_load(server, stub, poison):
    bad, batches = poison
    requests = [_request(f"good-{i}") for i in range(60)]
    requests.insert(30, bad)
    outcomes = await asyncio.gather(*(_outcome(stub.CreateAlert(r, timeout=30)) for r in requests))
    by_id = dict(zip((r.request_id for r in requests), outcomes))
    assert by_id.pop(POISON) == grpc.StatusCode.INVALID_ARGUMENT
    assert set(by_id.values()) == {grpc.StatusCode.OK}, by_id
    assert await count_alerts(server) == 60
    if batches:  # the patched case: the poison did share a batch with good alerts
        assert max(batches) > 1, batches


async def test_poisoned_alert_in_a_stream_among_other_streams(server, stub, poison):
    bad, batches = poison

    async def stream(requests: list) -> tuple[int, grpc.StatusCode]:
        replies = 0
        try:
            async for _ in stub.StreamAlerts(iter(requests), timeout=30):
                replies += 1
            return replies, grpc.StatusCode.OK
        except grpc.aio.AioRpcError as exc:
            return replies, exc.code()

    good_streams = [[_request(f"s{s}-{i}") for i in range(20)] for s in range(4)]
    poisoned_stream = [_request(f"p-{i}") for i in range(10)] + [bad]
    results = await asyncio.gather(*(stream(s) for s in [*good_streams, poisoned_stream]))
    assert results[:4] == [(20, grpc.StatusCode.OK)] * 4
    # The poisoned stream: its good alerts answered, then the error for the bad one.
    assert results[4] == (10, grpc.StatusCode.INVALID_ARGUMENT)
    assert await count_alerts(server) == 90
    if batches:
        assert max(batches) > 1, batches
