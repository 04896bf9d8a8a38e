"""Retraining executor benchmark, one command: `python bench/retrain.py [--jobs N] [--samples N]`.

Measures, in one run on an embedded PostgreSQL:
1. queue overhead: no-op jobs/s through the real queue (claim, lease, process pool, and the same
   completion a retrain runs: a transaction that locks the row, checks the lease, completes and writes
   the feedback row) against submitting the same function straight to the same process pool;
2. time to job start of a critical job with a free worker (p50/p99), woken by NOTIFY: (a) from the
   queue API's enqueue, (b) from a critical risk alert sent with CreateAlert to a real server with
   the default rules (the headline figure);
3. alert -> promoted: on a real server with its workers, a drift alert for a synthetic model that
   has a version 1, to the promotion of the retrained version (feedback_loop_metrics records it);
4. the peer: procrastinate's no-op jobs/s (one worker, concurrency 8) on the same PostgreSQL, when
   `pip install procrastinate 'psycopg[binary]'` (the `bench` extra) is there.

The last line is `RESULT queue_jobs_per_s=… alert_to_start_p99_ms=… alert_to_promoted_s=…`.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import pathlib
import random
import statistics
import sys
import tempfile
import time
from typing import Awaitable, Callable

import asyncpg
import structlog

from closedloop.server.config import Settings
from closedloop.server.db.migrations import migrate
from closedloop.server.db.pool import create_pool
from closedloop.server.executor import job_kinds
from closedloop.server.executor.backends import LocalBackend
from closedloop.server.executor.job_kinds import NoopKind
from closedloop.server.executor.runner import JobRunner
from closedloop.server.store import queue

SLOTS = 8
PROCESSES = 2  # the development machine has 2 cores

SYNTHETIC_SPEC = {"estimator": "linear_model.SGDClassifier", "params": {"loss": "log_loss", "random_state": 0},
                  "synthetic": {"seed": 7, "drift": 0.5, "rows": 4000}, "target": "direction",
                  "metric": "accuracy", "holdout_fraction": 0.2, "promotion_margin": 0.0}


class TimedNoop(NoopKind):
    """NoopKind that reports when each job's function started and when its completion committed."""

    def __init__(self) -> None:
        self.started: dict[int, float] = {}
        self.waiters: dict[int, asyncio.Future] = {}

    async def record(self, conn, job, result):  # inside the completion transaction, like a retrain's
        self.started[job["id"]] = result["started"]
        waiter = self.waiters.pop(job["id"], None)
        if waiter is not None and not waiter.done():
            waiter.set_result(result["started"])
        return {"message": "no-op"}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, int(round(q / 100 * (len(ordered) - 1)))))]


async def create_database(server_url: str, name: str) -> str:
    admin = await asyncpg.connect(server_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    return server_url.rsplit("/", 1)[0] + f"/{name}" if "?" not in server_url else \
        server_url.split("?")[0].rsplit("/", 1)[0] + f"/{name}?" + server_url.split("?", 1)[1]


async def register_models(conn, ids: list[str], spec: dict | None = None) -> None:
    await conn.executemany(
        "INSERT INTO monitoring_retraining_integration (model_id, training, metric) VALUES ($1, $2, $3)",
        [(m, spec or {}, (spec or {}).get("metric", "accuracy")) for m in ids])


async def direct_rate(backend: LocalBackend, n: int) -> float:
    """The same no-op function submitted straight to the same pool, SLOTS at a time."""
    gate = asyncio.Semaphore(SLOTS)

    async def one(i: int) -> None:
        async with gate:
            await asyncio.wrap_future(backend.submit(job_kinds.noop, {"job_id": i}))

    t0 = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(n)))
    return n / (time.perf_counter() - t0)


async def queue_rate(pool, n: int, offset: int, quiet: bool = False) -> float:
    """n no-op jobs enqueued in one transaction; the runner is idle and wakes on the NOTIFY."""
    ids = [f"noop-{offset + i}" for i in range(n)]
    async with pool.acquire() as conn:
        await register_models(conn, ids)
    t0 = time.perf_counter()
    async with pool.acquire() as conn:
        async with conn.transaction():
            for m in ids:
                await queue.enqueue(conn, model_id=m, mode="FULL", priority=2)
    t_enq = time.perf_counter() - t0
    while True:
        async with pool.acquire() as conn:
            left = await conn.fetchval("SELECT count(*) FROM retrain_jobs WHERE state IN ('QUEUED', 'RUNNING')")
        if left == 0:
            break
        await asyncio.sleep(0.005)
    elapsed = time.perf_counter() - t0 - t_enq
    if not quiet:
        print(f"   (enqueue: {n / t_enq:,.0f} jobs/s in one transaction)")
    return n / elapsed


