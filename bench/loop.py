"""Loop benchmark: what rules and decisions cost, and alert→decision latency under load.

    python bench/loop.py [--alerts 4000] [--models 200] [--concurrency 64] [--rounds 4] [--latency-seconds 6]
                         [--loads 0.5,0.8] [--no-gc-tuning]

One server process (embedded PostgreSQL, no training workers: this measures the decision path),
one run, three phases on the same alert mix (drift, performance, risk over many registered models):
  1. no rules active (an empty rule set)      -> baseline CreateAlert throughput
  2. the default rules active                 -> throughput with evaluation + decisions in PostgreSQL
  3. default rules, open loop at each of --loads x (2) -> latency of CreateAlert, whose reply is the decision

The open loop sends on a fixed schedule and measures each reply from the request's *intended* send
time, so a stall of the client or the server counts against every request it delayed (no
coordinated omission). For each load it prints p50/p90/p99/p99.9/max, then what the server saw in
that phase: the ingest path's stage histograms (server/loop/stage_timings.py), its garbage-collection
pauses and its event-loop lag (probes installed by this benchmark in the server process).

The floor: after the server, the same open loop at the same rates against an empty grpc.aio
AlertService (bench/ingest.py's), in the same run: what the client, gRPC and this machine cost a
request before closedloop does anything. The latencies are printed beside it and as ratios to it.
Last line: RESULT rules_cost=… decision_p99_ms=… decision_p999_ms=… (half load) … p99_ms_at_80=…
floor_p50_ms=… floor_p99_ms=… (half load)
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import multiprocessing
import os
import random
import shutil
import signal
import sys
import tempfile
import time

import grpc

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from ingest import run_empty_server, start  # noqa: E402  (same folder)

from closedloop import AsyncClient  # noqa: E402
from closedloop.v1 import alert_pb2, alert_pb2_grpc  # noqa: E402

SLOW_GC_S = 0.002  # a collection at least this long is listed apart


class GcProbe:
    """Pause of every garbage collection, per generation (gc.callbacks)."""

    def __init__(self) -> None:
        self.pauses: dict[int, list[float]] = {0: [], 1: [], 2: []}
        self._started = 0.0
        gc.callbacks.append(self._callback)

    def _callback(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.pauses[info["generation"]].append(time.perf_counter() - self._started)

    def reset(self) -> None:
        for pauses in self.pauses.values():
            pauses.clear()

    def summary(self) -> dict:
        return {gen: {"count": len(p), "total_ms": sum(p) * 1000, "max_ms": max(p, default=0) * 1000,
                      "slow": len([x for x in p if x >= SLOW_GC_S])} for gen, p in self.pauses.items()}


class LagProbe:
    """Event-loop lag: how late a 1 ms sleep wakes up (a blocked loop delays every request)."""

    def __init__(self) -> None:
        self.lags: list[float] = []

    async def run(self) -> None:
        while True:
            t = time.perf_counter()
            await asyncio.sleep(0.001)
            self.lags.append(time.perf_counter() - t - 0.001)

    def summary(self, stall_ms: float = 10.0) -> dict:
        """The lags so far in ms: p50, p99, max, the samples, and the stalls (wake-ups `stall_ms` or more late)."""
        lags = sorted(self.lags) or [0.0]
        return {"p50": lags[len(lags) // 2] * 1000, "p99": lags[int(len(lags) * .99)] * 1000, "max": lags[-1] * 1000,
                "samples": len(self.lags), "stalls": sum(1 for x in lags if x * 1000 >= stall_ms)}


def run_probed_server(port_queue, data_dir: str, gc_tuning: bool) -> None:
    """The real server with the probes; SIGUSR1 resets them, SIGUSR2 writes them to probes.json."""
    from closedloop.server.app import create_server, settle_collector
    from closedloop.server.config import Settings
    from closedloop.server.logging_setup import configure_logging

    configure_logging("json", "warning")

    async def main():
        settings = Settings(data_dir=data_dir, listen="127.0.0.1:0", run_workers=False, age_sweep_interval=0,
                            log_format="json", log_level="warning")
        server, port = await create_server(settings)
        if gc_tuning:  # as `closedloop serve` does after start-up (app.py)
            settle_collector()
        gc_probe, lag_probe = GcProbe(), LagProbe()
        lag_task = asyncio.create_task(lag_probe.run())
        cpu_since = [time.process_time()]

        def reset() -> None:
            cpu_since[0] = time.process_time()
            server.ingestor.timings.reset()
            gc_probe.reset()
            lag_probe.lags.clear()

        def dump() -> None:
            probes = {"stages": server.ingestor.timings.snapshot(), "gc": gc_probe.summary(),
                      "cpu_s": time.process_time() - cpu_since[0], "lag_ms": lag_probe.summary()}
            with open(os.path.join(data_dir, "probes.json.tmp"), "w") as f:
                json.dump(probes, f)
            os.replace(os.path.join(data_dir, "probes.json.tmp"), os.path.join(data_dir, "probes.json"))

        stopping = asyncio.Event()
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, stopping.set)
        loop.add_signal_handler(signal.SIGUSR1, reset)
        loop.add_signal_handler(signal.SIGUSR2, dump)
        port_queue.put(port)
        await stopping.wait()
        lag_task.cancel()
        await server.stop(1)

    asyncio.run(main())
    # The estimator checker's process pool (executor/training_spec.py, started by RegisterModel)
    # would keep this process waiting at exit, and outlive it holding the benchmark's stdout.
    for child in multiprocessing.active_children():
        child.terminate()
        child.join(10)
    os._exit(0)


def alert_mix(n: int, models: int, seed: int, prefix: str) -> list[alert_pb2.CreateAlertRequest]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        kind = rng.choice(("drift", "drift", "performance", "risk"))
        metrics = {"drift": {"drift_score": rng.uniform(0.1, 0.5)},
                   "performance": {"performance_drop": rng.uniform(0.0, 0.3)},
                   "risk": {"risk_score": rng.uniform(40, 100)}}[kind]
        out.append(alert_pb2.CreateAlertRequest(
            alert=alert_pb2.Alert(model_id=f"m{rng.randrange(models)}", type=kind, severity=rng.randint(1, 4),
                                  metrics=metrics, labels={"desk": "fx"}),
            request_id=f"{prefix}-{i}"))
    return out


async def closed_loop(stub, requests, concurrency: int) -> float:
    it = iter(requests)

    async def worker():
        for r in it:
            await stub.CreateAlert(r)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return len(requests) / (time.perf_counter() - started)


async def open_loop(stub, requests, rate: float) -> tuple[list[float], int]:
    """Send at a fixed rate regardless of replies; each reply's latency from its intended send time.
    A request the server refuses (e.g. RESOURCE_EXHAUSTED past --max-concurrent-rpcs when the machine
    cannot keep up) counts as infinitely slow, so the percentiles show it instead of the run ending."""
    latencies: list[float] = []
    decided = 0

    async def one(r, intended: float):
        nonlocal decided
        try:
            reply = await stub.CreateAlert(r)
        except grpc.aio.AioRpcError:
            latencies.append(float("inf"))
            return
        latencies.append(time.perf_counter() - intended)
        decided += bool(reply.actions)

    tasks = []
    start_t = time.perf_counter()
    for i, r in enumerate(requests):
        intended = start_t + i / rate
        delay = intended - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(r, intended)))
    await asyncio.gather(*tasks)
    return latencies, decided


def quantiles(values: list[float]) -> dict:
    values = sorted(values)

    def q(x: float) -> float:
        return values[min(len(values) - 1, int(x * len(values)))] * 1000

    return {"p50": q(.5), "p90": q(.9), "p99": q(.99), "p999": q(.999), "max": values[-1] * 1000}


async def server_probes(pid: int, data_dir: str) -> dict:
    """Ask the server process for its probes (SIGUSR2) and read them."""
    path = os.path.join(data_dir, "probes.json")
    if os.path.exists(path):
        os.remove(path)
    os.kill(pid, signal.SIGUSR2)
    for _ in range(200):
        if os.path.exists(path):
            with open(path) as f:
                return json.load(f)
        await asyncio.sleep(0.05)
    raise RuntimeError("the server wrote no probes")


async def run(target: str, pid: int, data_dir: str, args) -> dict:
    async with AsyncClient(target, timeout=60) as client:
        for m in range(args.models):
            await client.register_model({
                "model_id": f"m{m}", "enabled": True,
                "training": {"estimator": "linear_model.SGDClassifier", "synthetic": {"seed": m},
                             "target": "direction", "metric": "accuracy"}})
        default_rules = (await client.get_rule_set()).source
        stub = alert_pb2_grpc.AlertServiceStub(client.channel)
        # Alternate the two phases and keep each one's best round: the machine is shared and noisy.
        without_runs, with_runs = [], []
        # The order flips every round, so neither phase always runs on the bigger tables.
        for round_ in range(args.rounds):
            phases = [("", "no-rules", without_runs), (default_rules, "default.rules", with_runs)]
            for source, name, runs in (phases if round_ % 2 == 0 else phases[::-1]):
                await client.apply_rules(source, name)
                await closed_loop(stub, alert_mix(300, args.models, 1, f"warm-{name}-{round_}"), args.concurrency)
                runs.append(await closed_loop(
                    stub, alert_mix(args.alerts, args.models, 2, f"{name}-{round_}"), args.concurrency))
        without, with_rules = max(without_runs), max(with_runs)
        print("rounds (alerts/s): no rules " + " ".join(f"{r:.0f}" for r in without_runs)
              + "; default rules " + " ".join(f"{r:.0f}" for r in with_runs))
        await client.apply_rules(default_rules, "default.rules")  # the rounds may end on the empty set
        phases = []
        for share in args.loads:
            rate = with_rules * share
            n = int(rate * args.latency_seconds)
            requests = alert_mix(n, args.models, 4, f"lat-{share}")
            # Let PostgreSQL settle after the previous phase (autovacuum of the fresh rows), then a
            # steady open loop. The client's own collector is frozen and measured like the server's:
            # its pauses delay sends and replies, and the corrected latencies charge them in full.
            await asyncio.sleep(2)
            gc.collect()
            gc.freeze()
            client_gc = GcProbe()
            os.kill(pid, signal.SIGUSR1)
            latencies, decided = await open_loop(stub, requests, rate)
            probes = await server_probes(pid, data_dir)
            gc.callbacks.remove(client_gc._callback)
            probes["client_gc"] = client_gc.summary()
            phases.append(dict(share=share, rate=rate, sent=n, decided=decided, latency=quantiles(latencies),
                               probes=probes))
        jobs = len((await client.list_jobs(page_size=1000)).jobs)
    return dict(without=without, with_rules=with_rules, phases=phases, jobs=jobs)


async def open_loops(target: str, rates: list[float], models: int, latency_seconds: float, tag: str) -> list[dict]:
    """After a warm-up, the open loop at each of `rates` against the AlertService at `target`: the
    latency quantiles per rate."""
    async with grpc.aio.insecure_channel(target) as channel:
        stub = alert_pb2_grpc.AlertServiceStub(channel)
        await closed_loop(stub, alert_mix(300, models, 1, f"warm-{tag}"), 64)
        out = []
        for i, rate in enumerate(rates):
            requests = alert_mix(int(rate * latency_seconds), models, 4, f"{tag}-{i}")
            await asyncio.sleep(1)
            gc.collect()
            gc.freeze()
            try:
                latencies, _ = await open_loop(stub, requests, rate)
            finally:
                gc.unfreeze()
            out.append(quantiles(latencies))
        return out


async def floor(target: str, phases: list[dict], models: int, latency_seconds: float) -> list[dict]:
    """The same open loop, at each phase's rate, against the empty handler at `target`."""
    return await open_loops(target, [phase["rate"] for phase in phases], models, latency_seconds, "floor")


