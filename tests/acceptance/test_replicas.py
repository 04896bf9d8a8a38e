"""Three server processes on one database under concurrent load keep every decision invariant.

Two ingest-only replicas (`--no-run-workers`) and one that also runs the training workers share the
test's database. Alerts for many models (drift, risk, performance and age, most of them retrain-
worthy) are spread over the three in three waves; between waves the worker replica trains every
queued job, so later waves meet finished jobs, spent budgets and running cooldowns instead of an
active job to coalesce into. Some request_ids are sent to every replica at once and again later.

What is checked, from the database and the replies:
- one active job per model at any time: sampled while the load runs, and afterwards no two jobs of a
  model ran at once (each started after the previous one ended);
- cooldowns: no two QUEUED actions of one rule for one model closer than the cooldown in force;
- budgets: no model has more automated jobs than its max_retrains_per_day, and the cap was reached;
- idempotency across replicas: a request_id is stored once, and every replica answers it alike.
"""

from __future__ import annotations

import asyncio
import collections
import datetime as dt
import random

import asyncpg
import pytest

from closedloop import AsyncClient
from closedloop.v1 import alert_pb2

from .helpers import start_server_process, stop_process, synthetic_model

pytestmark = pytest.mark.slow

# The cooldowns of dsl/default.rules, which the servers run (no --rules).
RULE_COOLDOWN_S = {"drift_auto_retrain": 24 * 3600, "performance_auto_retrain": 12 * 3600,
                   "model_age_auto_retrain": 7 * 86400, "risk_auto_retrain": 3600}
PLAIN, NO_COOLDOWN, BUDGETED = 16, 8, 6       # models of each kind
BUDGET = 2                                    # max_retrains_per_day of the BUDGETED models
WAVES, ALERTS_PER_WAVE, REPEATED_IDS = 3, 160, 12
TRAINING = {"estimator": "linear_model.SGDClassifier", "params": {"loss": "log_loss", "random_state": 0},
            "synthetic": {"seed": 7, "drift": 0.3, "rows": 300}, "target": "direction", "metric": "accuracy",
            "holdout_fraction": 0.25, "promotion_margin": 0.0}


def model_ids() -> dict[str, list[str]]:
    return {"plain": [f"plain-{i}" for i in range(PLAIN)],
            "no_cooldown": [f"free-{i}" for i in range(NO_COOLDOWN)],
            "budgeted": [f"budget-{i}" for i in range(BUDGETED)]}


def random_alert(rng: random.Random, model_id: str) -> dict:
    kind = rng.choice(["drift", "drift", "risk", "performance", "age"])
    metrics = {"drift": {"drift_score": rng.uniform(0.1, 0.9)}, "risk": {"risk_score": rng.uniform(60, 100)},
               "performance": {"performance_drop": rng.uniform(0.0, 0.3)}, "age": {}}[kind]
    return {"model_id": model_id, "type": kind, "severity": rng.choice(["medium", "high", "critical"]),
            "metrics": metrics}


async def one_active_job_sampler(url: str, stop: asyncio.Event, seen: list) -> int:
    """Read the active jobs over and over while the load runs; record any model with two."""
    conn = await asyncpg.connect(url)
    samples = 0
    try:
        while not stop.is_set():
            seen.extend(await conn.fetch(
                "SELECT model_id, count(*) FROM retrain_jobs WHERE state IN ('QUEUED', 'RUNNING') "
                "GROUP BY model_id HAVING count(*) > 1"))
            samples += 1
            await asyncio.sleep(0.01)
    finally:
        await conn.close()
    return samples


async def wait_until_no_active_job(conn: asyncpg.Connection, timeout: float = 240) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while await conn.fetchval("SELECT count(*) FROM retrain_jobs WHERE state IN ('QUEUED', 'RUNNING')"):
        assert loop.time() < deadline, "the worker replica did not finish the queued jobs"
        await asyncio.sleep(0.2)


