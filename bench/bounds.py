"""What this stack allows: the cheapest servers that still do what closedloop's paths must do, measured
against the same empty handlers as bench/ingest.py, bench/monitor.py and bench/loop.py, in one run.

    python bench/bounds.py [--alerts 6000] [--concurrency 64] [--rates 1400,2250] [--latency-seconds 6]

Each ratio here is a ceiling for the matching ratio of closedloop on this machine with Python's grpc.aio
and aiohttp, and each latency a floor for closedloop's: the servers below do strictly less than a
correct closedloop must (no validation, no auth, no rules, no metrics), so closedloop cannot beat them
with the same libraries. What they do is what every correct implementation has to:

- unary_bound, stream_bound: a grpc.aio AlertService whose CreateAlert / StreamAlerts handlers wait once
  for a future that a batching task resolves (a reply may only go out after its alert is committed, so
  every handler behind a group commit suspends at least once) and answer the whole Alert (the request's
  alert with id, times and state, as CreateAlert answers); nothing is stored. Against bench/ingest.py's
  EmptyAlerts, which answers at once with an Alert of two fields. Targets of issue 12: >= 0.8 each.
- http_bound: the same for POST /v1/alerts: aiohttp reads the JSON, waits once, answers the whole Alert in
  JSON. Against bench/ingest.py's empty aiohttp handler. Target of issue 14: >= 0.6.
- http_durable_bound: the same POST with the alert committed before the reply: orjson reads the body,
  closedloop's group commit writes each batch with one INSERT (as durable_* below) into an embedded
  PostgreSQL, orjson writes the reply. What bench/ingest.py's http_ratio measures, minus validation,
  idempotency replies, rules, metrics and auth; PostgreSQL shares the machine's two cores with the
  client and the server, as closedloop's does there.
- monitor_bound: LogObservations that reads every column from the wire bytes and counts the batch into
  each feature's 200 reference bins with closedloop's own kernel (BinLayout.bin_slots, one bincount):
  the least work after which a window's KS/PSI/Wasserstein can be judged exactly from bins; no checks,
  moments, windows or storage. Against bench/monitor.py's EmptyMonitor, 1,000 rows x 20 features per
  message. Target of issue 13: >= 0.6.
- durable_*: CreateAlert written to PostgreSQL (embedded, fsync on) through closedloop's own group
  commit, one autocommitted INSERT ... ON CONFLICT (request_id) DO NOTHING RETURNING per batch; the
  reply after the commit; no rules, no decision state, no validation. Open loop
  at --rates (default: half and 80% of closedloop's capacity with rules in bench/loop.py's runs on this
  machine kind), each latency from the request's intended send time, as bench/loop.py measures; beside
  it the empty handler's floor at the same rates. Targets of issue 12 for closedloop (which also reads
  the decision state and writes decisions): p50 <= 3 ms and p99 <= 10 ms at half, p99 <= 25 ms at 80%.

Last line: RESULT unary_bound=... stream_bound=... http_bound=... http_durable_bound=... monitor_bound=... durable_p50_ms=...
durable_p99_ms=... durable_p99_ms_at_80=... decision_p50_ms=... decision_p99_ms=... decision_p99_ms_at_80=...
unbatched_p50_ms=... unbatched_p99_ms=... unbatched_p99_ms_at_80=... floor_p50_ms=... floor_p99_ms=...
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import sys
import tempfile
import shutil

import grpc
import numpy as np
from aiohttp import web

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ingest import (EmptyAlerts, drive_http, drive_stream, drive_unary, measured, run_empty_http_server,  # noqa: E402
                    run_empty_server, serve_post, start)
from loop import open_loops  # noqa: E402
from monitor import FEATURES, batches, drive, serve_monitor, stop  # noqa: E402
from monitor import run_empty_server as run_empty_monitor  # noqa: E402

from closedloop.v1 import alert_pb2, alert_pb2_grpc, common_pb2, monitor_pb2, monitor_pb2_grpc  # noqa: E402

UTC = dt.timezone.utc


class Batcher:
    """The least a group commit does: a caller gets a future; one task takes everything waiting and
    resolves each future (nothing is written). The same calls as closedloop's GroupCommit."""

    def __init__(self) -> None:
        self.waiting: list = []
        self.wake = asyncio.Event()

    async def start(self) -> None:
        self.task = asyncio.create_task(self.run())

    async def submit_later(self, item) -> asyncio.Future:
        future = asyncio.get_running_loop().create_future()
        self.waiting.append(future)
        self.wake.set()
        return future

    async def submit(self, item):
        return await (await self.submit_later(item))

    async def run(self) -> None:
        while True:
            await self.wake.wait()
            self.wake.clear()
            batch, self.waiting = self.waiting, []
            for future in batch:
                future.set_result(None)


