"""How many round trips a decision batch costs: each one is time the single busy writer holds its
connection while the next batch waits (bench/README.md, loop). Counted with asyncpg's query logger
on the connections the ingest path uses, over a real server and database.

A decision batch is written the optimistic way (the state read without locks, then one statement
that takes the locks, checks the state and writes): two round trips. When the state changed in
between, that statement writes nothing and the batch goes the locked way (five more)."""

from __future__ import annotations

import asyncio
import contextlib
import random

from closedloop.server import metrics
from closedloop.server.store.queue import JOBS_CHANNEL
from closedloop.v1 import alert_pb2

from .helpers import synthetic_model

QUEUED, COALESCED = alert_pb2.ACTION_STATE_QUEUED, alert_pb2.ACTION_STATE_COALESCED


class _Counting:
    """Stands in for the ingestor's pool: every statement sent on an acquired connection is counted."""

    def __init__(self, pool) -> None:
        self.pool = pool
        self.statements: list[str] = []

    @contextlib.asynccontextmanager
    async def acquire(self):
        async with self.pool.acquire() as conn:
            conn.add_query_logger(self._log)
            try:
                yield conn
            finally:
                conn.remove_query_logger(self._log)

    def _log(self, record) -> None:
        # asyncpg introspects a type it meets for the first time on a connection (three statements,
        # jit off, the type query, jit back), once per connection: not part of a decision's cost.
        if "typeinfo_tree" in record.query or "set_config('jit'" in record.query:
            return
        self.statements.append(record.query)


async def _count(server, coro) -> tuple[object, list[str]]:
    counting = _Counting(server.ingestor.pool)
    server.ingestor.pool = counting
    try:
        result = await coro
    finally:
        server.ingestor.pool = counting.pool
    return result, counting.statements


async def test_a_decision_with_a_new_job_takes_two_round_trips(client, server):
    await client.register_model(synthetic_model("rt"))
    woken: asyncio.Queue = asyncio.Queue()
    async with server.pool.acquire() as listener:
        def wake(*args) -> None:
            woken.put_nowait(args[-1])

        await listener.add_listener(JOBS_CHANNEL, wake)
        alert, statements = await _count(server, client.create_alert("rt", "drift", "high",
                                                                     metrics={"drift_score": 0.9}))
        assert alert.actions[0].state == QUEUED
        # The state read; the locks, the check, alerts + jobs + actions + trigger links, committed.
        assert len(statements) == 2, statements
        assert "closedloop_write_decided" in statements[1]
        # Idle workers are woken with the new job's id, as enqueue does.
        assert await asyncio.wait_for(woken.get(), 10) == alert.actions[0].job_id
        await listener.remove_listener(JOBS_CHANNEL, wake)


async def test_a_batch_queueing_and_coalescing_still_takes_two_round_trips(client, server):
    for m in ("rt-a", "rt-b", "rt-c"):
        await client.register_model(synthetic_model(m))
    performance = dict(type="performance", severity="high", metrics={"performance_drop": 0.2})
    risk = dict(type="risk", severity="critical", metrics={"risk_score": 95})
    first = await client.create_alert("rt-a", **performance)
    # New jobs for two models, triggers coalescing into them and into rt-a's active job (a rule
    # without a cooldown running): the round trips do not grow with the number of jobs.
    burst = [client.create_alert(m, **kind) for m, kind in
             (("rt-a", risk), ("rt-b", performance), ("rt-c", performance), ("rt-b", risk), ("rt-c", risk))]
    before = server.ingestor.batches_committed
    alerts, statements = await _count(server, asyncio.gather(*burst))
    batches = server.ingestor.batches_committed - before
    assert [a.actions[0].state for a in alerts] == [COALESCED, QUEUED, QUEUED, COALESCED, COALESCED]
    assert len({a.actions[0].job_id for a in alerts} | {first.actions[0].job_id}) == 3
    for a in alerts:  # a trigger joining a job of its own batch names that job
        assert a.actions[0].job_id in a.actions[0].reason or a.actions[0].state == QUEUED, a.actions[0].reason
    async with server.pool.acquire() as conn:
        jobs = {r["model_id"]: r for r in await conn.fetch("SELECT * FROM retrain_jobs")}
    for m, queued in (("rt-a", first), ("rt-b", alerts[1]), ("rt-c", alerts[2])):
        job = jobs[m]
        assert (job["priority"], job["coalesced_triggers"]) == (4, 1)
        assert job["trigger_action_id"] == int(queued.actions[0].id)
    assert len(statements) == 2 * batches, (batches, statements)