def print_probes(probes: dict) -> None:
    stages = probes["stages"]
    print("   server stages (ms; per request: queue/write/reply/total; per batch: the rest; batch_size in items)")
    for kind in ("all", "slow"):
        for stage, h in stages[kind].items():
            scale = 1 if stage == "batch_size" else 1000
            print(f"   {kind:4} {stage:12} n={h['count']:6}  mean {h['mean'] * scale:7.2f}  p50 {h['p50'] * scale:7.2f}"
                  f"  p99 {h['p99'] * scale:7.2f}  max {h['max'] * scale:7.2f}")
    for side in ("gc", "client_gc"):
        g = probes[side]
        print(f"   {side:9} " + "  ".join(f"gen{gen}: {v['count']} in {v['total_ms']:.1f} ms (max {v['max_ms']:.2f}, "
                                         f">= {SLOW_GC_S * 1000:g} ms: {v['slow']})" for gen, v in g.items()))
    lag = probes["lag_ms"]
    print(f"   server event-loop lag: p50 {lag['p50']:.2f} ms  p99 {lag['p99']:.2f} ms  max {lag['max']:.2f} ms "
          f"({lag['samples']} samples)")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--alerts", type=int, default=4000)
    ap.add_argument("--models", type=int, default=200)
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--latency-seconds", type=float, default=6.0, help="length of each open-loop phase")
    ap.add_argument("--loads", default="0.5,0.8", help="open-loop rates as shares of the measured capacity")
    ap.add_argument("--no-gc-tuning", action="store_true",
                    help="skip the server's collector tuning (gc.freeze after start-up) to measure what it buys")
    args = ap.parse_args()
    args.loads = [float(x) for x in args.loads.split(",")]
    data_dir = tempfile.mkdtemp(prefix="closedloop-bench-")
    proc, port = start(run_probed_server, data_dir, not args.no_gc_tuning)
    try:
        r = asyncio.run(run(f"127.0.0.1:{port}", proc.pid, data_dir, args))
    finally:
        proc.terminate()
        proc.join(30)
        shutil.rmtree(data_dir, ignore_errors=True)
    # The floor runs after closedloop's server has stopped, so neither one's process shares the cores
    # with the other's phases.
    empty, empty_port = start(run_empty_server)
    try:
        floors = asyncio.run(floor(f"127.0.0.1:{empty_port}", r["phases"], args.models, args.latency_seconds))
    finally:
        empty.terminate()
        empty.join(30)
    cost = 1 - r["with_rules"] / r["without"]
    print(f"no rules        {r['without']:8.0f} alerts/s (C={args.concurrency})")
    print(f"default rules   {r['with_rules']:8.0f} alerts/s  -> rules and decisions cost {cost:.1%} of throughput "
          f"(target <= 20%)")
    result = f"RESULT rules_cost={cost:.3f}"
    for phase, low in zip(r["phases"], floors):
        lat = phase["latency"]
        target = "p99 <= 10 ms, p50 <= 3 ms" if phase["share"] <= 0.5 else "p99 <= 25 ms"
        print(f"open loop at {phase['rate']:.0f} alerts/s ({phase['share']:.0%} of capacity), {phase['sent']} alerts, "
              f"{phase['decided']} with decisions: alert->decision from intended send p50 {lat['p50']:.2f} ms  "
              f"p90 {lat['p90']:.2f}  p99 {lat['p99']:.2f}  p99.9 {lat['p999']:.2f}  max {lat['max']:.2f} ms "
              f"(target {target})")
        print(f"   floor (empty grpc.aio handler, same rate, same client): p50 {low['p50']:.2f} ms"
              f"  p90 {low['p90']:.2f}"
              f"  p99 {low['p99']:.2f}  p99.9 {low['p999']:.2f}  max {low['max']:.2f} ms; closedloop / floor: p50 "
              f"{lat['p50'] / low['p50']:.1f}x  p99 {lat['p99'] / low['p99']:.1f}x")
        print_probes(phase["probes"])
        print(f"   server process CPU: {phase['probes']['cpu_s'] / phase['sent'] * 1e6:.0f} us per alert")
        if phase["share"] == 0.5:
            result += (f" decision_p99_ms={lat['p99']:.2f} decision_p999_ms={lat['p999']:.2f}"
                       f" decision_p50_ms={lat['p50']:.2f} decision_max_ms={lat['max']:.2f}"
                       f" floor_p50_ms={low['p50']:.2f} floor_p99_ms={low['p99']:.2f}")
        else:
            tag = f"{phase['share'] * 100:.0f}"
            result += f" p99_ms_at_{tag}={lat['p99']:.2f} p999_ms_at_{tag}={lat['p999']:.2f}"
    print(f"retrain jobs queued over the run: {r['jobs']}")
    print(result + f" alerts_per_s_rules={r['with_rules']:.0f} alerts_per_s_no_rules={r['without']:.0f}")


if __name__ == "__main__":
    main()
