"""Scale benchmark: the same measurements on an empty database and on one holding months of history.

    python bench/scale.py [--alerts 10000000] [--models 10000] [--days 180] [--jobs 100000]
                          [--database-url postgresql://.../postgres]   (default: embedded pgserver;
                          CLOSEDLOOP_TEST_DATABASE_URL works too) [--reuse]

Two databases on one PostgreSQL, both migrated and both with the same --models registered models (3
versions each, 2% of them past the default rules' 30-day age): "empty" has no history; "full" gets
--alerts alerts spread over --days days (drift / performance / risk / age, every severity, desk and
detector labels, mostly resolved), an action for every alert a rule matched (1% QUEUED with a
finished job, the rest coalesced, skipped by cooldown or budget), --jobs jobs with their feedback
rows and idempotency keys, all loaded with COPY (the load rate is printed).

Then a server process per database (no training workers, settled as `closedloop serve` settles it),
both running, and the real client:
  start-up time (process start to serving, 10,000 models: rules, facts) and one age sweep (in-process);
  CreateAlert -> decision latency in an open loop at half the empty database's capacity, in
  --latency-rounds rounds that alternate between the databases (with, per phase, the server's own
  stage times, CreateAlert handler p99, event-loop lag and collections, and the client's own event-loop
  lag: a stalled load generator delays every request due meanwhile); then, against each database in turn:
  GetAlert p99; ListAlerts p99 per filter (model, state, type, time window), five pages of 50 each;
  GetFeedbackReport for one model / 30 days and for all models / 30 days (the daily aggregates are
  brought up to date after the load, as the servers that run workers keep them: feedback/rollup.py);
  BacktestRules (default rules) over the most recent ~1M stored alerts, its rate over the alerts
  the server replayed (full database only);
  the web console's pages (/, /?range=7d, /models/{id}, /rules, /alerts/{id}) over HTTP, p50/p99 of
  CONSOLE_REQUESTS requests each (the hourly roll-up is brought up to date after the load, as a
  running server's periodic pass keeps it);
  the server's RSS once every model's facts are cached.
Last line: RESULT decision_p99_ratio=... get_alert_p99_ms=... list_alerts_p99_ms=... (worst filter)
feedback_model_ms=... feedback_all_ms=... backtest_alerts_per_s=... age_sweep_s=... startup_s=... rss_mb=...
console_worst_ms=... (the slowest page's p99, full database) console_empty_worst_ms=...
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import gc
import io
import json
import multiprocessing
import os
import random
import signal
import sys
import tempfile
import time
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import grpc
import numpy as np

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from ingest import pct  # noqa: E402  (same folder)
from loop import GcProbe, LagProbe, alert_mix, closed_loop, open_loop, server_probes  # noqa: E402

from closedloop import AsyncClient  # noqa: E402
from closedloop.server.store import console_hourly  # noqa: E402
from closedloop.v1 import alert_pb2_grpc  # noqa: E402

UTC = dt.timezone.utc
TYPES = np.array(["drift", "performance", "risk", "age"])
TYPE_WEIGHTS = [0.45, 0.25, 0.2, 0.1]
DESKS = ["fx", "rates", "equities", "credit", "commodities"]
CHUNK = 250_000
CONSOLE_REQUESTS = 20
# A wake-up of the client's lag probe this late is a stall of the load generator itself: every request
# it was due to send meanwhile is charged the stall (open loop), whatever the server did.
CLIENT_STALL_MS = 10.0


def tsv(rows) -> io.BytesIO:
    return io.BytesIO("".join("\t".join(r) + "\n" for r in rows).encode())


def iso(times: np.ndarray) -> np.ndarray:
    return np.char.add(np.datetime_as_string(times, unit="ms"), "Z")


def metric_variants(rng: random.Random) -> dict[str, list[str]]:
    """A hundred metric payloads per type (the text that goes into the jsonb column)."""
    return {"drift": [f'{{"drift_score": {rng.uniform(0, .5):.4f}, "psi": {rng.uniform(0, .3):.4f}}}' for _ in range(100)],
            "performance": [f'{{"performance_drop": {rng.uniform(0, .3):.4f}}}' for _ in range(100)],
            "risk": [f'{{"risk_score": {rng.uniform(20, 100):.2f}}}' for _ in range(100)],
            "age": ['{"age_days": %d}' % rng.randint(30, 120) for _ in range(100)]}


async def fill_models(conn, models: int, now: dt.datetime) -> None:
    rng = random.Random(7)
    training = '{"estimator": "linear_model.SGDClassifier", "synthetic": {"seed": 1}, "target": "direction", "metric": "accuracy"}'
    # 2% of the models are older than the default rules' 30 days: the age sweep has work to do.
    ages = [dt.timedelta(days=45 if m % 50 == 0 else rng.uniform(0, 25)) for m in range(models)]
    await conn.copy_to_table("monitoring_retraining_integration", source=tsv(
        (f"m{m}", training, "accuracy", "3", (now - ages[m]).isoformat()) for m in range(models)),
        columns=["model_id", "training", "metric", "current_version", "current_version_time"])
    await conn.copy_to_table("model_versions", source=tsv(
        (f"m{m}", str(v), "FULL", "accuracy", f"{0.5 + v / 100:.3f}", "t" if v == 3 else "f",
         f"/data/m{m}/v{v}.joblib", "0" * 64)
        for m in range(models) for v in (1, 2, 3)),
        columns=["model_id", "version", "mode", "metric", "metric_value", "promoted", "artifact_path",
                 "artifact_sha256"])


async def store_default_rules(conn) -> None:
    """The bundled default rules as version 1 of the stored rule sets, as a server's first start
    stores them (loop/rule_engine.py; the servers started later find it active and keep it): the
    history's alerts name version 1, and the roll-up after the load counts their quiet checks
    against it (without it every alert would count as checked against no rule)."""
    from closedloop.dsl import compile_rules, load_default_rules
    from closedloop.server.store import rules as rule_store

    compiled = compile_rules(*load_default_rules())
    async with conn.transaction():
        row = await rule_store.activate(conn, source=compiled.source, filename=compiled.filename,
                                        sha256=compiled.sha256, rule_names=[r.name for r in compiled.rules])
    assert row["version"] == 1, row["version"]


async def fill_history(conn, n: int, models: int, days: int, jobs: int, now: dt.datetime) -> None:
    """n alerts over `days` days with their actions, `jobs` finished jobs and their feedback rows."""
    from closedloop.server.store import partitions

    rng = np.random.default_rng(11)
    variants = metric_variants(random.Random(12))
    start = np.datetime64(now.replace(tzinfo=None) - dt.timedelta(days=days), "ms")
    span_ms = days * 86400 * 1000
    await partitions.ensure_months(conn, now - dt.timedelta(days=days), now)
    # Every `step`-th alert queued a retrain (one job each, `jobs` in all); about one alert in six
    # matched a rule without queuing (coalesced, cooldown, budget).
    step = max(1, n // jobs)
    loaded = 0
    t0 = time.perf_counter()
    action_id = 0
    job_rows, feedback_rows = [], []
    chunks = []
    for lo in range(0, n, CHUNK):
        hi = min(n, lo + CHUNK)
        idx = np.arange(lo, hi)
        observed = start + (idx * (span_ms / n)).astype("timedelta64[ms]")
        created = observed + np.timedelta64(800, "ms")
        obs_s, cre_s = iso(observed), iso(created)
        model = rng.integers(0, models, hi - lo)
        kind = rng.choice(4, hi - lo, p=TYPE_WEIGHTS)
        severity = rng.integers(1, 5, hi - lo)
        variant = rng.integers(0, 100, hi - lo)
        desk = rng.integers(0, len(DESKS), hi - lo)
        queued = idx % step == 0
        queued &= (idx // step) < jobs
        matched = queued | (rng.random(hi - lo) < 0.16)
        recent = observed > np.datetime64(now.replace(tzinfo=None) - dt.timedelta(days=7), "ms")
        state = np.where(matched, "ACTIONED", np.where(recent, "OPEN", "RESOLVED"))
        state = np.where(~matched & recent & (rng.random(hi - lo) < 0.2), "ACKNOWLEDGED", state)
        alerts, keys, actions = [], [], []
        for j in range(hi - lo):
            alert_id = lo + j + 1
            t = TYPES[kind[j]]
            alerts.append((str(alert_id), f"r{alert_id:x}", f"m{model[j]}", t, str(severity[j]),
                           variants[t][variant[j]], '{"desk": "%s", "detector": "%s-v2"}' % (DESKS[desk[j]], t),
                           "monitor", obs_s[j], cre_s[j], cre_s[j], state[j], "1"))
            keys.append((f"r{alert_id:x}", str(alert_id), obs_s[j], cre_s[j]))
            if matched[j]:
                action_id += 1
                if queued[j]:
                    job_id = len(job_rows) + 1
                    decision, job = "QUEUED", str(job_id)
                    promoted = job_id % 3 != 0
                    ends = created[j] + np.timedelta64(600_000, "ms")
                    job_rows.append((f"m{model[j]}", "FULL", "3", "SUCCEEDED", "1", str(alert_id), str(action_id),
                                     "drift_auto_retrain", "accuracy", "0.55", "0.57" if promoted else "0.54",
                                     "t" if promoted else "f", "4" if promoted else "0",
                                     "0.02" if promoted else "-0.01", cre_s[j], cre_s[j], iso(np.array([ends]))[0]))
                    feedback_rows.append((iso(np.array([ends]))[0], f"m{model[j]}", str(job_id), str(alert_id),
                                          str(action_id), "drift_auto_retrain", "FULL", "SUCCEEDED", "accuracy",
                                          "0.55", "0.57" if promoted else "0.54", "0.02" if promoted else "-0.01",
                                          "0", "t" if promoted else "f", "30", "570", "600" if promoted else "\\N"))
                else:
                    decision, job = ("COALESCED", "SKIPPED_COOLDOWN", "SKIPPED_BUDGET")[alert_id % 3], "\\N"
                actions.append((str(action_id), str(alert_id), f"m{model[j]}", "drift_auto_retrain", "1", "RETRAIN",
                                "FULL", "3", decision, job, cre_s[j]))
        chunks.append((alerts, keys, actions))
        if len(chunks) * CHUNK >= 1_000_000 or hi == n:
            # Jobs first (actions reference them), then the alerts, their keys and actions.
            if job_rows:
                await conn.copy_to_table("retrain_jobs", source=tsv(job_rows), columns=[
                    "model_id", "mode", "priority", "state", "attempt", "trigger_alert_id", "trigger_action_id",
                    "trigger_rule", "metric", "champion_metric", "challenger_metric", "promoted", "new_version",
                    "improvement", "create_time", "start_time", "end_time"])
                await conn.copy_to_table("feedback_loop_metrics", source=tsv(feedback_rows), columns=[
                    "time", "model_id", "job_id", "alert_id", "action_id", "rule", "mode", "outcome", "metric",
                    "champion_metric", "challenger_metric", "improvement", "promotion_margin", "promoted",
                    "queue_wait_s", "run_s", "alert_to_promotion_s"])
                job_rows, feedback_rows = [], []
            for alerts, keys, actions in chunks:
                await conn.copy_to_table("monitoring_alert_triggers", source=tsv(alerts), columns=[
                    "id", "request_id", "model_id", "alert_type", "severity", "metrics", "labels", "source",
                    "observe_time", "create_time", "update_time", "state", "rule_set_version"])
                await conn.copy_to_table("alert_request_ids", source=tsv(keys),
                                         columns=["request_id", "alert_id", "observe_time", "create_time"])
                await conn.copy_to_table("closed_loop_actions", source=tsv(actions), columns=[
                    "id", "alert_id", "model_id", "rule", "rule_set_version", "kind", "mode", "priority",
                    "decision", "job_id", "create_time"])
                loaded += len(alerts)
            chunks = []
            rate = loaded / (time.perf_counter() - t0)
            print(f"  loaded {loaded:,} alerts ({action_id:,} actions) at {rate:,.0f} alerts/s", flush=True)
    await conn.execute("SELECT setval('monitoring_alert_triggers_ids', $1)", n)
    await conn.execute("SELECT setval('closed_loop_actions_ids', $1)", max(action_id, 1))
    await conn.execute("ANALYZE")


def run_server(queue, database_url: str, data_dir: str, db_timeout: float) -> None:
    """A server process: reports (port, start-up s, age sweep s, age alerts sent), then serves until
    SIGTERM; on SIGUSR1 it loads every model's facts (so the parent can read its RSS fully cached); on
    SIGUSR2 it writes its garbage-collection pauses and event-loop lag since the last SIGUSR2 to
    data_dir/probes.json (bench/loop.py's probes). Like `closedloop serve`, it settles the collector
    after start-up (app.settle_collector): without it a full collection walks the start-up heap and the
    10,000 models' rules and facts, a pause of ~100 ms that lands in the latency phase's tail."""
    from closedloop.server.app import create_server, settle_collector
    from closedloop.server.config import Settings
    from closedloop.server.loop.age_sweep import AgeSweep
    from closedloop.server.logging_setup import configure_logging

    configure_logging("json", "warning")

    async def main():
        settings = Settings(database_url=database_url, data_dir=data_dir, listen="127.0.0.1:0", run_workers=False,
                            http_listen="127.0.0.1:0",
                            age_sweep_interval=0, log_format="json", log_level="warning", db_timeout=db_timeout)
        t0 = time.perf_counter()
        server, port = await create_server(settings)
        startup = time.perf_counter() - t0
        t0 = time.perf_counter()
        sent = await AgeSweep(server.pool, server.rules, server.ingestor, 0).sweep_once()
        sweep = time.perf_counter() - t0
        async with server.pool.acquire() as conn:
            model_ids = [r[0] for r in await conn.fetch("SELECT model_id FROM monitoring_retraining_integration")]
        settle_collector()
        gc_probe, lag_probe = GcProbe(), LagProbe()
        lag_task = asyncio.create_task(lag_probe.run())
        misses = [server.facts.misses]  # models whose facts an alert had to read itself (model_cache.py)
        rpc_counts = [create_alert_buckets()]

        def dump() -> None:
            counts = create_alert_buckets()
            probes = {"gc": gc_probe.summary(), "stages": server.ingestor.timings.snapshot()["all"],
                      "facts_misses": server.facts.misses - misses[0],
                      "lag_ms": lag_probe.summary(),
                      "rpc_p99_at_most_ms": bucket_p99(rpc_counts[0], counts) * 1000}
            rpc_counts[0] = counts
            with open(os.path.join(data_dir, "probes.json.tmp"), "w") as f:
                json.dump(probes, f)
            os.replace(os.path.join(data_dir, "probes.json.tmp"), os.path.join(data_dir, "probes.json"))
            gc_probe.reset()
            lag_probe.lags.clear()
            server.ingestor.timings.reset()
            misses[0] = server.facts.misses

        loop = asyncio.get_running_loop()
        stopping, cache = asyncio.Event(), asyncio.Event()
        loop.add_signal_handler(signal.SIGTERM, stopping.set)
        loop.add_signal_handler(signal.SIGUSR1, cache.set)
        loop.add_signal_handler(signal.SIGUSR2, dump)
        queue.put((port, server.http.port, startup, sweep, sent))
        # SIGTERM stops the server at any point (also before SIGUSR1, when the measurement failed).
        stop = asyncio.ensure_future(stopping.wait())
        await asyncio.wait([stop, asyncio.ensure_future(cache.wait())], return_when=asyncio.FIRST_COMPLETED)
        if cache.is_set() and not stopping.is_set():
            server.facts.ttl = 3600.0  # keep them for the measurement
            await server.facts.entries(model_ids)
            queue.put("cached")
        await stop
        lag_task.cancel()
        await server.stop(1)

    asyncio.run(main())


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


async def timed(coro) -> float:
    t = time.perf_counter()
    await coro
    return time.perf_counter() - t


async def decision_latency(servers: dict[str, tuple[str, int, str]], args, empty_url: str) -> dict:
    """CreateAlert -> decision latency per database: {name: figures}. `servers`: name -> (target, pid,
    data dir), every one running. Capacity is measured on the empty database (closed loop); then
    --latency-rounds rounds, each one open-loop phase of --latency-seconds at half that rate per
    database in turn, so that a noisy stretch of the shared machine falls on both alike; each
    database's p50/p99 is over all its rounds' requests (every round's own p99 is printed too). The
    client's start-up objects are frozen out of its collector's sight during the phases (gc.freeze):
    a full collection of the benchmark's own heap stalled its sending for ~25 ms, which an open loop
    rightly charges to every request it delayed, but which is not the server's.

    The empty database is analyzed after the warm-up and the capacity phase, as autovacuum does soon
    after a new database's first writes: its statistics from the set-up say "no rows", and plans made
    on them (a sequential scan of retrain_jobs per model, say) are right for an empty table and ruinous
    once the phases have filled it with thousands of jobs and actions. Without this, the empty
    database's rounds measured that transient instead of an empty database (p99 of seconds in the
    rounds before autovacuum came by)."""
    out: dict = {name: {"latencies": [], "rounds": [], "probes": []} for name in servers}
    # request_ids unique to this run: a reused full database holds the previous runs' alerts, and a
    # request_id it has seen is answered from what is stored, without a decision (idempotency), which
    # is not what this measures. (Until this tag, every --reuse run after the first timed replays there.)
    run = f"{time.time_ns():x}"
    clients = {}
    async with contextlib.AsyncExitStack() as stack:
        for name, (target, _, _) in servers.items():
            client = await stack.enter_async_context(AsyncClient(target, timeout=900))
            clients[name] = alert_pb2_grpc.AlertServiceStub(client.channel)
            await closed_loop(clients[name], alert_mix(300, args.models, 1, f"warm-{run}"), 32)
        capacity = await closed_loop(clients["empty"], alert_mix(3000, args.models, 2, f"cap-{run}"), 64)
        rate = capacity / 2
        import asyncpg

        conn = await asyncpg.connect(empty_url)
        try:
            await conn.execute("ANALYZE")
        finally:
            await conn.close()
        gc.collect()
        gc.freeze()
        try:
            for round_ in range(args.latency_rounds):
                for name, (_, pid, data_dir) in servers.items():
                    await asyncio.sleep(1)
                    await server_probes(pid, data_dir)  # from here on
                    client_gc, client_lag = GcProbe(), LagProbe()
                    lag_task = asyncio.create_task(client_lag.run())
                    try:
                        latencies, _ = await open_loop(clients[name], alert_mix(
                            int(rate * args.latency_seconds), args.models, 4 + round_, f"lat{round_}-{run}"), rate)
                    finally:
                        gc.callbacks.remove(client_gc._callback)
                        lag_task.cancel()
                    probes = await server_probes(pid, data_dir)
                    probes["client_gc"] = client_gc.summary()
                    probes["client_lag_ms"] = client_lag.summary(CLIENT_STALL_MS)
                    out[name]["latencies"] += latencies
                    out[name]["rounds"].append(pct(latencies, .99))
                    out[name]["probes"].append(probes)
                    refused = sum(1 for x in latencies if x == float("inf"))
                    print(f"{name:5}  round {round_ + 1}: CreateAlert at {rate:.0f}/s: decision p50 "
                          f"{pct(latencies, .5):.2f} ms p99 {pct(latencies, .99):.2f} ms"
                          + (f" ({refused} refused: counted as infinitely slow)" if refused else "")
                          + "; server in that phase: " + _probes_line(probes), flush=True)
        finally:
            gc.unfreeze()
    for name, figures in out.items():
        figures.update(rate=rate, decision_p50=pct(figures["latencies"], .5),
                       decision_p99=pct(figures["latencies"], .99))
        del figures["latencies"]
    out["empty"]["capacity"] = capacity
    return out


async def measure(target: str, http_url: str, args, stored: int, days: int) -> dict:
    """Every other client-side figure against one server."""
    rng = random.Random(5)
    out: dict = {}
    now = dt.datetime.now(UTC)
    async with AsyncClient(target, timeout=900) as client:
        # Ids the load wrote are 1..stored with no gap; ids the servers drew since may have gaps (a
        # batch written again draws new ones), so a reused database is probed in the loaded range
        # and the empty one at ids it lists.
        top = int((await client.list_alerts(page_size=1)).alerts[0].id)
        if stored:
            ids = [rng.randint(1, stored) for _ in range(400)]
        else:
            listed = [a.id for a in (await client.list_alerts(page_size=1000)).alerts]
            ids = [rng.choice(listed) for _ in range(400)]
        lat = []
        for i in ids:
            lat.append(await timed(client.get_alert(str(i))))
        out["get_alert_p99"] = pct(lat, .99)
        filters = {
            "model": lambda: {"model_id": f"m{rng.randrange(args.models)}"},
            "state": lambda: {"state": rng.choice(["OPEN", "RESOLVED", "ACKNOWLEDGED", "ACTIONED"])},
            "type": lambda: {"type": rng.choice(["drift", "performance", "risk", "age"])},
            "window": lambda: (lambda s: {"start_time": s, "end_time": s + dt.timedelta(days=1)})(
                now - dt.timedelta(days=rng.uniform(1, days))),
        }
        out["list_p99"] = {}
        for name, make in filters.items():
            lat = []
            for _ in range(20):
                kwargs, token = make(), ""
                for _page in range(5):
                    t = time.perf_counter()
                    page = await client.list_alerts(page_size=50, page_token=token, **kwargs)
                    lat.append(time.perf_counter() - t)
                    token = page.next_page_token
                    if not token:
                        break
            out["list_p99"][name] = pct(lat, .99)
        since = now - dt.timedelta(days=30)
        out["feedback_model"] = await slowest(5, lambda: client.feedback_report(
            model_id=f"m{rng.randrange(args.models)}", start_time=since, end_time=now))
        out["feedback_all"] = await slowest(2, lambda: client.feedback_report(start_time=since, end_time=now))
        if stored:
            source = (await client.get_rule_set()).source
            window = dt.timedelta(days=days) * min(1.0, args.backtest_alerts / stored)
            # The rate is over the alerts the server says it replayed: the window also holds what
            # earlier --reuse runs' latency phases stored (tens of thousands a run, in the last days).
            t = time.perf_counter()
            try:
                report = await client.backtest_rules(source, now - window, now)
                out["backtest_alerts"] = report.alerts
                out["backtest_alerts_per_s"] = report.alerts / (time.perf_counter() - t)
            except grpc.aio.AioRpcError as exc:
                print(f"  refused: {exc.code().name} {exc.details()}", flush=True)
                out["backtest_alerts"], out["backtest_alerts_per_s"] = 0, 0.0
        out["console"] = await console_pages(http_url, args.models, stored or top)
    return out


async def console_pages(http_url: str, models: int, top_alert: int, times: int = CONSOLE_REQUESTS) -> dict:
    """{page: (p50 ms, p99 ms)}: each console page requested `times` times in turn (a random model or
    alert each time), timed from request to the whole body on loopback; every answer must be 200."""
    rng = random.Random(9)
    pages = {"overview": lambda: "/", "overview_7d": lambda: "/?range=7d",
             "model": lambda: f"/models/m{rng.randrange(models)}", "rules": lambda: "/rules",
             "alert": lambda: f"/alerts/{rng.randint(1, top_alert)}"}
    out = {}
    async with aiohttp.ClientSession(http_url) as session:
        for name, path in pages.items():
            lat = []
            for _ in range(times + 1):   # the first warms the connection and the templates
                t = time.perf_counter()
                async with session.get(path()) as response:
                    await response.read()
                    if response.status != 200:
                        raise RuntimeError(f"console {name}: HTTP {response.status}")
                lat.append(time.perf_counter() - t)
            out[name] = (pct(lat[1:], .5), pct(lat[1:], .99))
    return out


async def slowest(times: int, call) -> float:
    """The slowest of `times` calls in ms; a call the server refuses (e.g. UNAVAILABLE when a report
    outlasts --db-timeout) is printed and counts as infinitely slow instead of ending the run."""
    worst = 0.0
    for _ in range(times):
        try:
            worst = max(worst, await timed(call()) * 1000)
        except grpc.aio.AioRpcError as exc:
            print(f"  refused: {exc.code().name} {exc.details()}", flush=True)
            return float("inf")
    return worst


def create_alert_buckets() -> dict[float, float]:
    """The server's CreateAlert latency histogram (metrics.RPC_SECONDS, measured around the handler by
    the interceptors) as cumulative counts by upper bound in seconds."""
    from closedloop.server import metrics

    out: dict[float, float] = {}
    for metric in metrics.RPC_SECONDS.collect():
        for sample in metric.samples:
            if sample.name.endswith("_bucket") and sample.labels.get("method") == "CreateAlert":
                out[float(sample.labels["le"])] = sample.value
    return out


def bucket_p99(before: dict[float, float], after: dict[float, float]) -> float:
    """The upper bound of the bucket holding the 99th percentile of what was observed between two
    readings of create_alert_buckets (coarse: the histogram's buckets are Prometheus's)."""
    total = after.get(float("inf"), 0.0) - before.get(float("inf"), 0.0)
    for bound in sorted(after):
        if total and after[bound] - before.get(bound, 0.0) >= 0.99 * total:
            return bound
    return float("nan")


def _probes_line(probes: dict) -> str:
    """What the server saw in the latency phase: its own submit -> reply time and where the tail of it
    went (stage_timings.py), its event-loop lag and its collections."""
    stages = probes["stages"]
    return (f"CreateAlert handler p99 <= {probes['rpc_p99_at_most_ms']:g} ms; "
            + "submit->reply p50/p99 " + "/".join(f"{stages['total'][q] * 1000:.1f}" for q in ("p50", "p99"))
            + " ms (p99: " + ", ".join(f"{s} {stages[s]['p99'] * 1000:.1f}" for s in (
                "queue", "write", "reply", "writer_wait", "state_read", "decide_write", "commit") if s in stages)
            + f"; decision batches decided again under the locks {stages.get('conflict', {}).get('count', 0)}"
            + f"); facts read on the alert's path {probes['facts_misses']}"
            + f"; event-loop lag p99 {probes['lag_ms']['p99']:.1f} ms max {probes['lag_ms']['max']:.1f} ms; GC "
            + ", ".join(f"gen{g} {p['count']}x max {p['max_ms']:.1f} ms" for g, p in sorted(probes["gc"].items()))
            + "; client GC max " + "/".join(f"{p['max_ms']:.1f}" for _, p in sorted(probes["client_gc"].items()))
            + " ms (gen0/1/2)"
            + f"; client event-loop lag p99 {probes['client_lag_ms']['p99']:.1f} ms max "
              f"{probes['client_lag_ms']['max']:.1f} ms, {probes['client_lag_ms']['stalls']} stalls >= "
              f"{CLIENT_STALL_MS:g} ms")


def start_server(database_url: str, db_timeout: float) -> tuple[multiprocessing.Process, multiprocessing.Queue,
                                                                tuple]:
    ctx = multiprocessing.get_context("spawn")
    q = ctx.Queue()
    data_dir = tempfile.mkdtemp(prefix="closedloop-scale-")
    proc = ctx.Process(target=run_server, args=(q, database_url, data_dir, db_timeout), daemon=True)
    t0 = time.perf_counter()
    proc.start()
    port, http_port, startup, sweep, sent = q.get(timeout=600)
    return proc, q, (port, http_port, startup, sweep, sent, time.perf_counter() - t0, data_dir)


async def console_rollup(url: str) -> float:
    """Bring the console's hourly roll-up up to date (a server's periodic pass would); seconds taken."""
    import asyncpg

    pool = await asyncpg.create_pool(url, min_size=1, max_size=1)
    try:
        t0 = time.perf_counter()
        await console_hourly.roll_up(pool)
        return time.perf_counter() - t0
    finally:
        await pool.close()


async def feedback_rollup(url: str) -> float:
    """Count the whole history into the feedback report's daily aggregates, as the servers that run
    workers do every minute (feedback/rollup.py; the benchmark's servers run none); seconds taken."""
    import asyncpg

    from closedloop.server.feedback.rollup import roll_up

    pool = await asyncpg.create_pool(url, min_size=1, max_size=1, command_timeout=None)
    try:
        t0 = time.perf_counter()
        await roll_up(pool)
        return time.perf_counter() - t0
    finally:
        await pool.close()


async def _reusable(admin, server_url: str, db: str, alerts: int, models_wanted: int) -> bool:
    """--reuse: the full database a previous run loaded, if it holds what this run asks for (the
    empty one is always made anew: it is quick, and must stay empty). Its schema is
    brought up to date (a new migration's indexes are built here, not in the measured start-up) and so
    are its roll-ups; the alerts earlier runs' measurements added (a few thousand) stay."""
    import asyncpg

    from closedloop.server.db.migrations import migrate

    if not await admin.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", db):
        return False
    url = urlunsplit(urlsplit(server_url)._replace(path="/" + db))
    conn = await asyncpg.connect(url)
    try:
        stored = await conn.fetchval("SELECT count(*) FROM monitoring_alert_triggers")
        models = await conn.fetchval("SELECT count(*) FROM monitoring_retraining_integration")
        if stored < alerts or models != models_wanted:
            return False
        t0 = time.perf_counter()
        await migrate(conn)
        await conn.execute("ANALYZE")
        await console_rollup(url)
        await feedback_rollup(url)
        print(f"reused {db}: {stored:,} alerts, {models:,} models (migrations, ANALYZE and roll-ups "
              f"brought up to date in {time.perf_counter() - t0:.0f} s)")
        return True
    finally:
        await conn.close()


async def prepare(server_url: str, args) -> dict[str, str]:
    import asyncpg

    from closedloop.server.db.migrations import migrate

    urls = {}
    admin = await asyncpg.connect(server_url)
    now = dt.datetime.now(UTC)
    try:
        for name in ("empty", "full"):
            db = f"closedloop_scale_{name}"
            if name == "full" and args.reuse and await _reusable(admin, server_url, db, args.alerts, args.models):
                urls[name] = urlunsplit(urlsplit(server_url)._replace(path="/" + db))
                continue
            await admin.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
            await admin.execute(f'CREATE DATABASE "{db}"')
            urls[name] = urlunsplit(urlsplit(server_url)._replace(path="/" + db))  # keeps ?host=...
            conn = await asyncpg.connect(urls[name])
            try:
                await migrate(conn)
                await store_default_rules(conn)
                await fill_models(conn, args.models, now)
                if name == "full":
                    t0 = time.perf_counter()
                    await fill_history(conn, args.alerts, args.models, args.days, args.jobs, now)
                    secs = time.perf_counter() - t0
                    rolled = await console_rollup(urls[name])
                    counted = await feedback_rollup(urls[name])
                    size = await conn.fetchval("SELECT pg_size_pretty(pg_database_size(current_database()))")
                    print(f"load: {args.alerts:,} alerts over {args.days} days in {secs:.0f} s "
                          f"({args.alerts / secs:,.0f} alerts/s with actions, keys, jobs; ANALYZE included); "
                          f"database {size}; console roll-up of the last {console_hourly.HORIZON.days} days "
                          f"in {rolled:.1f} s; feedback roll-up of all {args.alerts:,} alerts in {counted:.0f} s "
                          f"({args.alerts / counted:,.0f} alerts/s)")
                else:
                    await conn.execute("ANALYZE")
            finally:
                await conn.close()
    finally:
        await admin.close()
    return urls


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--alerts", type=int, default=10_000_000)
    ap.add_argument("--models", type=int, default=10_000)
    ap.add_argument("--days", type=int, default=180)
    ap.add_argument("--jobs", type=int, default=100_000)
    ap.add_argument("--backtest-alerts", type=int, default=1_000_000)
    ap.add_argument("--latency-seconds", type=float, default=6.0, help="each open-loop phase's length")
    ap.add_argument("--latency-rounds", type=int, default=5,
                    help="open-loop phases per database, interleaved (more rounds: a noisy stretch weighs less)")
    ap.add_argument("--db-timeout", type=float, default=5.0,
                    help="the servers' --db-timeout (a report or backtest that outlasts it is refused)")
    ap.add_argument("--reuse", action="store_true",
                    help="keep the databases a previous run loaded on --database-url when they hold enough")
    ap.add_argument("--database-url", default=os.environ.get("CLOSEDLOOP_TEST_DATABASE_URL"),
                    help="a PostgreSQL server URL (two databases are created on it); default: embedded")
    args = ap.parse_args()
    pg = None
    if args.database_url is None:
        import pgserver

        pg = pgserver.get_server(tempfile.mkdtemp(prefix="closedloop-scale-pg-"), cleanup_mode="stop")
        args.database_url = pg.get_uri()
    try:
        urls = asyncio.run(prepare(args.database_url, args))
        servers = {}
        try:
            for name in ("empty", "full"):
                servers[name] = start_server(urls[name], args.db_timeout)
            results = asyncio.run(decision_latency(
                {name: (f"127.0.0.1:{port}", proc.pid, data_dir)
                 for name, (proc, _, (port, _, _, _, _, _, data_dir)) in servers.items()}, args, urls["empty"]))
            for name, (proc, q, (port, http_port, startup, sweep, sent, process_start, _)) in servers.items():
                figures = results[name]
                figures.update(asyncio.run(measure(f"127.0.0.1:{port}", f"http://127.0.0.1:{http_port}", args,
                                                   args.alerts if name == "full" else 0, args.days)))
                os.kill(proc.pid, signal.SIGUSR1)
                q.get(timeout=300)
                figures.update(startup=startup, process_start=process_start, sweep=sweep, sweep_sent=sent,
                               rss=rss_mb(proc.pid))
                f = figures
                print(f"{name:5}  start-up {f['startup']:.2f} s (process {f['process_start']:.2f} s)  "
                      f"age sweep {f['sweep']:.3f} s ({f['sweep_sent']} alerts)  RSS {f['rss']:.0f} MB")
                print(f"{name:5}  CreateAlert at {f['rate']:.0f}/s, {args.latency_rounds} rounds: decision p50 "
                      f"{f['decision_p50']:.2f} ms p99 {f['decision_p99']:.2f} ms (rounds' p99: "
                      + ", ".join(f"{x:.1f}" for x in f["rounds"]) + " ms)"
                      + (f" (capacity {f['capacity']:.0f}/s)" if "capacity" in f else ""))
                print(f"{name:5}  GetAlert p99 {f['get_alert_p99']:.2f} ms; ListAlerts p99 "
                      + ", ".join(f"{k} {v:.2f} ms" for k, v in f["list_p99"].items()))
                print(f"{name:5}  GetFeedbackReport 30 days: one model {f['feedback_model']:.1f} ms, "
                      f"all {f['feedback_all']:.1f} ms"
                      + (f"; BacktestRules {f['backtest_alerts']:,} alerts at {f['backtest_alerts_per_s']:,.0f}/s"
                         if "backtest_alerts" in f else ""))
                print(f"{name:5}  console p50/p99 ms: "
                      + ", ".join(f"{k} {p50:.1f}/{p99:.1f}" for k, (p50, p99) in f["console"].items()))
        finally:
            for proc, _, _ in servers.values():
                proc.terminate()
                proc.join(60)
    finally:
        if pg is not None:
            pg.cleanup()
    e, f = results["empty"], results["full"]
    print(f"RESULT decision_p99_ratio={f['decision_p99'] / e['decision_p99']:.2f} "
          f"get_alert_p99_ms={f['get_alert_p99']:.2f} list_alerts_p99_ms={max(f['list_p99'].values()):.2f} "
          f"feedback_model_ms={f['feedback_model']:.1f} feedback_all_ms={f['feedback_all']:.1f} "
          f"backtest_alerts_per_s={f['backtest_alerts_per_s']:.0f} age_sweep_s={f['sweep']:.3f} "
          f"startup_s={f['startup']:.2f} rss_mb={f['rss']:.0f} "
          f"console_worst_ms={max(p99 for _, p99 in f['console'].values()):.1f} "
          f"console_empty_worst_ms={max(p99 for _, p99 in e['console'].values()):.1f}")


if __name__ == "__main__":
    main()