async def test_a_job_that_appeared_after_the_snapshot_is_joined(client, server, monkeypatch):
    from closedloop.server.store import models as model_store

    await client.register_model(synthetic_model("appeared"))
    manual = await client.submit_retrain("appeared", mode="incremental", priority="low", reason="by hand")
    read_state = model_store.decision_state

    async def stale_state(conn, model_ids, cooldown_s):  # as if read just before the manual job was submitted
        rows = [dict(r) for r in await read_state(conn, model_ids, cooldown_s)]
        for r in rows:
            r["active_job"] = None
        return rows

    monkeypatch.setattr(model_store, "decision_state", stale_state)
    alert = await client.create_alert("appeared", "drift", "high", metrics={"drift_score": 0.9})
    [action] = alert.actions
    assert action.state == COALESCED and action.job_id == manual.id, action
    async with server.pool.acquire() as conn:
        [job] = await conn.fetch("SELECT * FROM retrain_jobs WHERE model_id = 'appeared'")
    assert (job["mode"], job["priority"], job["coalesced_triggers"]) == ("FULL", 3, 1)


async def test_a_trigger_whose_job_ended_after_the_snapshot_keeps_the_daily_budget(client, server, monkeypatch):
    """A worker finishes jobs without the decision lock: a trigger decided as joining a job that has
    ended by the write is decided again, and the daily budget it never met in the decider applies."""
    from closedloop.server.store import models as model_store

    await client.register_model(synthetic_model("ended", max_retrains_per_day=1))
    first = await client.create_alert("ended", "performance", "high", metrics={"performance_drop": 0.3})
    [queued] = first.actions
    assert queued.state == QUEUED
    async with server.pool.acquire() as conn:  # the worker finished it
        await conn.execute("UPDATE retrain_jobs SET state = 'SUCCEEDED', end_time = now() WHERE id = $1",
                           int(queued.job_id))
    read_state = model_store.decision_state

    async def stale_state(conn, model_ids, cooldown_s):  # as if read just before the job ended
        rows = [dict(r) for r in await read_state(conn, model_ids, cooldown_s)]
        for r in rows:
            r["active_job"] = int(queued.job_id)
        return rows

    monkeypatch.setattr(model_store, "decision_state", stale_state)
    alert = await client.create_alert("ended", "drift", "high", metrics={"drift_score": 0.9})
    [action] = alert.actions
    assert action.state == alert_pb2.ACTION_STATE_SKIPPED_BUDGET and not action.job_id, action
    assert alert.state == alert_pb2.ALERT_STATE_SUPPRESSED
    async with server.pool.acquire() as conn:
        jobs = await conn.fetch("SELECT id FROM retrain_jobs WHERE model_id = 'ended'")
        stored = await conn.fetchval("SELECT state FROM monitoring_alert_triggers WHERE id = $1", int(alert.id))
    assert [j["id"] for j in jobs] == [int(queued.job_id)] and stored == "SUPPRESSED"


async def test_the_state_read_keeps_a_cooldown_longer_than_the_rule_s(client, server):
    """The state read looks back only as far as the longest cooldown that can apply: the matched
    rules' and the model's override. A 60-day override still sees a retrain queued 40 days ago."""
    await client.register_model(synthetic_model("long-cool", cooldown_override="5184000s"))
    first = await client.create_alert("long-cool", "drift", "high", metrics={"drift_score": 0.9})
    [queued] = first.actions
    assert queued.state == QUEUED
    async with server.pool.acquire() as conn:  # that retrain is 40 days old, and long finished
        await conn.execute("UPDATE retrain_jobs SET state = 'SUCCEEDED', end_time = now(), "
                           "create_time = now() - interval '40 days' WHERE model_id = 'long-cool'")
        moved = await conn.execute("UPDATE closed_loop_actions SET create_time = now() - interval '40 days' "
                                   "WHERE model_id = 'long-cool'")  # into an older month's partition
        assert moved == "UPDATE 1"
    again = await client.create_alert("long-cool", "drift", "high", metrics={"drift_score": 0.9})
    [action] = again.actions
    assert action.state == alert_pb2.ACTION_STATE_SKIPPED_COOLDOWN, action


