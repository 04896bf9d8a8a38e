"""Replica benchmark: ingest throughput with 1 and 2 server replicas on one PostgreSQL, what each
costs, and what the PostgreSQL under them can commit, all in one run.

    python bench/replicas.py [--alerts 6000] [--concurrency 32] [--rounds 3]

One embedded PostgreSQL (pgserver); two `closedloop serve --no-run-workers` processes on it. Two
client processes, each driving unary CreateAlert at --concurrency with bench/ingest.py's request
(alerts no rule acts on: the ingest path), aim at replica 0 alone (1 replica) or one replica each
(2 replicas); the client side is the same in both, so the ratio is the replicas' doing. Rounds
alternate and the best of each is kept (the machine is shared).

Measured alongside, over the same rounds:
- CPU per alert of a replica process and of PostgreSQL (all its processes), from psutil;
- transactions committed per alert (pg_stat_database.xact_commit: group commit batches alerts);
- the connections the two replicas hold on the database after the load;
- PostgreSQL's commit ceiling: single-row autocommit INSERTs, 32 concurrent over 8 connections, the
  method of shared/anchors/pg_bench.py, on the same server.
Last line: RESULT replicas_ratio=… one_replica_alerts_per_s=… two_replicas_alerts_per_s=… …
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import pathlib
import signal
import subprocess
import sys
import tempfile
import time
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import grpc
import psutil
from grpc_health.v1 import health_pb2, health_pb2_grpc

sys.path.insert(0, str(pathlib.Path(__file__).parent))
from ingest import drive_unary, pct  # noqa: E402  (the same load loop as bench/ingest.py)


def start_replica(database_url: str, data_dir: str) -> tuple[subprocess.Popen, str]:
    """`closedloop serve --no-run-workers` in its own process, returned once its health says SERVING."""
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "closedloop.server.cli", "serve", "--database-url", database_url, "--data-dir",
         data_dir, "--listen", f"127.0.0.1:{port}", "--no-run-workers", "--age-sweep-interval", "0",
         "--log-format", "json", "--log-level", "warning", "--drain", "0"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    target = f"127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    with grpc.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"replica exited: {proc.stderr.read().decode()[-2000:]}")
            try:
                if stub.Check(health_pb2.HealthCheckRequest(), timeout=1).status == 1:
                    return proc, target
            except grpc.RpcError:
                pass
            if time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError("replica did not become healthy within 60 s")
            time.sleep(0.1)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def client_process(out, target: str, n: int, concurrency: int, prefix: str) -> None:
    start = time.time()
    _, latencies = asyncio.run(drive_unary(target, n, concurrency, prefix))
    out.put((start, time.time(), n, latencies))


def drive(targets: list[str], n: int, concurrency: int, prefix: str) -> tuple[float, list[float]]:
    """Two client processes, targets[i % len(targets)] each; aggregate alerts/s and latencies."""
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    procs = [ctx.Process(target=client_process, args=(out, targets[i % len(targets)], n // 2, concurrency,
                                                      f"{prefix}-{i}")) for i in range(2)]
    for p in procs:
        p.start()
    results = [out.get(timeout=600) for _ in procs]
    for p in procs:
        p.join(30)
    begin, end = min(r[0] for r in results), max(r[1] for r in results)
    return sum(r[2] for r in results) / (end - begin), [x for r in results for x in r[3]]


class CpuMeter:
    """CPU seconds used by the replica processes and by PostgreSQL (postmaster, live backends and
    the backends that have exited, which the postmaster's children_* times hold)."""

    def __init__(self, replicas: list[subprocess.Popen], pgdata: str) -> None:
        self.replicas = [psutil.Process(p.pid) for p in replicas]
        pid = int(pathlib.Path(pgdata, "postmaster.pid").read_text().split()[0])
        self.postmaster = psutil.Process(pid)

    def read(self) -> tuple[list[float], float]:
        replicas = [sum(p.cpu_times()[:2]) for p in self.replicas]
        t = self.postmaster.cpu_times()
        pg = t.user + t.system + t.children_user + t.children_system
        for child in self.postmaster.children():
            try:
                pg += sum(child.cpu_times()[:2])
            except psutil.NoSuchProcess:
                pass
        return replicas, pg


async def commits(database_url: str) -> int:
    conn = await asyncpg.connect(database_url)
    try:
        return await conn.fetchval("SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()")
    finally:
        await conn.close()


async def open_connections(database_url: str) -> int:
    """Connections the replicas hold on their database right after the load (ours excluded)."""
    conn = await asyncpg.connect(database_url)
    try:
        return await conn.fetchval("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                                   "AND pid <> pg_backend_pid()")
    finally:
        await conn.close()


async def commit_ceiling(admin_url: str, n: int = 5000) -> float:
    """Single-row autocommit INSERTs, 32 concurrent over 8 connections (shared/anchors/pg_bench.py)."""
    admin = await asyncpg.connect(admin_url)
    await admin.execute("DROP DATABASE IF EXISTS bench_commits")
    await admin.execute("CREATE DATABASE bench_commits")
    url = with_database(admin_url, "bench_commits")
    pool = await asyncpg.create_pool(url, min_size=8, max_size=8)
    try:
        await pool.execute("CREATE TABLE a (id bigserial PRIMARY KEY, model_id text, alert_type text, "
                           "drift double precision, labels jsonb, created_at timestamptz DEFAULT now())")
        row = ("m1", "drift", 0.3, '{"desk": "fx"}')

        async def worker(k: int) -> None:
            for _ in range(k):
                await pool.execute("INSERT INTO a (model_id, alert_type, drift, labels) VALUES ($1, $2, $3, $4)",
                                   *row)

        start = time.perf_counter()
        await asyncio.gather(*(worker(n // 32) for _ in range(32)))
        return (n // 32 * 32) / (time.perf_counter() - start)
    finally:
        await pool.close()
        await admin.execute("DROP DATABASE bench_commits")
        await admin.close()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--alerts", type=int, default=6000, help="alerts per round (split over two clients)")
    ap.add_argument("--concurrency", type=int, default=32, help="concurrent calls per client process")
    ap.add_argument("--rounds", type=int, default=3, help="rounds of each (1 and 2 replicas), alternating")
    args = ap.parse_args()
    import pgserver

    root = tempfile.mkdtemp(prefix="closedloop-replicas-")
    pgdata = os.path.join(root, "pg")
    srv = pgserver.get_server(pgdata, cleanup_mode="stop")
    admin_url = srv.get_uri()
    asyncio.run(_create_database(admin_url))
    url = with_database(admin_url, "closedloop")
    replicas = []
    try:
        replicas = [start_replica(url, os.path.join(root, f"r{i}")) for i in range(2)]
        targets = [t for _, t in replicas]
        meter = CpuMeter([p for p, _ in replicas], pgdata)
        drive(targets, 400, args.concurrency, "warm")  # connections, caches, the JIT of nothing
        best = {1: (0.0, []), 2: (0.0, [])}
        cpu = {1: [], 2: []}
        for r in range(args.rounds):
            for count in ((1, 2) if r % 2 == 0 else (2, 1)):
                before_cpu, before_commits = meter.read(), asyncio.run(commits(url))
                rate, latencies = drive(targets[:count], args.alerts, args.concurrency, f"r{r}-{count}")
                after_cpu, after_commits = meter.read(), asyncio.run(commits(url))
                replica_s = sum(a - b for a, b in zip(after_cpu[0], before_cpu[0]))
                cpu[count].append((replica_s, after_cpu[1] - before_cpu[1], after_commits - before_commits))
                print(f"round {r}: {count} replica(s) {rate:7.0f} alerts/s  p99 {pct(latencies, .99):6.2f} ms")
                if rate > best[count][0]:
                    best[count] = (rate, latencies)
        connections = asyncio.run(open_connections(url))
        ceiling = asyncio.run(commit_ceiling(admin_url))
    finally:
        for proc, _ in replicas:
            proc.send_signal(signal.SIGTERM)
        for proc, _ in replicas:
            proc.wait(30)
        srv.cleanup()

    alerts = args.alerts // 2 * 2 * args.rounds * 2
    replica_ms = 1000 * sum(c[0] for k in cpu for c in cpu[k]) / alerts
    pg_ms = 1000 * sum(c[1] for k in cpu for c in cpu[k]) / alerts
    per_alert_commits = sum(c[2] for k in cpu for c in cpu[k]) / alerts
    one, two = best[1][0], best[2][0]
    # One replica given a core of its own ingests 1000 / replica_ms alerts/s; PostgreSQL spends
    # pg_ms of CPU on each of them and commits per_alert_commits transactions for each.
    replica_core_rate = 1000 / replica_ms
    per_pg_core = replica_ms / pg_ms
    per_commit_ceiling = ceiling / (per_alert_commits * replica_core_rate)
    print(f"1 replica   {one:7.0f} alerts/s  p50 {pct(best[1][1], .5):6.2f} ms  p99 {pct(best[1][1], .99):6.2f} ms")
    print(f"2 replicas  {two:7.0f} alerts/s  p50 {pct(best[2][1], .5):6.2f} ms  p99 {pct(best[2][1], .99):6.2f} ms"
          f"  -> ratio {two / one:.2f} on {psutil.cpu_count()} cores shared by clients, replicas and PostgreSQL")
    print(f"CPU per alert: replica {replica_ms:.3f} ms, PostgreSQL {pg_ms:.3f} ms; "
          f"{per_alert_commits:.3f} commits per alert (group commit)")
    print(f"connections the 2 replicas hold after the load: {connections} (pool max 16 each, +1 LISTEN each)")
    print(f"PostgreSQL commit ceiling (single-row autocommit, 32 concurrent, 8 connections): {ceiling:.0f}/s")
    print(f"one replica on its own core: ~{replica_core_rate:.0f} alerts/s; replicas one PostgreSQL core carries "
          f"by CPU: {per_pg_core:.1f}; by the measured commit ceiling: {per_commit_ceiling:.1f}")
    print(f"RESULT replicas_ratio={two / one:.2f} one_replica_alerts_per_s={one:.0f} two_replicas_alerts_per_s={two:.0f} "
          f"pg_commits_per_s={ceiling:.0f} commits_per_alert={per_alert_commits:.3f} "
          f"replica_cpu_ms_per_alert={replica_ms:.3f} pg_cpu_ms_per_alert={pg_ms:.3f} "
          f"replicas_per_pg_core={per_pg_core:.1f} replicas_per_commit_ceiling={per_commit_ceiling:.1f} "
          f"connections_two_replicas={connections}")


def with_database(url: str, name: str) -> str:
    """The same server URL naming database `name` (keeps ?host=… of a unix socket)."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + name))


async def _create_database(admin_url: str) -> None:
    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute("CREATE DATABASE closedloop")
    finally:
        await conn.close()


if __name__ == "__main__":
    main()
