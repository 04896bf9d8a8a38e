"""The closed loop through the public API: the seed's scenarios, cooldowns, coalescing, budgets, replicas."""

from __future__ import annotations

import asyncio
import datetime as dt

import grpc
import pytest

from closedloop import AsyncClient
from closedloop.v1 import alert_pb2, common_pb2

from .helpers import start_server_process, stop_process, synthetic_model

QUEUED, COALESCED, SKIPPED_COOLDOWN, SKIPPED_BUDGET, RECORDED = (
    alert_pb2.ACTION_STATE_QUEUED, alert_pb2.ACTION_STATE_COALESCED, alert_pb2.ACTION_STATE_SKIPPED_COOLDOWN,
    alert_pb2.ACTION_STATE_SKIPPED_BUDGET, alert_pb2.ACTION_STATE_RECORDED)


async def jobs_of(server, model_id: str) -> list:
    async with server.pool.acquire() as conn:
        return await conn.fetch("SELECT * FROM retrain_jobs WHERE model_id = $1 ORDER BY id", model_id)


async def test_integration_setup_and_activation(client):
    model = await client.register_model(synthetic_model("fx-1"))
    assert model.model_id == "fx-1" and model.enabled and model.current_version == 0
    assert model.training.metric == "accuracy" and model.training.holdout_fraction == 0.25
    fetched = await client.get_model("fx-1")
    assert fetched == model
    updated = await client.register_model(synthetic_model("fx-1", enabled=False, max_retrains_per_day=3))
    assert not updated.enabled and updated.max_retrains_per_day == 3
    listed = await client.list_models()
    assert [m.model_id for m in listed.models] == ["fx-1"]


@pytest.mark.parametrize("change, field", [
    ({"model_id": ""}, "model.model_id"),
    ({"training": {"synthetic": {}, "metric": "accuracy", "target": "y"}}, "model.training.estimator"),
    ({"training": {"estimator": "os.System", "synthetic": {}, "metric": "accuracy"}}, "model.training.estimator"),
    ({"training": {"estimator": "linear_model.Ridge", "metric": "rmse", "target": "y"}}, "model.training.source"),
    ({"training": {"estimator": "linear_model.Ridge", "synthetic": {}, "metric": "speed"}}, "model.training.metric"),
    ({"training": {"estimator": "linear_model.Ridge", "synthetic": {}, "metric": "r2",
                   "holdout_fraction": 0.95}}, "model.training.holdout_fraction"),
    ({"training": {"estimator": "linear_model.Ridge", "synthetic": {}, "metric": "r2",
                   "promotion_margin": -1}}, "model.training.promotion_margin"),
    ({"training": {"estimator": "linear_model.Ridge", "file": {"path": "x.xlsx"}, "metric": "r2",
                   "target": "y"}}, "model.training.file.format"),
    ({"training": {"estimator": "linear_model.Ridge", "entry_point": {"name": "not_registered"},
                   "metric": "r2", "target": "y"}}, "model.training.entry_point.name"),
    ({"training": {"estimator": "linear_model.Ridge", "sql": {"source": "nowhere", "query": "SELECT 1"},
                   "metric": "r2", "target": "y"}}, "model.training.sql.source"),
    ({"training": {"estimator": "linear_model.Ridge", "file": {"path": "/etc/passwd", "format": "csv"},
                   "metric": "r2", "target": "y"}}, "model.training.file.path"),
    ({"max_retrains_per_day": -2}, "model.max_retrains_per_day"),
])
async def test_bad_model_specs_name_the_field(client, change, field):
    from .test_alerts import violations

    with pytest.raises(grpc.aio.AioRpcError) as err:
        await client.register_model(synthetic_model("bad", **change))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in violations(err.value), violations(err.value)


async def test_high_severity_drift_alert_triggers_a_full_retrain(client, server):
    await client.register_model(synthetic_model("fx-drift"))
    alert = await client.create_alert("fx-drift", "drift", "high", metrics={"drift_score": 0.4})
    assert alert.state == alert_pb2.ALERT_STATE_ACTIONED
    [action] = alert.actions
    assert action.rule == "drift_auto_retrain" and action.state == QUEUED
    assert action.mode == common_pb2.RETRAIN_MODE_FULL and action.priority == common_pb2.PRIORITY_HIGH
    [job] = await jobs_of(server, "fx-drift")
    assert str(job["id"]) == action.job_id and job["mode"] == "FULL" and job["priority"] == 3
    assert job["trigger_alert_id"] == int(alert.id) and job["trigger_action_id"] == int(action.id)
    assert (await client.get_alert(alert.id)) == alert  # what the reply said is what was stored