async def measure_start_latency(pool, kind: TimedNoop, samples: int,
                                enqueue_critical: Callable[[str], Awaitable[int]], first: int = 0) -> list[float]:
    """Milliseconds from asking for a critical job (call of `enqueue_critical`) to its function
    starting in a worker. Model lat-<first> … lat-<first+samples-1> are used, one job each."""
    latencies = []
    for i in range(first, first + samples):
        model_id = f"lat-{i}"
        loop = asyncio.get_running_loop()
        t0 = time.time()
        job_id = await enqueue_critical(model_id)
        waiter = kind.waiters.setdefault(job_id, loop.create_future())
        if job_id in kind.started:  # finished before we started waiting
            waiter.set_result(kind.started[job_id])
        started = await asyncio.wait_for(waiter, 30)
        latencies.append((started - t0) * 1000)
        await asyncio.sleep(random.uniform(0.005, 0.02))  # spread samples; no batching effects
    return latencies


async def procrastinate_rate(server_url: str, n: int) -> float | None:
    try:
        import procrastinate
    except ImportError:
        return None
    url = await create_database(server_url, "peer_procrastinate")
    app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=url))
    finished = 0

    @app.task(queue="bench", name="noop")
    async def noop(i: int) -> None:
        nonlocal finished
        finished += 1

    async with app.open_async():
        await app.schema_manager.apply_schema_async()
        for start in range(0, n, 100):
            await noop.batch_defer_async(*[{"i": j} for j in range(start, min(n, start + 100))])
        t0 = time.perf_counter()
        await app.run_worker_async(queues=["bench"], concurrency=SLOTS, wait=False, install_signal_handlers=False)
        elapsed = time.perf_counter() - t0
    return finished / elapsed