async def _with_change_before_the_write(monkeypatch, change) -> list[int]:
    """Run `change` (on its own connection, committed) between a batch's optimistic state read and
    its write; returns a list that counts how often it ran."""
    from closedloop.server.store import alerts as alert_store

    write = alert_store.write_decided
    ran: list[int] = []

    async def write_after_change(*args, **kwargs):
        ran.append(1)
        await change()
        return await write(*args, **kwargs)

    monkeypatch.setattr(alert_store, "write_decided", write_after_change)
    return ran


async def test_a_job_queued_between_the_read_and_the_write_is_seen(client, server, monkeypatch):
    """Another replica queues a job for the model after the optimistic read: the write refuses (the
    state's fingerprint changed), writes nothing, and the batch is decided again under the locks,
    where the alert joins that job instead of starting a second one."""
    await client.register_model(synthetic_model("raced"))

    async def manual_job():
        async with server.pool.acquire() as conn:
            await conn.execute("INSERT INTO retrain_jobs (model_id, mode, priority, manual, reason) "
                               "VALUES ('raced', 'INCREMENTAL', 1, true, 'another replica')")

    ran = await _with_change_before_the_write(monkeypatch, manual_job)
    conflicts = server.ingestor.timings.all["conflict"].count
    counted = metrics.DECISION_CONFLICTS._value.get()
    alert, statements = await _count(server, client.create_alert("raced", "drift", "high",
                                                                 metrics={"drift_score": 0.9}))
    assert ran == [1]
    assert server.ingestor.timings.all["conflict"].count == conflicts + 1
    assert metrics.DECISION_CONFLICTS._value.get() == counted + 1  # closedloop_decision_conflicts_total
    [action] = alert.actions
    assert action.state == COALESCED, action
    # The refused optimistic attempt (2), then BEGIN with the locks, state, alerts + jobs, actions, COMMIT.
    assert len(statements) == 2 + 5, statements
    async with server.pool.acquire() as conn:
        jobs = await conn.fetch("SELECT id, coalesced_triggers FROM retrain_jobs WHERE model_id = 'raced'")
        alerts = await conn.fetchval("SELECT count(*) FROM monitoring_alert_triggers WHERE model_id = 'raced'")
        actions = await conn.fetchval("SELECT count(*) FROM closed_loop_actions WHERE model_id = 'raced'")
    assert [(j["id"], j["coalesced_triggers"]) for j in jobs] == [(int(action.job_id), 1)]
    assert (alerts, actions) == (1, 1)  # the refused write left nothing behind


async def test_a_job_ended_between_the_read_and_the_write_is_seen(client, server, monkeypatch):
    """A worker finishes the model's job after the optimistic read (it takes no decision lock): the
    alert decided as joining that job is refused at the write and decided again under the locks,
    where the rule's cooldown applies; it neither joins the ended job nor queues a second one."""
    await client.register_model(synthetic_model("cooling"))
    first = await client.create_alert("cooling", "drift", "high", metrics={"drift_score": 0.9})
    assert first.actions[0].state == QUEUED

    async def finish_the_job():  # the job ends: without the cooldown the next alert would queue anew
        async with server.pool.acquire() as conn:
            await conn.execute("UPDATE retrain_jobs SET state = 'SUCCEEDED', end_time = now() "
                               "WHERE model_id = 'cooling'")

    ran = await _with_change_before_the_write(monkeypatch, finish_the_job)
    again = await client.create_alert("cooling", "drift", "high", metrics={"drift_score": 0.9})
    assert ran == [1]
    [action] = again.actions
    # The optimistic read saw the job active (COALESCED), the write found it ended and refused; under
    # the locks the rule's cooldown (24h since the first alert's retrain) decides.
    assert action.state == alert_pb2.ACTION_STATE_SKIPPED_COOLDOWN, action
    async with server.pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM retrain_jobs WHERE model_id = 'cooling'") == 1


_EXTRA_RULES = '''
rule risk_noted "Risk is recorded whatever else happens":
    when type == "risk"
    then record

rule strong_drift "A second retrain rule on strong drift":
    when type == "drift" and metrics.drift_score > 0.6
    then retrain incremental priority low cooldown 1h
'''


