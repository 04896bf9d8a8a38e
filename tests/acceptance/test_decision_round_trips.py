"""How many round trips a decision batch costs: each one is time the single busy writer holds its
connection while the next batch waits (bench/README.md, loop). Counted with asyncpg's query logger
on the connections the ingest path uses, over a real server and database."""

from __future__ import annotations

import asyncio
import contextlib

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


async def test_a_decision_with_a_new_job_takes_five_round_trips(client, server):
    await client.register_model(synthetic_model("rt"))
    woken: asyncio.Queue = asyncio.Queue()
    async with server.pool.acquire() as listener:
        def wake(*args) -> None:
            woken.put_nowait(args[-1])

        await listener.add_listener(JOBS_CHANNEL, wake)
        alert, statements = await _count(server, client.create_alert("rt", "drift", "high",
                                                                     metrics={"drift_score": 0.9}))
        assert alert.actions[0].state == QUEUED
        # BEGIN with the locks, the state read, alerts + jobs, actions + trigger links, COMMIT.
        assert len(statements) == 5, statements
        # Idle workers are woken with the new job's id, as enqueue does.
        assert await asyncio.wait_for(woken.get(), 10) == alert.actions[0].job_id
        await listener.remove_listener(JOBS_CHANNEL, wake)


async def test_a_batch_queueing_and_coalescing_still_takes_five_round_trips(client, server):
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
    assert len(statements) == 5 * batches, (batches, statements)


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