async def main(args: argparse.Namespace) -> None:
    import pgserver

    folder = pathlib.Path(tempfile.mkdtemp(prefix="closedloop-bench-"))
    server = pgserver.get_server(folder, cleanup_mode="delete")
    backend = None
    try:
        server_url = server.get_uri()
        url = await create_database(server_url, "bench")
        conn = await asyncpg.connect(url)
        await migrate(conn)
        await conn.close()
        pool = await create_pool(url, min_size=4, max_size=SLOTS + 6)
        settings = Settings(database_url=url, data_dir=folder / "data", workers=PROCESSES, job_lease=30)

        print(f"retrain benchmark: {PROCESSES} worker processes, {SLOTS} slots, {args.jobs} no-op jobs")
        backend = LocalBackend(PROCESSES)
        kind = TimedNoop()
        runner = JobRunner(settings, pool, url, kind=kind, backend=backend, slots=SLOTS)
        await runner.start()
        await direct_rate(backend, 200)  # warm both paths
        await queue_rate(pool, 200, offset=10**6, quiet=True)
        direct = await direct_rate(backend, args.jobs)
        through_queue = await queue_rate(pool, args.jobs, offset=0)
        print(f"1. queue overhead: {through_queue:,.0f} jobs/s through the queue vs {direct:,.0f} jobs/s "
              f"direct to the same pool (queue = {through_queue / direct:.0%} of direct)")

        # Models are registered first, so the measured span is the enqueue commit -> job start.
        async with pool.acquire() as conn:
            await register_models(conn, [f"lat-{i}" for i in range(args.samples)] + ["lat-warm"])

        async def enqueue_critical(model_id: str) -> int:
            async with pool.acquire() as conn:
                async with conn.transaction():
                    job, _ = await queue.enqueue(conn, model_id=model_id, mode="FULL", priority=4)
            return job["id"]

        half = args.samples // 2
        lat_api = await measure_start_latency(pool, kind, half, enqueue_critical, first=0)
        print(f"2a. enqueue -> start (queue API, critical job, free worker, NOTIFY): p50 "
              f"{percentile(lat_api, 50):.1f} ms, p99 {percentile(lat_api, 99):.1f} ms over {len(lat_api)} samples")

        # The real alert path: CreateAlert over gRPC -> default rules -> decision in PostgreSQL ->
        # job committed -> NOTIFY -> a free worker starts it. The server runs in this process, beside
        # the runner, as `closedloop serve` would.
        from closedloop import AsyncClient
        from closedloop.server.app import create_server

        srv, port = await create_server(Settings(
            database_url=url, data_dir=folder / "srv", listen="127.0.0.1:0", run_workers=False,
            age_sweep_interval=0, log_format="json", log_level="warning"))
        client = AsyncClient(f"127.0.0.1:{port}", timeout=30)

        async def critical_alert(model_id: str) -> int:
            alert = await client.create_alert(model_id, "risk", "critical", metrics={"risk_score": 95.0})
            return int(alert.actions[0].job_id)

        await critical_alert("lat-warm")
        lat = await measure_start_latency(pool, kind, args.samples - half, critical_alert, first=half)
        p50, p99 = percentile(lat, 50), percentile(lat, 99)
        print(f"2b. critical alert -> job start (CreateAlert over gRPC, default rules, free worker, NOTIFY): "
              f"p50 {p50:.1f} ms, p99 {p99:.1f} ms, max {max(lat):.1f} ms over {len(lat)} samples "
              f"(target p99 <= 100 ms)")
        await client.close()
        await srv.stop(1)
        await runner.stop()

        # 3. The whole loop on a real server with its training workers: version 1 by hand, then a
        #    drift alert -> rule -> job -> fit -> champion vs challenger -> promoted version.
        srv, port = await create_server(Settings(
            database_url=url, data_dir=folder / "loop", listen="127.0.0.1:0", workers=PROCESSES,
            age_sweep_interval=0, log_format="json", log_level="warning"))
        promoted = []
        async with AsyncClient(f"127.0.0.1:{port}", timeout=60) as c:
            for i in range(args.retrains):
                model_id = f"fx-{i}"
                await c.register_model({"model_id": model_id, "enabled": True, "training": SYNTHETIC_SPEC})
                first = await c.submit_retrain(model_id, reason="version 1")
                async for _ in c.watch_job(first.id):
                    pass
                alert = await c.create_alert(model_id, "drift", "high", metrics={"drift_score": 0.5})
                job_id = int(alert.actions[0].job_id)
                async for job in c.watch_job(str(job_id)):
                    pass
                async with pool.acquire() as conn:
                    fb = await conn.fetchrow("SELECT * FROM feedback_loop_metrics WHERE job_id = $1", job_id)
                if fb["promoted"]:
                    promoted.append(fb["alert_to_promotion_s"])
                print(f"   retrain {i + 1}: champion {fb['champion_metric']:.3f} challenger "
                      f"{fb['challenger_metric']:.3f} {'promoted' if fb['promoted'] else 'kept champion'}; alert -> "
                      f"end {fb['queue_wait_s'] + fb['run_s']:.2f} s (run {fb['run_s']:.2f} s, wait "
                      f"{fb['queue_wait_s'] * 1000:.0f} ms)")
        await srv.stop(2)
        e2e = statistics.median(promoted) if promoted else float("nan")
        print(f"3. drift alert -> promoted version (synthetic {SYNTHETIC_SPEC['synthetic']['rows']} rows, "
              f"SGDClassifier, real server): median {e2e:.2f} s over {len(promoted)} promoted of {args.retrains}")
        await pool.close()

        peer = None if args.no_peer else await procrastinate_rate(server_url, args.jobs)
        if peer is None:
            print("4. peer: procrastinate not installed (pip install procrastinate 'psycopg[binary]'); skipped")
        else:
            print(f"4. peer: procrastinate {peer:,.0f} no-op jobs/s (1 worker, concurrency {SLOTS}, in-process "
                  f"async tasks); closedloop queue = {through_queue / peer:.2f}x procrastinate")
        print(f"RESULT queue_jobs_per_s={through_queue:.0f} alert_to_start_p99_ms={p99:.1f} alert_to_promoted_s={e2e:.2f}")
    finally:
        if backend is not None:
            backend.shutdown()
        server.cleanup()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--retrains", type=int, default=3)
    parser.add_argument("--no-peer", action="store_true")
    args = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    asyncio.run(main(args))
    sys.exit(0)