def _alert_sequence(prefix: str) -> list[list[dict]]:
    """Four batches of sixteen alerts over five models, the same for every prefix."""
    rng = random.Random(11)
    batches = []
    for b in range(4):
        batch = []
        for n in range(16):
            kind = rng.choice(("drift", "drift", "performance", "risk"))
            values = {"drift": {"drift_score": rng.uniform(0.1, 0.9)},
                       "performance": {"performance_drop": rng.uniform(0.0, 0.3)},
                       "risk": {"risk_score": rng.uniform(40, 100)}}[kind]
            batch.append({"model_id": f"{prefix}{rng.randrange(5)}", "type": kind,
                          "severity": rng.choice(("low", "medium", "high", "critical")), "metrics": values,
                          "request_id": f"{prefix}{b}-{n}"})
        batches.append(batch)
    return batches


async def _run_sequence(client, server, prefix: str) -> list:
    """Send the sequence, ending every job between batches as workers would; returns each alert's
    outcome with ids made comparable across prefixes (jobs by order of appearance)."""
    import re

    for m in range(5):
        await client.register_model(synthetic_model(
            f"{prefix}{m}", **({"max_retrains_per_day": 1} if m == 0 else {}),
            **({"cooldown_override": "7200s"} if m == 1 else {})))
    jobs: dict[str, int] = {}

    def job(job_id: str) -> int:
        return jobs.setdefault(job_id, len(jobs)) if job_id else -1

    def text(reason: str) -> str:
        reason = re.sub(r"job (\d+)", lambda m: f"job #{job(m.group(1))}", reason)
        reason = re.sub(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d\d:\d\d", "<time>", reason)
        return reason.replace(prefix, "m")

    outcome = []
    for batch in _alert_sequence(prefix):
        reply = await client.batch_create_alerts(batch)
        for r in reply.results:
            outcome.append((r.code, r.alert.state, [(a.rule, a.state, a.mode, a.priority, job(a.job_id), text(a.reason))
                                                    for a in r.alert.actions]))
        async with server.pool.acquire() as conn:  # the workers finish every job
            await conn.execute("UPDATE retrain_jobs SET state = 'SUCCEEDED', end_time = now() "
                               "WHERE model_id LIKE $1 AND state IN ('QUEUED', 'RUNNING')", prefix + "%")
    async with server.pool.acquire() as conn:
        stored = await conn.fetch(
            """SELECT j.id, j.mode, j.priority, j.coalesced_triggers, a.request_id, c.rule AS trigger_rule,
                      c.decision AS trigger_decision
                 FROM retrain_jobs j
                 JOIN monitoring_alert_triggers a ON a.id = j.trigger_alert_id
                 LEFT JOIN closed_loop_actions c ON c.id = j.trigger_action_id
                WHERE j.model_id LIKE $1 ORDER BY j.id""", prefix + "%")
    outcome.append([(job(str(r["id"])), r["mode"], r["priority"], r["coalesced_triggers"],
                     r["request_id"].replace(prefix, "m"), r["trigger_rule"], r["trigger_decision"]) for r in stored])
    return outcome


async def test_both_ways_decide_alike(client, server, monkeypatch):
    """The optimistic write links jobs and words reasons itself; the same alerts, in the same batches,
    decided the locked way give the same alert states, actions, reasons and jobs."""
    from closedloop.server.loop import ingest

    source = (await client.get_rule_set()).source
    await client.apply_rules(source + _EXTRA_RULES, "both-ways.rules")
    conflicts = server.ingestor.timings.all["conflict"].count
    optimistic = await _run_sequence(client, server, "opt-")
    assert server.ingestor.timings.all["conflict"].count == conflicts  # nothing raced: all optimistic
    monkeypatch.setattr(ingest, "_optimistic_fits", lambda batch, fresh: False)
    locked = await _run_sequence(client, server, "lck-")
    assert optimistic == locked
    # The sequence exercises what differs between the ways: new jobs, triggers joining a job of their
    # own batch and an earlier one, cooldowns, the daily budget, two actions on one alert, record-only.
    states = [a[1] for alert in optimistic[:-1] for a in alert[2]]
    assert {alert_pb2.ACTION_STATE_QUEUED, alert_pb2.ACTION_STATE_COALESCED, alert_pb2.ACTION_STATE_SKIPPED_COOLDOWN,
            alert_pb2.ACTION_STATE_SKIPPED_BUDGET, alert_pb2.ACTION_STATE_RECORDED} <= set(states), states
    assert any(len(alert[2]) >= 2 for alert in optimistic[:-1])