def whole_alert(sent: alert_pb2.Alert, alert_id: int, created: dt.datetime) -> alert_pb2.Alert:
    """What CreateAlert answers: the alert as sent, with what the server set."""
    reply = alert_pb2.Alert()
    reply.CopyFrom(sent)
    reply.id = str(alert_id)
    reply.state = alert_pb2.ALERT_STATE_OPEN
    reply.create_time.FromDatetime(created)
    reply.update_time.FromDatetime(created)
    if not sent.HasField("observe_time"):
        reply.observe_time.FromDatetime(created)
    return reply


class WaitOnceAlerts(EmptyAlerts):
    """CreateAlert and StreamAlerts that wait once for their batch and answer the whole Alert.
    `batcher`: a Batcher, or closedloop's GroupCommit in front of a real write."""

    def __init__(self, batcher) -> None:
        self.batcher = batcher
        self.ids = 0

    def _reply(self, request, row) -> alert_pb2.Alert:
        if row is None:  # nothing stored: an id and a time as a database would give them
            self.ids += 1
            row = (self.ids, dt.datetime.now(UTC))
        return whole_alert(request.alert, *row)

    async def CreateAlert(self, request, context):
        return self._reply(request, await self.batcher.submit(request))

    async def StreamAlerts(self, request_iterator, context):
        # As closedloop's: a reader keeps a window of writes in flight, replies go out in order.
        window: asyncio.Queue = asyncio.Queue(maxsize=512)

        async def read() -> None:
            async for request in request_iterator:
                await window.put((request, await self.batcher.submit_later(request)))
            await window.put(None)

        reader = asyncio.create_task(read())
        while (item := await window.get()) is not None:
            request, pending = item
            yield self._reply(request, await pending)
        await reader