async def test_low_severity_performance_alert_triggers_nothing(client, server):
    await client.register_model(synthetic_model("fx-perf"))
    alert = await client.create_alert("fx-perf", "performance", "low", metrics={"performance_drop": 0.3})
    assert list(alert.actions) == [] and alert.state == alert_pb2.ALERT_STATE_OPEN
    assert await jobs_of(server, "fx-perf") == []
    medium = await client.create_alert("fx-perf", "performance", "medium", metrics={"performance_drop": 0.3})
    assert [a.mode for a in medium.actions] == [common_pb2.RETRAIN_MODE_INCREMENTAL]


async def test_critical_risk_alert_retrains_at_critical_priority(client, server):
    await client.register_model(synthetic_model("fx-risk"))
    alert = await client.create_alert("fx-risk", "risk", "critical", metrics={"risk_score": 92})
    [action] = alert.actions
    assert action.priority == common_pb2.PRIORITY_CRITICAL and action.mode == common_pb2.RETRAIN_MODE_FULL
    [job] = await jobs_of(server, "fx-risk")
    assert job["priority"] == 4


async def test_response_rule_checking(client):
    resp = await client.validate_rules('rule r:\n    when metrics.drift_score > 5m\n    then record\n', "x.rules")
    assert not resp.valid
    [diag] = [d for d in resp.diagnostics if d.level == 1]
    assert (diag.line, diag.filename) == (2, "x.rules")
    assert "cannot compare" in diag.message and "^" in diag.rendered
    good = await client.validate_rules('rule r:\n    when metrics.drift_score > 0.5\n    then record\n')
    assert good.valid and [r.name for r in good.rules] == ["r"]


async def test_alert_state_through_the_workflow(client):
    await client.register_model(synthetic_model("wf"))
    alert = await client.create_alert("wf", "drift", "high", metrics={"drift_score": 0.5})
    assert alert.state == alert_pb2.ALERT_STATE_ACTIONED
    again = await client.create_alert("wf", "drift", "high", metrics={"drift_score": 0.5})
    assert again.state == alert_pb2.ALERT_STATE_SUPPRESSED  # the rule's cooldown holds it back
    assert again.actions[0].state == SKIPPED_COOLDOWN and again.actions[0].HasField("cooldown_until")
    assert (await client.update_alert_state(alert.id, "acknowledged")).state == alert_pb2.ALERT_STATE_ACKNOWLEDGED
    assert (await client.update_alert_state(alert.id, "resolved")).state == alert_pb2.ALERT_STATE_RESOLVED


async def test_unregistered_and_disabled_models_are_recorded_not_retrained(client, server):
    alert = await client.create_alert("ghost", "drift", "high", metrics={"drift_score": 0.9})
    assert [(a.state, a.reason) for a in alert.actions] == [(RECORDED, "model is not registered for retraining")]
    await client.register_model(synthetic_model("off", enabled=False))
    alert = await client.create_alert("off", "drift", "high", metrics={"drift_score": 0.9})
    assert alert.actions[0].state == RECORDED and "disabled" in alert.actions[0].reason
    assert await jobs_of(server, "ghost") == [] and await jobs_of(server, "off") == []


async def test_second_trigger_coalesces_into_the_active_job_and_raises_it(client, server):
    await client.register_model(synthetic_model("co"))
    first = await client.create_alert("co", "performance", "high", metrics={"performance_drop": 0.2})
    assert first.actions[0].state == QUEUED
    second = await client.create_alert("co", "risk", "critical", metrics={"risk_score": 95})
    assert second.actions[0].state == COALESCED and second.actions[0].job_id == first.actions[0].job_id
    [job] = await jobs_of(server, "co")
    assert job["priority"] == 4 and job["mode"] == "FULL" and job["coalesced_triggers"] == 1


