"""Operating the service (issue 10, points 7-10): replicas keep following rule changes after the
database dropped them, a hung database answers UNAVAILABLE within --db-timeout, health follows the
database and SIGTERM drains, and nothing is exposed on the network by accident."""

from __future__ import annotations

import asyncio
import signal

import asyncpg
import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from closedloop import AsyncClient
from closedloop.server.api.auth import new_token_line
from closedloop.server.app import create_server
from closedloop.server.errors import ConfigError

from .conftest import make_settings
from .helpers import free_port, start_server_process, stop_process
from .pgproxy import PgProxy

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING

NEW_RULES = """
rule drift_now:
    when type == "drift" and metrics.drift_score > 0.1
    then retrain full priority high cooldown 1h
"""


async def _adopted_version(client: AsyncClient, wanted: int, attempts: int = 150) -> int:
    """The rule set version the server behind `client` decides with, once it is `wanted` (or the last seen)."""
    seen = 0
    for _ in range(attempts):
        try:
            seen = (await client.create_alert("follower", "drift", "low", metrics={"drift_score": 0.01})).rule_set_version
        except grpc.aio.AioRpcError as exc:
            assert exc.code() == grpc.StatusCode.UNAVAILABLE, exc.details()
        if seen == wanted:
            return seen
        await asyncio.sleep(0.1)
    return seen


async def _health(target: str, attempts: int, wanted: int) -> int:
    """Poll the health check until it says `wanted` (or give up); returns the last status."""
    status = None
    async with grpc.aio.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        for _ in range(attempts):
            try:
                status = (await stub.Check(health_pb2.HealthCheckRequest(), timeout=2)).status
            except grpc.aio.AioRpcError:
                status = None
            if status == wanted:
                break
            await asyncio.sleep(0.1)
    return status


async def test_a_replica_follows_rule_changes_after_the_database_dropped_its_connections(database_url, tmp_path):
    a, a_port = await create_server(make_settings(database_url, tmp_path / "a"))
    b, b_port = await create_server(make_settings(database_url, tmp_path / "b"))
    try:
        async with AsyncClient(f"127.0.0.1:{a_port}", retries=4) as ca, \
                AsyncClient(f"127.0.0.1:{b_port}", retries=0, timeout=10) as cb:
            before = (await cb.create_alert("follower", "drift", "low")).rule_set_version
            # What a PostgreSQL restart does to every session: a server-side disconnect.
            admin = await asyncpg.connect(database_url)
            try:
                await admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                    "WHERE datname = current_database() AND pid <> pg_backend_pid()")
            finally:
                await admin.close()
            applied = (await ca.apply_rules(NEW_RULES, "new.rules")).version
            assert applied != before
            assert await _adopted_version(cb, applied) == applied
    finally:
        await b.stop(1)
        await a.stop(1)


async def test_a_replica_rereads_what_it_missed_while_disconnected(database_url, tmp_path):
    proxy = PgProxy(database_url)
    await proxy.start()
    a, a_port = await create_server(make_settings(database_url, tmp_path / "a"))
    b, b_port = await create_server(make_settings(proxy.url, tmp_path / "b", db_timeout=1.0))
    try:
        async with AsyncClient(f"127.0.0.1:{a_port}") as ca, \
                AsyncClient(f"127.0.0.1:{b_port}", retries=0, timeout=10) as cb:
            await cb.create_alert("follower", "drift", "low")
            await proxy.cut()
            # The NOTIFY of this change goes out while B listens to nothing: only a re-read can find it.
            applied = (await ca.apply_rules(NEW_RULES, "new.rules")).version
            await proxy.start()
            assert await _adopted_version(cb, applied) == applied
    finally:
        await b.stop(1)
        await a.stop(1)
        await proxy.cut()


async def test_a_hung_database_answers_unavailable_and_recovers(database_url, tmp_path):
    proxy = PgProxy(database_url)
    await proxy.start()
    srv, port = await create_server(make_settings(proxy.url, tmp_path, db_timeout=1.0))
    try:
        # The client's own deadline is 10 s: the server must answer before it, not wait it out.
        async with AsyncClient(f"127.0.0.1:{port}", retries=0, timeout=10) as c:
            await c.create_alert("hung", "drift", "low")
            proxy.freeze()
            for call in (lambda: c.create_alert("hung", "drift", "low"), lambda: c.list_alerts(),
                         lambda: c.create_alert("hung", "drift", "low")):
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    await call()
                assert err.value.code() == grpc.StatusCode.UNAVAILABLE, err.value.details()
            proxy.thaw()
            for _ in range(100):
                try:
                    await c.create_alert("hung", "drift", "low")
                    break
                except grpc.aio.AioRpcError as exc:
                    assert exc.code() == grpc.StatusCode.UNAVAILABLE, exc.details()
                    await asyncio.sleep(0.1)
            else:
                pytest.fail("the server did not recover after the database thawed")
    finally:
        proxy.thaw()
        await srv.stop(1)
        await proxy.cut()