async def serve_alerts(port_queue, batcher) -> None:
    await batcher.start()
    server = grpc.aio.server()
    alert_pb2_grpc.add_AlertServiceServicer_to_server(WaitOnceAlerts(batcher), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    port_queue.put(port)
    await server.wait_for_termination()


def run_wait_once_server(port_queue) -> None:
    async def main():
        await serve_alerts(port_queue, Batcher())

    asyncio.run(main())


def run_wait_once_http_server(port_queue) -> None:
    async def main():
        batcher = Batcher()
        await batcher.start()
        ids = 0

        async def create(request):
            nonlocal ids
            body = await request.json()
            await batcher.submit(None)
            ids += 1
            now = dt.datetime.now(UTC).isoformat().replace("+00:00", "Z")
            alert = dict(body["alert"], id=str(ids), state="ALERT_STATE_OPEN", createTime=now, updateTime=now)
            alert.setdefault("observeTime", now)
            return web.json_response(alert)

        await serve_post(port_queue, "/v1/alerts", create)

    asyncio.run(main())


class BinningMonitor(monitor_pb2_grpc.MonitorServiceServicer):
    """Reads each batch's columns from the wire bytes and counts them into the reference's bins."""

    def __init__(self, layout) -> None:
        self.layout = layout
        self.counts = np.zeros(layout.total, dtype=np.int64)

    async def LogObservations(self, request_iterator, context):
        from closedloop.server.api.monitor import _doubles  # the server's own column reader

        summary = monitor_pb2.LogSummary()
        layout = self.layout
        async for batch in request_iterator:
            values = np.vstack([_doubles(column.numbers) for column in batch.columns])
            self.counts += np.bincount(layout.bin_slots(values).ravel(), minlength=layout.total)
            summary.batches += 1
        return summary


def run_binning_server(port_queue) -> None:
    from closedloop.server.monitor.histogram import BinLayout, as_edges

    rng = np.random.default_rng(7)  # the reference: standard normal features, as bench/monitor.py's
    ranks = np.linspace(0, 1, 201)
    layout = BinLayout([as_edges(np.quantile(rng.standard_normal(10_000), ranks)) for _ in FEATURES])
    asyncio.run(serve_monitor(port_queue, BinningMonitor(layout)))


INSERT = """
INSERT INTO bound_alerts (request_id, model_id, alert_type, severity, metrics, labels)
SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::int[], $5::jsonb[], $6::jsonb[])
ON CONFLICT (request_id) DO NOTHING
RETURNING request_id, id, create_time"""
MODELS = 200  # as bench/loop.py's alert mix
# (name, reads the state first, through the group commit)
VARIANTS = (("durable", False, True), ("decision", True, True), ("unbatched", True, False))
STATE_READ = "SELECT model_id, last_action FROM bound_state WHERE model_id = ANY($1::text[])"


class Unbatched:
    """Each request written on its own, as soon as it arrives, on one of the pool's connections (no
    group commit: no wait for the batch ahead, one commit per request). The same calls as GroupCommit."""

    def __init__(self, write) -> None:
        self.write = write

    async def start(self) -> None:
        pass

    async def submit(self, item):
        return (await self.write([item]))[0]

    async def submit_later(self, item) -> asyncio.Future:
        return asyncio.ensure_future(self.submit(item))


async def durable_store(data_dir: str, reads_state: bool, connections: int):
    """An embedded PostgreSQL with the bound's tables, and the write function the group commit calls:
    one autocommitted INSERT ... ON CONFLICT (request_id) DO NOTHING RETURNING per batch (after one
    read of a small state table when `reads_state`). Items have CreateAlertRequest's attributes
    (`request_id`, `alert.model_id`, `.type`, `.severity`, `.metrics`, `.labels`). Returns (pool, write)."""
    import asyncpg
    import pgserver

    pg = pgserver.get_server(os.path.join(data_dir, "pg"), cleanup_mode="stop")
    pool = await asyncpg.create_pool(pg.get_uri(), min_size=connections, max_size=connections)
    await pool.execute("""CREATE TABLE bound_alerts (
        id bigserial, request_id text PRIMARY KEY, model_id text NOT NULL, alert_type text NOT NULL,
        severity int NOT NULL, metrics jsonb NOT NULL, labels jsonb NOT NULL,
        create_time timestamptz NOT NULL DEFAULT now())""")
    await pool.execute("""CREATE TABLE bound_state (model_id text PRIMARY KEY, last_action timestamptz);
        INSERT INTO bound_state SELECT 'm' || i, now() FROM generate_series(0, 199) i""")

    async def write(requests):
        alerts = [r.alert for r in requests]
        async with pool.acquire() as conn:
            if reads_state:
                await conn.fetch(STATE_READ, list({a.model_id for a in alerts}))
            rows = await conn.fetch(INSERT, [r.request_id for r in requests], [a.model_id for a in alerts],
                                    [a.type for a in alerts], [a.severity for a in alerts],
                                    [json.dumps(dict(a.metrics)) for a in alerts],
                                    [json.dumps(dict(a.labels)) for a in alerts])
        stored = {r["request_id"]: (r["id"], r["create_time"]) for r in rows}
        return [stored.get(r.request_id, (0, dt.datetime.now(UTC))) for r in requests]

    return pool, write


def run_durable_server(port_queue, data_dir: str, reads_state: bool, batched: bool) -> None:
    """`reads_state`: each batch first reads its models' rows of a small state table (one round trip),
    then writes: the least a path that decides on stored state (cooldowns, active jobs) before it
    writes does; closedloop's optimistic decision write is these two round trips. `batched`: through
    closedloop's group commit (2 connections), or each request on its own (Unbatched, 4 connections)."""
    from closedloop.server.loop.group_commit import GroupCommit

    async def main():
        pool, write = await durable_store(data_dir, reads_state, 2 if batched else 4)
        try:
            await serve_alerts(port_queue, GroupCommit(write, name="bound-commit") if batched else Unbatched(write))
        finally:
            await pool.close()

    asyncio.run(main())


class _Sent:
    """A POST /v1/alerts body's fields under CreateAlertRequest's attribute names (for durable_store)."""

    def __init__(self, body: dict) -> None:
        alert = body["alert"]
        self.request_id = body["requestId"]
        self.alert = self
        self.model_id, self.type, self.metrics, self.labels = (alert["modelId"], alert["type"], alert["metrics"],
                                                               alert["labels"])
        self.severity = SEVERITIES[alert["severity"]]


SEVERITIES = {v.name: v.number for v in common_pb2.Severity.DESCRIPTOR.values}


def run_durable_http_server(port_queue, data_dir: str) -> None:
    """http_durable_bound: POST /v1/alerts read with orjson, written through closedloop's group commit
    (durable_store: one INSERT per batch), answered with the whole alert in JSON after the commit; no
    validation, no idempotency look-up beyond the INSERT's, no metrics, no auth."""
    import orjson

    from closedloop.server.loop.group_commit import GroupCommit

    async def main():
        pool, write = await durable_store(data_dir, False, 2)
        batcher = GroupCommit(write, name="bound-commit")
        await batcher.start()

        async def create(request):
            body = orjson.loads(await request.read())
            alert_id, created = await batcher.submit(_Sent(body))
            now = created.isoformat().replace("+00:00", "Z")
            alert = dict(body["alert"], id=str(alert_id), state="ALERT_STATE_OPEN", createTime=now, updateTime=now)
            alert.setdefault("observeTime", now)
            return web.Response(body=orjson.dumps(alert), content_type="application/json")

        try:
            await serve_post(port_queue, "/v1/alerts", create)
        finally:
            await pool.close()

    asyncio.run(main())


def ratio_line(name: str, base: float, bound: float, cpu_base: float, cpu_bound: float, unit: str, target: float) -> str:
    return (f"{name:8} empty {base:9.0f}/s  bound {bound:9.0f}/s  ratio {bound / base:.2f} (closedloop's target "
            f">= {target})  server CPU {cpu_base:.0f} / {cpu_bound:.0f} us per {unit}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--alerts", type=int, default=6000)
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--batches", type=int, default=200, help="LogObservations messages of 1,000 rows x 20 features")
    ap.add_argument("--rates", default="1400,2250", help="open-loop rates (alerts/s) of the durable server")
    ap.add_argument("--latency-seconds", type=float, default=6.0)
    args = ap.parse_args()
    n, c = args.alerts, args.concurrency
    rates = [float(x) for x in args.rates.split(",")]
    out: dict = {}

    empty, empty_port = start(run_empty_server)
    wait_once, wait_port = start(run_wait_once_server)
    try:
        for name, drive_one in (("unary", lambda t, p: drive_unary(t, n, c, p)),
                                ("stream", lambda t, p: drive_stream(t, n, p))):
            (base, cpu_b) = measured(empty.pid, lambda: asyncio.run(drive_one(f"127.0.0.1:{empty_port}", f"e{name}")))
            (bound, cpu_w) = measured(wait_once.pid, lambda: asyncio.run(drive_one(f"127.0.0.1:{wait_port}", f"w{name}")))
            base, bound = (x[0] if isinstance(x, tuple) else x for x in (base, bound))
            out[name] = (base, bound, cpu_b / n * 1e6, cpu_w / n * 1e6)
    finally:
        for p in (empty, wait_once):
            p.terminate()
            p.join(30)

    empty_http, empty_http_port = start(run_empty_http_server)
    wait_http, wait_http_port = start(run_wait_once_http_server)
    try:
        (base, _), cpu_b = measured(empty_http.pid, lambda: asyncio.run(
            drive_http(f"http://127.0.0.1:{empty_http_port}", n, c, "eh")))
        (bound, _), cpu_w = measured(wait_http.pid, lambda: asyncio.run(
            drive_http(f"http://127.0.0.1:{wait_http_port}", n, c, "wh")))
        out["http"] = (base, bound, cpu_b / n * 1e6, cpu_w / n * 1e6)
        data_dir = tempfile.mkdtemp(prefix="closedloop-bounds-")
        durable_http, durable_http_port = start(run_durable_http_server, data_dir)
        try:
            (stored, _), cpu_d = measured(durable_http.pid, lambda: asyncio.run(
                drive_http(f"http://127.0.0.1:{durable_http_port}", n, c, "dh")))
        finally:
            durable_http.terminate()
            durable_http.join(30)
            shutil.rmtree(data_dir, ignore_errors=True)
        out["http_durable"] = (base, stored, cpu_b / n * 1e6, cpu_d / n * 1e6)
    finally:
        for p in (empty_http, wait_http):
            p.terminate()
            p.join(30)

    rng = np.random.default_rng(3)
    load = batches("bench-ingest", {f: rng.standard_normal(args.batches * 1000) for f in FEATURES})
    empty_monitor, em_port = start(run_empty_monitor)
    binning, bin_port = start(run_binning_server)
    try:
        base, base_cpu = asyncio.run(drive(f"127.0.0.1:{em_port}", load, 4, empty_monitor.pid))
        bound, bound_cpu = asyncio.run(drive(f"127.0.0.1:{bin_port}", load, 4, binning.pid))
        out["monitor"] = (base, bound, base_cpu[0], bound_cpu[0])
    finally:
        for p in (empty_monitor, binning):
            stop(p)

    phases = [{"rate": rate} for rate in rates]

    def latencies(name: str, server, port: int) -> None:
        try:
            for phase, figures in zip(phases, asyncio.run(open_loops(f"127.0.0.1:{port}", rates, MODELS,
                                                                     args.latency_seconds, name))):
                phase[name] = figures
        finally:
            server.terminate()
            server.join(30)

    for variant, reads_state, batched in VARIANTS:
        data_dir = tempfile.mkdtemp(prefix="closedloop-bounds-")
        try:
            latencies(variant, *start(run_durable_server, data_dir, reads_state, batched))
        finally:
            shutil.rmtree(data_dir, ignore_errors=True)
    latencies("floor", *start(run_empty_server))

    targets = {"unary": 0.8, "stream": 0.8, "http": 0.6, "http_durable": 0.6, "monitor": 0.6}
    units = {"unary": "request", "stream": "request", "http": "request", "http_durable": "request",
             "monitor": "1,000 rows"}
    for name, (base, bound, cpu_b, cpu_w) in out.items():
        print(ratio_line(name, base, bound, cpu_b, cpu_w, units[name], targets[name]))
    for phase in phases:
        f = phase["floor"]
        for variant, what in (("durable", "one write per batch"), ("decision", "state read + write per batch"),
                              ("unbatched", "state read + write per request, 4 connections")):
            d = phase[variant]
            print(f"{variant:9} at {phase['rate']:.0f}/s ({what}): p50 {d['p50']:.2f} p90 {d['p90']:.2f} "
                  f"p99 {d['p99']:.2f} p99.9 {d['p999']:.2f} max {d['max']:.2f} ms")
        print(f"empty     at {phase['rate']:.0f}/s (floor): p50 {f['p50']:.2f} p99 {f['p99']:.2f} ms")
    result = "RESULT " + " ".join(f"{name}_bound={bound / base:.2f}" for name, (base, bound, _, _) in out.items())
    for variant, _, _ in VARIANTS:
        half = phases[0][variant]
        result += f" {variant}_p50_ms={half['p50']:.2f} {variant}_p99_ms={half['p99']:.2f}"
        if len(phases) > 1:
            result += f" {variant}_p99_ms_at_80={phases[1][variant]['p99']:.2f}"
    result += f" floor_p50_ms={phases[0]['floor']['p50']:.2f} floor_p99_ms={phases[0]['floor']['p99']:.2f}"
    print(result)


if __name__ == "__main__":
    main()
