"""The client retries by gRPC's own retry policy, and a retried call still creates one thing.

Between the client and a real server sits a real gRPC proxy that forwards every call and then, for the
first N calls, throws the server's answer away and answers UNAVAILABLE (or RESOURCE_EXHAUSTED with a
pushback trailer): the worst case for a retry, the write committed but the reply lost.
"""

from __future__ import annotations

import json

import grpc
import pytest

from closedloop import AsyncClient, Client
from closedloop.client import service_config


class LossyProxy:
    """Forwards raw request bytes to `upstream`; drops the reply of the first `lose` calls."""

    def __init__(self, upstream: str, lose: int, code=grpc.StatusCode.UNAVAILABLE, pushback_ms: int | None = None):
        self.upstream = upstream
        self.lose = lose
        self.code = code
        self.pushback_ms = pushback_ms
        self.calls: list[str] = []

    async def start(self) -> str:
        self.channel = grpc.aio.insecure_channel(self.upstream)
        self.server = grpc.aio.server()
        proxy = self

        class Handler(grpc.GenericRpcHandler):
            def service(self, details):
                method = details.method

                async def forward(request: bytes, context):
                    proxy.calls.append(method)
                    reply = await proxy.channel.unary_unary(method)(request, timeout=10)
                    if len(proxy.calls) <= proxy.lose:
                        if proxy.pushback_ms is not None:
                            context.set_trailing_metadata((("grpc-retry-pushback-ms", str(proxy.pushback_ms)),))
                        await context.abort(proxy.code, "reply lost on the way back")
                    return reply

                return grpc.unary_unary_rpc_method_handler(forward)

        self.server.add_generic_rpc_handlers((Handler(),))
        port = self.server.add_insecure_port("127.0.0.1:0")
        await self.server.start()
        return f"127.0.0.1:{port}"

    async def stop(self) -> None:
        await self.server.stop(0)
        await self.channel.close()


async def _alerts(server) -> int:
    async with server.pool.acquire() as conn:
        return await conn.fetchval("SELECT count(*) FROM monitoring_alert_triggers")


@pytest.mark.parametrize("code", [grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED])
async def test_a_retried_create_alert_is_stored_once(server, code):
    proxy = LossyProxy(server.test_target, lose=2, code=code, pushback_ms=10)
    target = await proxy.start()
    try:
        async with AsyncClient(target, retries=4, backoff=0.01, max_backoff=0.05) as c:
            alert = await c.create_alert("retried", "drift", "high", metrics={"drift_score": 0.3})
        assert len(proxy.calls) == 3  # two lost replies, then the third attempt's reply arrived
        assert alert.model_id == "retried"
        assert await _alerts(server) == 1
    finally:
        await proxy.stop()


async def test_retries_give_up_after_the_policy_attempts(server):
    proxy = LossyProxy(server.test_target, lose=100)
    target = await proxy.start()
    try:
        async with AsyncClient(target, retries=2, backoff=0.01, max_backoff=0.02) as c:
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await c.create_alert("given-up", "drift", "low")
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        assert len(proxy.calls) == 3  # the first try and two retries
        assert await _alerts(server) == 1  # every attempt carried the same request_id
    finally:
        await proxy.stop()


async def test_a_negative_pushback_stops_the_retries(server):
    proxy = LossyProxy(server.test_target, lose=100, code=grpc.StatusCode.RESOURCE_EXHAUSTED, pushback_ms=-1)
    target = await proxy.start()
    try:
        async with AsyncClient(target, retries=4, backoff=0.01) as c:
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await c.create_alert("pushed-back", "drift", "low")
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert len(proxy.calls) == 1
    finally:
        await proxy.stop()


async def test_rollback_is_never_retried(server):
    proxy = LossyProxy(server.test_target, lose=100)
    target = await proxy.start()
    try:
        async with AsyncClient(target, retries=4, backoff=0.01) as c:
            with pytest.raises(grpc.aio.AioRpcError):
                await c.rollback_model("nothing-to-roll-back")
        assert proxy.calls == ["/closedloop.v1.RetrainService/RollbackModel"]
    finally:
        await proxy.stop()


async def test_the_blocking_client_uses_the_same_policy(server):
    import asyncio

    proxy = LossyProxy(server.test_target, lose=1)
    target = await proxy.start()
    try:
        def send():
            with Client(target, retries=3, backoff=0.01) as c:
                return c.create_alert("blocking-retried", "risk", "low")

        assert (await asyncio.to_thread(send)).model_id == "blocking-retried"
        assert len(proxy.calls) == 2
        assert await _alerts(server) == 1
    finally:
        await proxy.stop()


def test_service_config_caps_attempts_and_exempts_rollback():
    config = json.loads(service_config(retries=30, backoff=0.1, max_backoff=2.0, wait_for_ready=True))
    everything, rollback = config["methodConfig"]
    assert everything["retryPolicy"]["maxAttempts"] == 5
    assert everything["retryPolicy"]["retryableStatusCodes"] == ["UNAVAILABLE", "RESOURCE_EXHAUSTED"]
    assert "retryPolicy" not in rollback
    assert rollback["name"] == [{"service": "closedloop.v1.RetrainService", "method": "RollbackModel"}]
    no_retries = json.loads(service_config(retries=0, backoff=0.1, max_backoff=2.0, wait_for_ready=False))
    assert "retryPolicy" not in no_retries["methodConfig"][0]