async def test_merging_rules_full_beats_incremental_and_every_rule_recorded(client, server):
    rules = """
rule a:
    when type == "drift" and metrics.drift_score > 0.1
    then retrain incremental priority low cooldown 1h
rule b:
    when type == "drift" and metrics.drift_score > 0.2
    then retrain full priority medium cooldown 1h
rule c:
    when type == "drift"
    then record
"""
    await client.apply_rules(rules, "merge.rules")
    await client.register_model(synthetic_model("mg"))
    alert = await client.create_alert("mg", "drift", "low", metrics={"drift_score": 0.5})
    assert sorted((a.rule, a.state) for a in alert.actions) == [("a", QUEUED), ("b", QUEUED), ("c", RECORDED)]
    [job] = await jobs_of(server, "mg")
    assert job["mode"] == "FULL" and job["priority"] == 2


async def test_cooldown_expires_when_time_moves_on(client, server):
    await client.register_model(synthetic_model("cd"))
    first = await client.create_alert("cd", "risk", "critical", metrics={"risk_score": 90})
    async with server.pool.acquire() as conn:  # the job finished
        await conn.execute("UPDATE retrain_jobs SET state = 'SUCCEEDED', end_time = now() WHERE model_id = 'cd'")
    held = await client.create_alert("cd", "risk", "critical", metrics={"risk_score": 90})
    assert held.actions[0].state == SKIPPED_COOLDOWN
    until = held.actions[0].cooldown_until.ToDatetime(tzinfo=dt.timezone.utc)
    created = first.actions[0].create_time.ToDatetime(tzinfo=dt.timezone.utc)
    assert abs((until - created) - dt.timedelta(hours=1)) < dt.timedelta(seconds=1)
    async with server.pool.acquire() as conn:  # move the past back by 61 minutes instead of sleeping
        await conn.execute("UPDATE closed_loop_actions SET create_time = create_time - interval '61 minutes' "
                           "WHERE model_id = 'cd'")
        await conn.execute("UPDATE retrain_jobs SET create_time = create_time - interval '61 minutes' "
                           "WHERE model_id = 'cd'")
    later = await client.create_alert("cd", "risk", "critical", metrics={"risk_score": 90})
    assert later.actions[0].state == QUEUED
    assert len(await jobs_of(server, "cd")) == 2


async def test_model_cooldown_override_and_daily_budget(client, server):
    await client.register_model(synthetic_model("bud", max_retrains_per_day=1, cooldown_override="0s"))
    a = await client.create_alert("bud", "risk", "critical", metrics={"risk_score": 90})
    assert a.actions[0].state == QUEUED
    async with server.pool.acquire() as conn:
        await conn.execute("UPDATE retrain_jobs SET state = 'SUCCEEDED' WHERE model_id = 'bud'")
    b = await client.create_alert("bud", "risk", "critical", metrics={"risk_score": 90})
    assert b.actions[0].state == SKIPPED_BUDGET and b.state == alert_pb2.ALERT_STATE_SUPPRESSED


async def test_manual_submit_coalesces_with_rule_jobs(client, server):
    await client.register_model(synthetic_model("man"))
    job = await client.submit_retrain("man", mode="incremental", priority="low", reason="by hand")
    alert = await client.create_alert("man", "drift", "high", metrics={"drift_score": 0.9})
    assert alert.actions[0].state == COALESCED and alert.actions[0].job_id == job.id
    assert len(await jobs_of(server, "man")) == 1


def _break_the_locked_way(monkeypatch) -> None:
    """The locked way: its transaction fails between the job and the actions."""
    from closedloop.server.loop import ingest
    from closedloop.server.store import alerts as alert_store

    async def explode(conn, actions):
        raise RuntimeError("the database went away between the job and the actions")

    monkeypatch.setattr(ingest, "_optimistic_fits", lambda batch, fresh: False)
    monkeypatch.setattr(alert_store, "insert_actions", explode)


def _break_the_optimistic_way(monkeypatch) -> None:
    """The optimistic way: its one statement fails at its last step, the actions (a value the table
    refuses), after the alert, its request_id and the job were inserted."""
    from dataclasses import replace

    from closedloop.server.loop import ingest

    plan_actions = ingest._JobPlan.actions

    def refused(self, fresh, decisions):
        return [replace(a, decision="NOT_A_DECISION") for a in plan_actions(self, fresh, decisions)]

    monkeypatch.setattr(ingest._JobPlan, "actions", refused)


