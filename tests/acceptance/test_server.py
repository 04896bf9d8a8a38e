"""The server as a whole: health, reflection, shutdown, restarts, an unreachable database, auth, TLS, client retries."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from closedloop import AsyncClient, Client
from closedloop.server.app import create_server
from closedloop.server.errors import ConfigError

from .conftest import make_settings
from .helpers import free_port
from .pgproxy import PgProxy


async def count_alerts(pool) -> int:
    async with pool.acquire() as conn:
        return await conn.fetchval("SELECT count(*) FROM monitoring_alert_triggers")


async def test_health_and_reflection(server):
    async with grpc.aio.insecure_channel(server.test_target) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", "closedloop.v1.AlertService", "closedloop.v1.RetrainService"):
            resp = await health.Check(health_pb2.HealthCheckRequest(service=service))
            assert resp.status == health_pb2.HealthCheckResponse.SERVING
        refl = reflection_pb2_grpc.ServerReflectionStub(channel)
        replies = refl.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
        names = set()
        async for reply in replies:
            names |= {s.name for s in reply.list_services_response.service}
        assert {"closedloop.v1.AlertService", "closedloop.v1.RuleService", "closedloop.v1.RetrainService",
                "grpc.health.v1.Health"} <= names


async def test_graceful_shutdown_finishes_rpcs_in_flight(database_url, tmp_path):
    import asyncpg

    srv, port = await create_server(make_settings(database_url, tmp_path))
    probe = await asyncpg.connect(database_url)
    async with AsyncClient(f"127.0.0.1:{port}", retries=0, timeout=20) as c:
        await c.create_alert("inflight", "drift", "low")  # connected
        calls = [asyncio.ensure_future(c.create_alert("inflight", "drift", "low", metrics={"i": i}))
                 for i in range(200)]
        while await probe.fetchval("SELECT count(*) FROM monitoring_alert_triggers") < 20:
            await asyncio.sleep(0.001)
        await srv.stop(grace=5)
        results = await asyncio.gather(*calls, return_exceptions=True)
    ok = [r for r in results if not isinstance(r, Exception)]
    codes = {r.code() for r in results if isinstance(r, grpc.aio.AioRpcError)}
    assert len(ok) + sum(isinstance(r, grpc.aio.AioRpcError) for r in results) == len(results)
    # Refused at the door or answered: never an internal error, never an answer without a commit.
    assert codes <= {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED}, codes
    stored = {r["id"] for r in await probe.fetch("SELECT id FROM monitoring_alert_triggers")}
    await probe.close()
    assert {int(a.id) for a in ok} <= stored
    assert len(ok) >= 19


async def test_health_goes_not_serving_before_stop(database_url, tmp_path):
    srv, port = await create_server(make_settings(database_url, tmp_path, shutdown_grace=1.0))
    seen = []
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        watch = health.Watch(health_pb2.HealthCheckRequest(service=""))
        seen.append((await watch.read()).status)
        stopping = asyncio.ensure_future(srv.stop(grace=1))
        try:
            seen.append((await asyncio.wait_for(watch.read(), 5)).status)
        except (grpc.aio.AioRpcError, asyncio.TimeoutError):
            pass
        await stopping
    assert seen[0] == health_pb2.HealthCheckResponse.SERVING
    assert health_pb2.HealthCheckResponse.NOT_SERVING in seen[1:]


async def test_database_unreachable_answers_unavailable_fast_and_recovers(database_url, tmp_path):
    proxy = PgProxy(database_url)
    await proxy.start()
    srv, port = await create_server(make_settings(proxy.url, tmp_path))
    try:
        async with AsyncClient(f"127.0.0.1:{port}", retries=0, timeout=20) as c:
            await c.create_alert("db", "drift", "low")
            await proxy.cut()
            for call in (lambda: c.create_alert("db", "drift", "low"), lambda: c.list_alerts()):
                started = time.monotonic()
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    await call()
                assert err.value.code() == grpc.StatusCode.UNAVAILABLE, err.value.details()
                assert time.monotonic() - started < 10  # a hang guard, not a speed claim
            await proxy.start()
            for _ in range(50):  # the pool reconnects on its own
                try:
                    await c.create_alert("db", "drift", "low")
                    break
                except grpc.aio.AioRpcError:
                    await asyncio.sleep(0.1)
            assert await count_alerts(srv.pool) == 2
    finally:
        await srv.stop(1)
        await proxy.cut()


def test_unreachable_database_at_start_is_one_line_with_the_password_masked(tmp_path):
    port = free_port()
    result = subprocess.run(
        [sys.executable, "-m", "closedloop.server.cli", "serve", "--database-url",
         f"postgresql://trader:hunter2@127.0.0.1:{port}/closedloop", "--connect-timeout", "1",
         "--data-dir", str(tmp_path), "--listen", "127.0.0.1:0", "--log-format", "json"],
        capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("closedloop: cannot connect to the database at postgresql://trader:***@127.0.0.1")
    assert "hunter2" not in result.stderr and "Traceback" not in result.stderr


async def test_non_loopback_listen_needs_auth(database_url, tmp_path):
    with pytest.raises(ConfigError, match="auth-tokens"):
        await create_server(make_settings(database_url, tmp_path, listen="0.0.0.0:0"))


async def test_bearer_tokens_and_roles(database_url, tmp_path):
    from closedloop.server.api.auth import new_token_line

    ingest, ingest_line = new_token_line("ingest", "desk-monitor")
    reader, reader_line = new_token_line("read", "dashboard")
    tokens = tmp_path / "tokens"
    tokens.write_text(f"# hashed tokens\n{ingest_line}\n{reader_line}\n")
    srv, port = await create_server(make_settings(database_url, tmp_path, auth_tokens=tokens))
    target = f"127.0.0.1:{port}"
    try:
        async with AsyncClient(target) as anonymous:
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await anonymous.create_alert("m", "drift", "low")
            assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
        async with AsyncClient(target, token="wrong") as wrong:
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await wrong.list_alerts()
            assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
        async with AsyncClient(target, token=reader) as r:
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await r.create_alert("m", "drift", "low")
            assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
            assert len((await r.list_alerts()).alerts) == 0
        async with AsyncClient(target, token=ingest) as w:
            await w.create_alert("m", "drift", "low")
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await w.apply_rules("rule r:\n    when type == \"x\"\n    then record\n")
            assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
        async with grpc.aio.insecure_channel(target) as channel:  # health needs no token
            resp = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
            assert resp.status == health_pb2.HealthCheckResponse.SERVING
    finally:
        await srv.stop(1)


def _make_certs(folder) -> dict:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, made with openssl."""
    def run(*args):
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=folder)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
        "-subj", "/CN=closedloop-test-ca")
    for name, ext in (("server", "subjectAltName=IP:127.0.0.1"), ("client", "extendedKeyUsage=clientAuth")):
        run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr",
            "-subj", f"/CN={name}")
        (folder / f"{name}.ext").write_text(ext + "\n")
        run("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", f"{name}.pem", "-days", "2", "-extfile", f"{name}.ext")
    return {n: (folder / n) for n in ("ca.pem", "server.pem", "server.key", "client.pem", "client.key")}