async def test_a_hung_database_under_load_answers_unavailable_before_the_client_deadline(database_url, tmp_path):
    """With the defaults (--db-timeout 5 s, client deadline 10 s), calls queued behind hung ones, in the
    group commit or waiting for a pool connection, also answer UNAVAILABLE rather than time out."""
    proxy = PgProxy(database_url)
    await proxy.start()
    srv, port = await create_server(make_settings(proxy.url, tmp_path))
    try:
        async with AsyncClient(f"127.0.0.1:{port}", retries=0, timeout=10) as c:
            await c.create_alert("hung", "drift", "low")
            proxy.freeze()
            for _ in range(2):  # and a second wave, while the database still hangs
                results = await asyncio.gather(
                    *[c.create_alert("hung", "drift", "low", metrics={"i": i}) for i in range(40)],
                    *[c.list_alerts() for _ in range(20)], return_exceptions=True)
                codes = {r.code() if isinstance(r, grpc.aio.AioRpcError) else type(r).__name__ for r in results}
                assert codes == {grpc.StatusCode.UNAVAILABLE}, codes
    finally:
        proxy.thaw()
        await srv.stop(1)
        await proxy.cut()


@pytest.mark.parametrize("outage", ["cut", "freeze"])
async def test_health_follows_the_database(database_url, tmp_path, outage):
    proxy = PgProxy(database_url)
    await proxy.start()
    srv, port = await create_server(make_settings(proxy.url, tmp_path, db_timeout=1.0))
    target = f"127.0.0.1:{port}"
    try:
        assert await _health(target, 1, SERVING) == SERVING
        if outage == "cut":
            await proxy.cut()
        else:
            proxy.freeze()
        assert await _health(target, 100, NOT_SERVING) == NOT_SERVING
        if outage == "cut":
            await proxy.start()
        else:
            proxy.thaw()
        assert await _health(target, 150, SERVING) == SERVING
    finally:
        proxy.thaw()
        await srv.stop(1)
        await proxy.cut()


async def test_sigterm_drains_before_refusing_calls(database_url, tmp_path):
    proc, target = start_server_process(database_url, tmp_path, "--no-run-workers", "--drain", "3")
    try:
        async with AsyncClient(target, retries=0, timeout=10) as c:
            await c.create_alert("draining", "drift", "low")
            proc.send_signal(signal.SIGTERM)
            # Load balancers see NOT_SERVING at once...
            assert await _health(target, 50, NOT_SERVING) == NOT_SERVING
            # ...while calls still get answers until the drain ends.
            assert (await c.create_alert("draining", "drift", "low")).model_id == "draining"
        assert proc.wait(30) == 0
    finally:
        stop_process(proc)


def _tokens(tmp_path):
    _, line = new_token_line("ingest", "desk")
    path = tmp_path / "tokens"
    path.write_text(line + "\n")
    return path


async def test_tokens_in_clear_text_off_loopback_need_allow_insecure(database_url, tmp_path):
    tokens = _tokens(tmp_path)
    with pytest.raises(ConfigError, match="clear text.*--allow-insecure"):
        await create_server(make_settings(database_url, tmp_path, listen="0.0.0.0:0", auth_tokens=tokens))
    srv, _ = await create_server(make_settings(database_url, tmp_path, listen="0.0.0.0:0", auth_tokens=tokens,
                                               allow_insecure=True))
    await srv.stop(1)


async def test_tokens_over_tls_off_loopback_start_without_allow_insecure(database_url, tmp_path):
    from .test_server import _make_certs

    certs = _make_certs(tmp_path)
    srv, _ = await create_server(make_settings(database_url, tmp_path, listen="0.0.0.0:0", auth_tokens=_tokens(tmp_path),
                                               tls_cert=certs["server.pem"], tls_key=certs["server.key"]))
    await srv.stop(1)


async def test_the_http_side_off_loopback_needs_tokens_and_tls_or_allow_insecure(database_url, tmp_path):
    """The HTTP side ingests alerts and serves metrics: off loopback it follows gRPC's rule."""
    from closedloop.server.api.auth import new_token_line

    port = free_port()
    for alias in ("http_listen", "metrics_listen"):  # --metrics-listen is the deprecated alias
        with pytest.raises(ConfigError, match="auth-tokens"):
            await create_server(make_settings(database_url, tmp_path, **{alias: f"0.0.0.0:{port}"}, allow_insecure=True))
    reader_token, line = new_token_line("read", "scraper")
    tokens = tmp_path / "http-tokens"
    tokens.write_text(line + "\n")
    with pytest.raises(ConfigError, match="TLS is off"):
        await create_server(make_settings(database_url, tmp_path, http_listen=f"0.0.0.0:{port}", auth_tokens=tokens))
    srv, _ = await create_server(make_settings(database_url, tmp_path, http_listen=f"0.0.0.0:{port}",
                                               auth_tokens=tokens, allow_insecure=True))
    try:
        async def scrape(headers: bytes) -> str:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n" + headers + b"\r\n")
            body = (await reader.read()).decode()
            writer.close()
            return body

        assert (await scrape(b"")).startswith("HTTP/1.1 401")
        authorized = await scrape(f"Authorization: Bearer {reader_token}\r\n".encode())
        assert authorized.startswith("HTTP/1.1 200") and "closedloop_rule_set_version" in authorized
    finally:
        await srv.stop(1)