@pytest.mark.parametrize("break_it", [_break_the_locked_way, _break_the_optimistic_way])
async def test_a_decision_is_never_half_written(client, server, monkeypatch, break_it):
    await client.register_model(synthetic_model("half"))
    break_it(monkeypatch)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await client.create_alert("half", "drift", "high", metrics={"drift_score": 0.9}, request_id="half-1")
    assert err.value.code() == grpc.StatusCode.INTERNAL
    async with server.pool.acquire() as conn:
        counts = await conn.fetchrow(
            """SELECT (SELECT count(*) FROM monitoring_alert_triggers) AS alerts,
                      (SELECT count(*) FROM alert_request_ids) AS request_ids,
                      (SELECT count(*) FROM retrain_jobs) AS jobs,
                      (SELECT count(*) FROM closed_loop_actions) AS actions""")
    assert dict(counts) == {"alerts": 0, "request_ids": 0, "jobs": 0, "actions": 0}
    monkeypatch.undo()
    # The client's retry with the same request_id then goes through whole.
    alert = await client.create_alert("half", "drift", "high", metrics={"drift_score": 0.9}, request_id="half-1")
    assert alert.actions[0].state == QUEUED


async def test_two_server_processes_200_concurrent_drift_alerts_make_one_job(server, database_url, tmp_path):
    procs = [start_server_process(database_url, tmp_path / f"r{i}", "--no-run-workers") for i in range(2)]
    try:
        clients = [AsyncClient(target, timeout=30) for _, target in procs]
        await clients[0].register_model(synthetic_model("replicated"))
        alerts = await asyncio.gather(*[
            clients[i % 2].create_alert("replicated", "drift", "high", metrics={"drift_score": 0.6})
            for i in range(200)])
        states = [a.actions[0].state for a in alerts]
        assert states.count(QUEUED) == 1
        assert states.count(COALESCED) + states.count(SKIPPED_COOLDOWN) == 199
        assert len(await jobs_of(server, "replicated")) == 1
        for c in clients:
            await c.close()
    finally:
        for proc, _ in procs:
            assert stop_process(proc) == 0


async def test_age_sweep_raises_age_alerts_for_old_models(server, client):
    from closedloop.server.loop.age_sweep import AgeSweep

    await client.register_model(synthetic_model("old"))
    await client.register_model(synthetic_model("young"))
    async with server.pool.acquire() as conn:
        await conn.execute("""UPDATE monitoring_retraining_integration SET current_version = 1,
                              current_version_time = now() - interval '40 days' WHERE model_id = 'old'""")
        await conn.execute("""UPDATE monitoring_retraining_integration SET current_version = 1,
                              current_version_time = now() - interval '2 days' WHERE model_id = 'young'""")
    server.facts.invalidate()
    sweep = AgeSweep(server.pool, server.rules, server.ingestor, interval=3600)
    assert await sweep.sweep_once() == 1
    assert await sweep.sweep_once() == 0  # one alert per model version per day
    [alert] = (await client.list_alerts(type="age")).alerts
    assert alert.model_id == "old" and alert.metrics["model_age_days"] > 39
    assert [(a.rule, a.state, a.mode) for a in alert.actions] == [
        ("model_age_auto_retrain", QUEUED, common_pb2.RETRAIN_MODE_INCREMENTAL)]
    # 40 days against the default rules' 30d threshold: under 1.5x, low. Severity grows with the ratio.
    assert alert.severity == common_pb2.SEVERITY_LOW
    await client.register_model(synthetic_model("ancient"))
    async with server.pool.acquire() as conn:
        await conn.execute("""UPDATE monitoring_retraining_integration SET current_version = 1,
                              current_version_time = now() - interval '130 days' WHERE model_id = 'ancient'""")
    assert await sweep.sweep_once() == 1
    [ancient] = (await client.list_alerts(type="age", model_id="ancient")).alerts
    assert ancient.severity == common_pb2.SEVERITY_CRITICAL


async def test_age_sweep_sends_its_alerts_together(server, client):
    """Many due models: one alert and one queued retrain each, written in a few group commits (not
    one per model), and a second sweep the same day raises nothing (request ids)."""
    from closedloop.server.loop.age_sweep import AgeSweep

    names = [f"aged{i}" for i in range(24)]
    for name in names:
        await client.register_model(synthetic_model(name))
    async with server.pool.acquire() as conn:
        await conn.execute("""UPDATE monitoring_retraining_integration SET current_version = 1,
                              current_version_time = now() - interval '40 days' WHERE model_id LIKE 'aged%'""")
    server.facts.invalidate()
    sweep = AgeSweep(server.pool, server.rules, server.ingestor, interval=3600)
    before = server.ingestor.batches_committed
    assert await sweep.sweep_once() == len(names)
    assert server.ingestor.batches_committed - before < len(names)
    assert await sweep.sweep_once() == 0
    for name in names:
        [alert] = (await client.list_alerts(type="age", model_id=name)).alerts
        assert [(a.rule, a.state) for a in alert.actions] == [("model_age_auto_retrain", QUEUED)]
        assert len(await jobs_of(server, name)) == 1


