"""The loop end to end with real training workers: alert -> job -> fit -> promotion -> feedback, and rollback."""

from __future__ import annotations

import pytest

from closedloop import AsyncClient
from closedloop.server.app import create_server
from closedloop.v1 import alert_pb2, retrain_pb2

from .conftest import make_settings

# Seeded synthetic market with strong drift: each retrain sees a newer window and beats its champion.
MODEL = {
    "model_id": "fx-live", "enabled": True,
    "training": {"estimator": "linear_model.SGDClassifier",
                 "params": {"loss": "log_loss", "alpha": 0.0005, "random_state": 0},
                 "synthetic": {"seed": 11, "drift": 0.9, "rows": 3000},
                 "target": "direction", "metric": "accuracy", "holdout_fraction": 0.25, "promotion_margin": 0.002},
}
ROLLBACK_RULES = """
rule drift_auto_retrain:
    when type == "drift" and metrics.drift_score > 0.25
    then retrain full priority high cooldown 24h

# A freshly promoted version that draws a high-severity performance alert goes back.
rule rollback_bad_promotion "Post-promotion watch":
    when type == "performance" and severity >= high and model.age < 1h
    then rollback
"""


@pytest.fixture
async def live(database_url, tmp_path):
    srv, port = await create_server(make_settings(database_url, tmp_path, run_workers=True, workers=1,
                                                  job_lease=10.0))
    try:
        async with AsyncClient(f"127.0.0.1:{port}", timeout=60) as client:
            yield srv, client
    finally:
        await srv.stop(2)


async def finish(client, job_id: str) -> retrain_pb2.RetrainJob:
    last = None
    async for job in client.watch_job(job_id):
        last = job
    return last


async def test_drift_alert_to_promoted_version_with_feedback(live):
    srv, client = live
    await client.register_model(MODEL)
    first = await finish(client, (await client.submit_retrain("fx-live", reason="initial")).id)
    assert first.state == retrain_pb2.JOB_STATE_SUCCEEDED and first.promoted and first.new_version == 1
    assert not first.HasField("champion_metric")
    alert = await client.create_alert("fx-live", "drift", "high", metrics={"drift_score": 0.45})
    job = await finish(client, alert.actions[0].job_id)
    assert job.state == retrain_pb2.JOB_STATE_SUCCEEDED and job.trigger.rule == "drift_auto_retrain"
    assert job.HasField("champion_metric") and job.HasField("challenger_metric")
    assert job.promoted == (job.challenger_metric >= job.champion_metric + 0.002)
    assert job.promoted and job.new_version == 2
    assert (await client.get_model("fx-live")).current_version == 2
    report = await client.feedback_report(model_id="fx-live")
    [rule] = [r for r in report.rules if r.rule == "drift_auto_retrain"]
    assert rule.stats.retrains == 1 and rule.stats.succeeded == 1 and rule.stats.promoted == 1
    assert rule.stats.mean_improvement == pytest.approx(job.challenger_metric - job.champion_metric)
    assert rule.stats.false_positive_rate == 0.0 and rule.stats.mean_time_to_recovery.ToNanoseconds() > 0
    assert report.manual.retrains == 1
    [verdict] = [v for v in report.verdicts if v.rule == "drift_auto_retrain"]
    assert verdict.verdict == retrain_pb2.VERDICT_HELPED


async def test_rollback_rule_returns_a_fresh_promotion_to_the_previous_version(live):
    srv, client = live
    await client.apply_rules(ROLLBACK_RULES, "watch.rules")
    await client.register_model(MODEL)
    assert (await finish(client, (await client.submit_retrain("fx-live")).id)).new_version == 1
    drift = await client.create_alert("fx-live", "drift", "high", metrics={"drift_score": 0.45})
    assert (await finish(client, drift.actions[0].job_id)).promoted
    assert (await client.get_model("fx-live")).current_version == 2
    quiet = await client.create_alert("fx-live", "performance", "medium", metrics={"performance_drop": 0.3})
    assert list(quiet.actions) == []  # medium severity: the watch stays quiet
    bad = await client.create_alert("fx-live", "performance", "critical", metrics={"performance_drop": 0.4})
    [action] = bad.actions
    assert action.rule == "rollback_bad_promotion" and action.state == alert_pb2.ACTION_STATE_ROLLED_BACK
    assert action.kind == alert_pb2.ACTION_KIND_ROLLBACK and action.reason
    assert bad.state == alert_pb2.ALERT_STATE_ACTIONED
    assert (await client.get_model("fx-live")).current_version == 1