async def test_mutual_tls(database_url, tmp_path):
    certs = _make_certs(tmp_path)
    srv, port = await create_server(make_settings(
        database_url, tmp_path, tls_cert=certs["server.pem"], tls_key=certs["server.key"],
        tls_client_ca=certs["ca.pem"]))
    target = f"127.0.0.1:{port}"
    try:
        ca = certs["ca.pem"].read_bytes()
        async with AsyncClient(target, root_certificates=ca, client_cert=certs["client.pem"].read_bytes(),
                               client_key=certs["client.key"].read_bytes()) as c:
            assert (await c.create_alert("tls", "drift", "low")).model_id == "tls"
        async with AsyncClient(target, root_certificates=ca, retries=0, timeout=5) as no_cert:
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await no_cert.create_alert("tls", "drift", "low")
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        await srv.stop(1)


async def test_client_waits_for_the_server_to_come_up_without_duplicates(database_url, tmp_path):
    port = free_port()
    settings = make_settings(database_url, tmp_path, listen=f"127.0.0.1:{port}")
    async with AsyncClient(f"127.0.0.1:{port}", wait_for_ready=True, timeout=30) as c:
        call = asyncio.ensure_future(c.create_alert("late", "drift", "low", request_id="once"))
        await asyncio.sleep(0.5)
        assert not call.done()
        srv, _ = await create_server(settings)
        try:
            alert = await asyncio.wait_for(call, 30)
            assert alert.model_id == "late"
            assert await count_alerts(srv.pool) == 1
        finally:
            await srv.stop(1)


async def test_blocking_client_round_trip(server):
    def use_blocking_client():  # in a thread: the server runs on this test's event loop
        with Client(server.test_target) as c:
            alert = c.create_alert("sync", "risk", "high", metrics={"risk_score": 10.0})
            return c.get_alert(alert.id)

    assert (await asyncio.to_thread(use_blocking_client)).model_id == "sync"


async def test_metrics_endpoint(database_url, tmp_path):
    port = free_port()
    srv, _ = await create_server(make_settings(database_url, tmp_path, metrics_listen=f"127.0.0.1:{port}"))
    try:
        async with AsyncClient(srv_target(srv)) as c:
            await c.create_alert("metered", "drift", "low")
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        body = (await asyncio.wait_for(reader.read(), 30)).decode()
        writer.close()
        # --metrics-listen is now the old name of --http-listen; counts are process counters.
        assert 'closedloop_alerts_ingested_total{outcome="created",type="drift"}' in body
        assert "closedloop_rule_set_version 1" in body
    finally:
        await srv.stop(1)


def srv_target(srv) -> str:
    return f"127.0.0.1:{srv.port}"