async def test_three_replicas_keep_every_decision_invariant(database_url, tmp_path):
    rng = random.Random(15)
    procs = [start_server_process(database_url, tmp_path / "ingest-0", "--no-run-workers"),
             start_server_process(database_url, tmp_path / "ingest-1", "--no-run-workers"),
             start_server_process(database_url, tmp_path / "worker", "--workers", "2")]
    clients = [AsyncClient(target, timeout=60, retries=2) for _, target in procs]
    conn = await asyncpg.connect(database_url)
    stop_sampling = asyncio.Event()
    doubles: list = []
    try:
        ids = model_ids()
        for m in ids["plain"]:
            await clients[0].register_model(synthetic_model(m, training=TRAINING))
        for m in ids["no_cooldown"]:
            await clients[1].register_model(synthetic_model(m, training=TRAINING, cooldown_override="0s"))
        for m in ids["budgeted"]:
            await clients[2].register_model(synthetic_model(m, training=TRAINING, cooldown_override="0s",
                                                            max_retrains_per_day=BUDGET))
        every_model = [m for group in ids.values() for m in group]
        sampler = asyncio.create_task(one_active_job_sampler(database_url, stop_sampling, doubles))

        observed = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
        repeats = {f"repeat-{i}": random_alert(rng, rng.choice(every_model)) for i in range(REPEATED_IDS)}
        replies: dict[str, list] = collections.defaultdict(list)

        async def send_repeat(rid: str, client: AsyncClient) -> None:
            replies[rid].append(await client.create_alert(**repeats[rid], observe_time=observed, request_id=rid))

        for wave in range(WAVES):
            sends = [clients[i % 3].create_alert(**random_alert(rng, rng.choice(every_model)))
                     for i in range(ALERTS_PER_WAVE)]
            # Every repeated request_id goes to all three replicas at once (first wave) and again
            # to each of them later (second wave), when the stored reply must come back unchanged.
            if wave < 2:
                sends += [send_repeat(rid, c) for rid in repeats for c in clients]
            rng.shuffle(sends)
            results = await asyncio.gather(*sends)
            assert all(r is None or r.id for r in results)
            await wait_until_no_active_job(conn)

        stop_sampling.set()
        samples = await sampler
        assert samples > 10 and doubles == [], doubles

        # Idempotency: one row per request_id, the same reply from every replica, every time.
        for rid, got in replies.items():
            assert len(got) == 6 and all(r == got[0] for r in got), rid
        stored = await conn.fetch("SELECT request_id, count(*) AS n FROM monitoring_alert_triggers "
                                  "WHERE request_id LIKE 'repeat-%' GROUP BY request_id")
        assert {r["request_id"]: r["n"] for r in stored} == {rid: 1 for rid in repeats}
        total = await conn.fetchval("SELECT count(*) FROM monitoring_alert_triggers")
        assert total == WAVES * ALERTS_PER_WAVE + REPEATED_IDS

        # One active job per model at any time: each job of a model started after the previous ended.
        jobs = await conn.fetch("SELECT id, model_id, state, manual, start_time, end_time FROM retrain_jobs "
                                "ORDER BY model_id, id")
        assert jobs and {j["state"] for j in jobs} <= {"SUCCEEDED", "FAILED"}
        by_model = collections.defaultdict(list)
        for j in jobs:
            by_model[j["model_id"]].append(j)
        for model_jobs in by_model.values():
            for before, after in zip(model_jobs, model_jobs[1:]):
                assert after["start_time"] >= before["end_time"], (before, after)

        # Cooldowns: QUEUED actions of one rule for one model are at least the cooldown apart.
        overrides = {m: 0.0 for m in ids["no_cooldown"] + ids["budgeted"]}
        queued = await conn.fetch("SELECT model_id, rule, create_time FROM closed_loop_actions "
                                  "WHERE decision = 'QUEUED' ORDER BY model_id, rule, create_time")
        last: dict[tuple[str, str], dt.datetime] = {}
        for a in queued:
            key = (a["model_id"], a["rule"])
            cooldown = overrides.get(a["model_id"], RULE_COOLDOWN_S[a["rule"]])
            if key in last:
                assert (a["create_time"] - last[key]).total_seconds() >= cooldown, a
            last[key] = a["create_time"]
        decisions = collections.Counter(await conn.fetchval(
            "SELECT array_agg(decision) FROM closed_loop_actions"))
        assert decisions["SKIPPED_COOLDOWN"] > 0 and decisions["COALESCED"] > 0

        # Budgets: never more automated jobs than the cap, and the cap was met and then enforced.
        automated = collections.Counter(j["model_id"] for j in jobs if not j["manual"])
        assert all(automated[m] <= BUDGET for m in ids["budgeted"]), automated
        assert any(automated[m] == BUDGET for m in ids["budgeted"])
        assert decisions["SKIPPED_BUDGET"] > 0
        # The models without a cooldown got a new job in more than one wave.
        assert max(automated[m] for m in ids["no_cooldown"]) > 1
    finally:
        stop_sampling.set()
        await conn.close()
        for c in clients:
            await c.close()
        for proc, _ in procs:
            stop_process(proc)
    for proc, _ in procs:
        assert proc.returncode == 0, proc.stderr.read().decode()[-2000:]