async def test_rule_jobs_take_attempts_and_timeout_from_settings(database_url, tmp_path):
    from closedloop.server.app import create_server

    from .conftest import make_settings

    srv, port = await create_server(make_settings(database_url, tmp_path, job_max_attempts=5, job_timeout=90.0))
    try:
        async with AsyncClient(f"127.0.0.1:{port}") as c:
            await c.register_model(synthetic_model("att"))
            await c.create_alert("att", "risk", "critical", metrics={"risk_score": 99})
        [job] = await jobs_of(srv, "att")
        assert (job["max_attempts"], job["timeout_s"]) == (5, 90.0)
    finally:
        await srv.stop(1)


async def test_promotion_drops_cached_model_facts_on_every_replica(client, server):
    from closedloop.server.store import versions

    await client.register_model(synthetic_model("cache"))
    facts = (await server.facts.get_many(["cache"]))["cache"]
    assert facts.version == 0
    async with server.pool.acquire() as conn:  # as a worker in another process would, at promotion
        async with conn.transaction():
            await conn.execute("""INSERT INTO model_versions (model_id, version, mode, metric, metric_value,
                                  artifact_path, artifact_sha256) VALUES ('cache', 1, 'FULL', 'accuracy', 0.6, 'x', 'y')""")
            await versions.set_current(conn, "cache", to_version=1, kind="PROMOTION")
    for _ in range(100):
        if (await server.facts.get_many(["cache"]))["cache"].version == 1:
            break
        await asyncio.sleep(0.02)
    assert (await server.facts.get_many(["cache"]))["cache"].version == 1


async def test_repeated_request_ids_of_acting_alerts_decide_once(client, server):
    await client.register_model(synthetic_model("rep"))
    first = await client.create_alert("rep", "drift", "high", metrics={"drift_score": 0.9}, request_id="rep-1")
    again = await client.create_alert("rep", "drift", "high", metrics={"drift_score": 0.9}, request_id="rep-1")
    assert again == first and first.actions[0].state == QUEUED
    # A burst mixing a repeat with new alerts: the repeat is answered from the record, the others
    # are decided as if the repeat were not there (so the new ones meet the cooldown, not a new job).
    burst = await asyncio.gather(
        client.create_alert("rep", "drift", "high", metrics={"drift_score": 0.9}, request_id="rep-1"),
        *[client.create_alert("rep", "drift", "high", metrics={"drift_score": 0.8}, request_id=f"rep-{i}")
          for i in range(2, 12)])
    assert burst[0] == first
    assert {a.actions[0].state for a in burst[1:]} == {SKIPPED_COOLDOWN}
    assert len(await jobs_of(server, "rep")) == 1
    async with server.pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM monitoring_alert_triggers WHERE model_id = 'rep'") == 11


async def test_a_job_that_ended_after_the_snapshot_gets_a_new_job_instead(client, server, monkeypatch):
    from closedloop.server.store import models as model_store

    await client.register_model(synthetic_model("late"))
    first = await client.create_alert("late", "risk", "critical", metrics={"risk_score": 95})
    async with server.pool.acquire() as conn:
        await conn.execute("UPDATE retrain_jobs SET state = 'SUCCEEDED', end_time = now() WHERE model_id = 'late'")
    read_state = model_store.decision_state

    async def stale_state(conn, model_ids, cooldown_s):  # as if read just before the job ended
        rows = [dict(r) for r in await read_state(conn, model_ids, cooldown_s)]
        for r in rows:
            r["active_job"] = int(first.actions[0].job_id)
        return rows

    monkeypatch.setattr(model_store, "decision_state", stale_state)
    alert = await client.create_alert("late", "drift", "high", metrics={"drift_score": 0.9})
    [action] = alert.actions
    assert action.state == QUEUED and action.job_id != first.actions[0].job_id
    assert len(await jobs_of(server, "late")) == 2
