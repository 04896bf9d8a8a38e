"""Ingest benchmark: the real server against empty handlers, same load, same run; and /metrics.

    python bench/ingest.py [--alerts 6000] [--concurrency 64] [--stored-alerts 1000000] [--batch-size 100]

Baseline: an in-process empty grpc.aio service (unary and bidirectional streaming) with the same
request message, driven by the same client loop. Real: closedloop's CreateAlert and StreamAlerts on
the embedded PostgreSQL, every reply sent after its alert is committed. Alerts are for models with no
retrain-worthy metrics so the figure is ingest (the loop's cost is bench/loop.py's). The server runs
in its own process, like the baseline, so client and server do not share one event loop.

The HTTP JSON path: POST /v1/alerts on closedloop's HTTP side against an empty aiohttp handler
that parses the same JSON body and answers a small JSON alert (its own process too).
The scrape: GET /metrics timed (best of 50: on a shared machine the minimum is the scrape's own
cost, a median adds the neighbours' load) after the runs above (the process counters are then
as full as they get; the database holds their ~18,000 alerts) and again after --stored-alerts alerts
and one action each are bulk-inserted and vacuumed: a scrape must not grow with the tables.
Then BatchCreateAlerts (--batch-size alerts a call) against an empty handler receiving the same batches.
Each phase also reads the server process's CPU time from /proc: CPU per request, which a busy machine
disturbs far less than a rate.
Last line: RESULT unary_ratio=… stream_ratio=… http_ratio=… scrape_ratio=… batch_ratio=… unary_p99_ms=…
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import shutil
import signal
import sys
import tempfile
import time

import aiohttp
import grpc
from aiohttp import web
from google.protobuf import json_format

from closedloop.v1 import alert_pb2, alert_pb2_grpc


def request(i: int, prefix: str) -> alert_pb2.CreateAlertRequest:
    return alert_pb2.CreateAlertRequest(
        alert=alert_pb2.Alert(model_id=f"bench-{i % 50}", type="drift", severity=2,
                              metrics={"drift_score": 0.05, "psi": 0.01}, labels={"desk": "fx"}),
        request_id=f"{prefix}-{i}")


class EmptyAlerts(alert_pb2_grpc.AlertServiceServicer):
    """The ceiling: the same service shape with handlers that do nothing."""

    async def CreateAlert(self, req, ctx):
        return alert_pb2.Alert(id="1", model_id=req.alert.model_id)

    async def StreamAlerts(self, it, ctx):
        async for req in it:
            yield alert_pb2.Alert(id="1", model_id=req.alert.model_id)

    async def BatchCreateAlerts(self, req, ctx):
        return alert_pb2.BatchCreateAlertsResponse(results=[
            alert_pb2.BatchCreateAlertsResult(alert=alert_pb2.Alert(id="1", model_id=r.alert.model_id))
            for r in req.requests])


def run_empty_server(port_queue) -> None:
    async def main():
        server = grpc.aio.server()
        alert_pb2_grpc.add_AlertServiceServicer_to_server(EmptyAlerts(), server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        port_queue.put(port)
        await server.wait_for_termination()

    asyncio.run(main())


async def serve_post(port_queue, path: str, handler) -> None:
    """An aiohttp server on a free loopback port with one POST route; puts the port, then serves."""
    app = web.Application()
    app.router.add_post(path, handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port_queue.put(runner.addresses[0][1])
    await asyncio.Event().wait()


def run_empty_http_server(port_queue) -> None:
    """The HTTP ceiling: aiohttp parsing the same JSON body and answering a small JSON alert."""
    async def create(request):
        body = await request.json()
        return web.json_response({"id": "1", "modelId": body["alert"]["modelId"]})

    asyncio.run(serve_post(port_queue, "/v1/alerts", create))


def run_real_server(port_queue, data_dir: str) -> None:
    from closedloop.server.app import create_server, settle_collector
    from closedloop.server.config import Settings
    from closedloop.server.logging_setup import configure_logging

    configure_logging("json", "warning")

    async def main():
        settings = Settings(data_dir=data_dir, listen="127.0.0.1:0", run_workers=False, age_sweep_interval=0,
                            log_format="json", log_level="warning", http_listen="127.0.0.1:0")
        server, port = await create_server(settings)
        settle_collector()  # as `closedloop serve` does after start-up
        # The benchmark ends this process with SIGTERM: stop properly, so the embedded PostgreSQL
        # stops with it instead of running on after the benchmark.
        stopping = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stopping.set)
        port_queue.put((port, server.http.port))
        await stopping.wait()
        await server.stop(1)

    asyncio.run(main())


async def drive_unary(target: str, n: int, concurrency: int, prefix: str) -> tuple[float, list[float]]:
    latencies: list[float] = []
    async with grpc.aio.insecure_channel(target) as channel:
        stub = alert_pb2_grpc.AlertServiceStub(channel)
        await stub.CreateAlert(request(-1, prefix + "warm"))
        counter = iter(range(n))

        async def worker():
            for i in counter:
                t = time.perf_counter()
                await stub.CreateAlert(request(i, prefix))
                latencies.append(time.perf_counter() - t)

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return n / (time.perf_counter() - start), latencies


async def drive_stream(target: str, n: int, prefix: str) -> float:
    async with grpc.aio.insecure_channel(target) as channel:
        stub = alert_pb2_grpc.AlertServiceStub(channel)

        async def gen():
            for i in range(n):
                yield request(i, prefix)

        start = time.perf_counter()
        got = 0
        async for _ in stub.StreamAlerts(gen()):
            got += 1
        assert got == n, f"{got} replies for {n} requests"
        return n / (time.perf_counter() - start)


async def drive_http(base: str, n: int, concurrency: int, prefix: str) -> tuple[float, list[float]]:
    """POST /v1/alerts with the JSON mapping of the same requests, `concurrency` at a time."""
    bodies = [json_format.MessageToJson(request(i, prefix), indent=None) for i in range(n)]
    latencies: list[float] = []
    headers = {"Content-Type": "application/json"}
    async with aiohttp.ClientSession(base, connector=aiohttp.TCPConnector(limit=concurrency)) as http:
        async with http.post("/v1/alerts", data=json_format.MessageToJson(request(-1, prefix + "warm")),
                             headers=headers) as r:
            assert r.status == 200, await r.text()
        counter = iter(range(n))

        async def worker():
            for i in counter:
                t = time.perf_counter()
                async with http.post("/v1/alerts", data=bodies[i], headers=headers) as r:
                    await r.read()
                    assert r.status == 200, r.status
                latencies.append(time.perf_counter() - t)

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return n / (time.perf_counter() - start), latencies


async def scrape_ms(base: str, times: int = 50) -> float:
    """Best wall time of GET /metrics over `times` scrapes (after two warm-ups)."""
    spent = []
    async with aiohttp.ClientSession(base) as http:
        for _ in range(times + 2):
            t = time.perf_counter()
            async with http.get("/metrics") as r:
                await r.read()
                assert r.status == 200
            spent.append(time.perf_counter() - t)
    return min(spent[2:]) * 1000


async def store_alerts(pg_handle, count: int) -> None:
    """Bulk-insert `count` alerts with one action each, like a long-lived deployment's history, then
    ANALYZE (autovacuum would)."""
    import asyncpg

    conn = await asyncpg.connect(pg_handle.get_uri())
    try:
        await conn.execute(
            """INSERT INTO monitoring_alert_triggers (model_id, alert_type, severity, metrics, observe_time, state)
               SELECT 'hist-' || (g % 500), 'drift', 2, '{"drift_score": 0.1}', now() - g * interval '1 second',
                      'RESOLVED'
                 FROM generate_series(1, $1) g""", count)
        await conn.execute(
            """INSERT INTO closed_loop_actions (alert_id, model_id, rule, rule_set_version, kind, decision, reason)
               SELECT id, model_id, 'drift_auto_retrain', 1, 'RECORD', 'RECORDED', 'history'
                 FROM monitoring_alert_triggers WHERE model_id LIKE 'hist-%'""")
        await conn.execute("VACUUM ANALYZE")  # what autovacuum does after a bulk load
        await conn.execute("CHECKPOINT")
    finally:
        await conn.close()


async def drive_batches(target: str, n: int, size: int, concurrency: int, prefix: str) -> float:
    """BatchCreateAlerts of `size` alerts each, `concurrency` calls in flight; alerts/s."""
    async with grpc.aio.insecure_channel(target) as channel:
        stub = alert_pb2_grpc.AlertServiceStub(channel)
        batches = iter(range(0, n, size))

        async def worker():
            for first in batches:
                reply = await stub.BatchCreateAlerts(alert_pb2.BatchCreateAlertsRequest(
                    requests=[request(i, prefix) for i in range(first, min(n, first + size))]))
                assert all(r.code == 0 for r in reply.results)

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return n / (time.perf_counter() - start)


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) a process has used so far, from /proc (Linux)."""
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measured(pid: int, run):
    """(what run() returns, the server process's CPU seconds meanwhile): CPU per request survives a
    busy machine better than a rate does."""
    before = cpu_seconds(pid)
    out = run()
    return out, cpu_seconds(pid) - before


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))] * 1000


