"""Ingest benchmark: the real server against an empty grpc.aio handler, same load, same run.

    python bench/ingest.py [--alerts 6000] [--concurrency 64] [--batch-size 100]

Baseline: an in-process empty grpc.aio service (unary and bidirectional streaming) with the same
request message, driven by the same client loop. Real: closedloop's CreateAlert and StreamAlerts on
the embedded PostgreSQL, every reply sent after its alert is committed. Alerts are for models with no
retrain-worthy metrics so the figure is ingest (the loop's cost is bench/loop.py's). The server runs
in its own process, like the baseline, so client and server do not share one event loop.
Then BatchCreateAlerts (--batch-size alerts a call) against an empty handler receiving the same batches.
Last line: RESULT unary_ratio=… stream_ratio=… batch_ratio=… unary_p99_ms=…
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import signal
import sys
import tempfile
import time

import grpc

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


def run_real_server(port_queue, data_dir: str) -> None:
    from closedloop.server.app import create_server
    from closedloop.server.config import Settings
    from closedloop.server.logging_setup import configure_logging

    configure_logging("json", "warning")

    async def main():
        settings = Settings(data_dir=data_dir, listen="127.0.0.1:0", run_workers=False, age_sweep_interval=0,
                            log_format="json", log_level="warning")
        server, port = await create_server(settings)
        # The benchmark ends this process with SIGTERM: stop properly, so the embedded PostgreSQL
        # stops with it instead of running on after the benchmark.
        stopping = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stopping.set)
        port_queue.put(port)
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
    ap.add_argument("--batch-size", type=int, default=100, help="alerts per BatchCreateAlerts call")
    args = ap.parse_args()
    n, c = args.alerts, args.concurrency
    data_dir = tempfile.mkdtemp(prefix="closedloop-bench-")
    empty, empty_port = start(run_empty_server)
    real, real_port = start(run_real_server, data_dir)
    try:
        base_unary, base_lat = asyncio.run(drive_unary(f"127.0.0.1:{empty_port}", n, c, "e"))
        base_stream = asyncio.run(drive_stream(f"127.0.0.1:{empty_port}", n, "es"))
        real_unary, real_lat = asyncio.run(drive_unary(f"127.0.0.1:{real_port}", n, c, "u"))
        real_stream = asyncio.run(drive_stream(f"127.0.0.1:{real_port}", n, "s"))
        # Batches: 4 calls in flight, so the server has more than one batch to work on.
        base_batch = asyncio.run(drive_batches(f"127.0.0.1:{empty_port}", n, args.batch_size, 4, "eb"))
        real_batch = asyncio.run(drive_batches(f"127.0.0.1:{real_port}", n, args.batch_size, 4, "b"))
        stored, pg_handle = asyncio.run(committed(data_dir))
    finally:
        for p in (empty, real):
            p.terminate()
            p.join(30)
    pg_handle.cleanup()
    expected = 3 * n + 1
    print(f"empty handler   unary  {base_unary:8.0f} alerts/s  p50 {pct(base_lat, .5):6.2f} ms  p99 {pct(base_lat, .99):6.2f} ms (C={c})")
    print(f"empty handler   stream {base_stream:8.0f} alerts/s")
    print(f"closedloop      unary  {real_unary:8.0f} alerts/s  p50 {pct(real_lat, .5):6.2f} ms  p99 {pct(real_lat, .99):6.2f} ms (C={c})")
    print(f"closedloop      stream {real_stream:8.0f} alerts/s")
    print(f"empty handler   batch  {base_batch:8.0f} alerts/s (BatchCreateAlerts of {args.batch_size}, 4 in flight)")
    print(f"closedloop      batch  {real_batch:8.0f} alerts/s")
    print(f"ratios: unary {real_unary / base_unary:.2f}  stream {real_stream / base_stream:.2f}  "
          f"(target >= 0.6 each); committed rows {stored} of {expected} sent")
    if stored != expected:
        print("ERROR: not every alert was committed", file=sys.stderr)
        sys.exit(1)
    print(f"batch ratio {real_batch / base_batch:.2f}; batch vs empty unary {real_batch / base_unary:.2f}")
    print(f"RESULT unary_ratio={real_unary / base_unary:.2f} stream_ratio={real_stream / base_stream:.2f} "
          f"batch_ratio={real_batch / base_batch:.2f} batch_alerts_per_s={real_batch:.0f} "
          f"unary_p99_ms={pct(real_lat, .99):.2f} unary_alerts_per_s={real_unary:.0f} stream_alerts_per_s={real_stream:.0f}")


if __name__ == "__main__":
    main()