def start(target_fn, *args) -> tuple[multiprocessing.Process, int]:
    ctx = multiprocessing.get_context("spawn")
    q = ctx.Queue()
    # Not a daemon: the server checks estimators in a process pool of its own, which a daemonic
    # process may not start. The callers terminate it in a finally block.
    proc = ctx.Process(target=target_fn, args=(q, *args))
    proc.start()
    return proc, q.get(timeout=120)


async def committed(data_dir: str):
    """(rows stored, our pgserver handle). pgserver stops the database when its last handle is
    cleaned up, so the caller cleans this one up after the server process has stopped."""
    import asyncpg
    import pgserver

    srv = pgserver.get_server(os.path.join(data_dir, "pg"), cleanup_mode="stop")
    conn = await asyncpg.connect(srv.get_uri())
    try:
        return await conn.fetchval("SELECT count(*) FROM monitoring_alert_triggers"), srv
    finally:
        await conn.close()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--alerts", type=int, default=6000)
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--stored-alerts", type=int, default=1_000_000)
    ap.add_argument("--batch-size", type=int, default=100, help="alerts per BatchCreateAlerts call")
    args = ap.parse_args()
    n, c = args.alerts, args.concurrency
    data_dir = tempfile.mkdtemp(prefix="closedloop-bench-")
    empty, empty_port = start(run_empty_server)
    empty_http, empty_http_port = start(run_empty_http_server)
    real, (real_port, real_http_port) = start(run_real_server, data_dir)
    real_http = f"http://127.0.0.1:{real_http_port}"
    pg_handle = None
    try:
        (base_unary, base_lat), cpu_eu = measured(empty.pid, lambda: asyncio.run(
            drive_unary(f"127.0.0.1:{empty_port}", n, c, "e")))
        base_stream, cpu_es = measured(empty.pid, lambda: asyncio.run(drive_stream(f"127.0.0.1:{empty_port}", n, "es")))
        (base_http, base_http_lat), cpu_eh = measured(empty_http.pid, lambda: asyncio.run(
            drive_http(f"http://127.0.0.1:{empty_http_port}", n, c, "eh")))
        (real_unary, real_lat), cpu_ru = measured(real.pid, lambda: asyncio.run(
            drive_unary(f"127.0.0.1:{real_port}", n, c, "u")))
        real_stream, cpu_rs = measured(real.pid, lambda: asyncio.run(drive_stream(f"127.0.0.1:{real_port}", n, "s")))
        (real_http_rate, real_http_lat), cpu_rh = measured(real.pid, lambda: asyncio.run(drive_http(real_http, n, c, "h")))
        # Batches: 4 calls in flight, so the server has more than one batch to work on.
        base_batch = asyncio.run(drive_batches(f"127.0.0.1:{empty_port}", n, args.batch_size, 4, "eb"))
        real_batch = asyncio.run(drive_batches(f"127.0.0.1:{real_port}", n, args.batch_size, 4, "b"))
        stored, pg_handle = asyncio.run(committed(data_dir))
        scrape_empty = asyncio.run(scrape_ms(real_http))
        started = time.perf_counter()
        asyncio.run(store_alerts(pg_handle, args.stored_alerts))
        insert_s = time.perf_counter() - started
        scrape_full = asyncio.run(scrape_ms(real_http))
    finally:
        for p in (empty, empty_http, real):
            p.terminate()
            p.join(30)
    if pg_handle is not None:
        pg_handle.cleanup()
    shutil.rmtree(data_dir, ignore_errors=True)  # its database holds the --stored-alerts (1.6 GB by default)
    expected = 4 * n + 2  # unary, stream, http and batch runs, plus the two warm-ups
    print(f"empty handler   unary  {base_unary:8.0f} alerts/s  p50 {pct(base_lat, .5):6.2f} ms  p99 {pct(base_lat, .99):6.2f} ms (C={c})")
    print(f"empty handler   stream {base_stream:8.0f} alerts/s")
    print(f"closedloop      unary  {real_unary:8.0f} alerts/s  p50 {pct(real_lat, .5):6.2f} ms  p99 {pct(real_lat, .99):6.2f} ms (C={c})")
    print(f"closedloop      stream {real_stream:8.0f} alerts/s")
    print(f"empty aiohttp   http   {base_http:8.0f} alerts/s  p50 {pct(base_http_lat, .5):6.2f} ms  p99 {pct(base_http_lat, .99):6.2f} ms (C={c})")
    print(f"closedloop      http   {real_http_rate:8.0f} alerts/s  p50 {pct(real_http_lat, .5):6.2f} ms  p99 {pct(real_http_lat, .99):6.2f} ms (C={c})")
    print(f"empty handler   batch  {base_batch:8.0f} alerts/s (BatchCreateAlerts of {args.batch_size}, 4 in flight)")
    print(f"closedloop      batch  {real_batch:8.0f} alerts/s")
    print(f"ratios: unary {real_unary / base_unary:.2f}  stream {real_stream / base_stream:.2f}  "
          f"http {real_http_rate / base_http:.2f} (target >= 0.6 each); committed rows {stored} of {expected} sent")
    us = lambda seconds: seconds / n * 1e6  # noqa: E731
    print(f"server CPU per request (µs; closedloop's PostgreSQL not included): unary {us(cpu_eu):.0f} empty, "
          f"{us(cpu_ru):.0f} closedloop; stream {us(cpu_es):.0f} / {us(cpu_rs):.0f}; http {us(cpu_eh):.0f} / {us(cpu_rh):.0f}")
    print(f"closedloop http / closedloop unary gRPC: {real_http_rate / real_unary:.2f} (same ingest path, JSON instead of protobuf)")
    print(f"/metrics scrape: {scrape_empty:.2f} ms with the {stored:,} alerts above, {scrape_full:.2f} ms with "
          f"{args.stored_alerts:,} more alerts and actions (inserted in {insert_s:.0f} s): "
          f"ratio {scrape_full / scrape_empty:.2f} (target <= 2)")
    if stored != expected:
        print("ERROR: not every alert was committed", file=sys.stderr)
        sys.exit(1)
    print(f"batch ratio {real_batch / base_batch:.2f}; batch vs empty unary {real_batch / base_unary:.2f}")
    print(f"RESULT unary_ratio={real_unary / base_unary:.2f} stream_ratio={real_stream / base_stream:.2f} "
          f"http_ratio={real_http_rate / base_http:.2f} scrape_ratio={scrape_full / scrape_empty:.2f} "
          f"batch_ratio={real_batch / base_batch:.2f} batch_alerts_per_s={real_batch:.0f} "
          f"scrape_ms={scrape_empty:.2f}/{scrape_full:.2f} unary_cpu_us={us(cpu_ru):.0f} empty_unary_cpu_us={us(cpu_eu):.0f} "
          f"unary_p99_ms={pct(real_lat, .99):.2f} unary_alerts_per_s={real_unary:.0f} stream_alerts_per_s={real_stream:.0f}")


if __name__ == "__main__":
    main()
