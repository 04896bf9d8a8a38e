"""The feedback report over a hand-made history: FP/FN rates, verdicts, suggestions, definitions."""

from __future__ import annotations

import datetime as dt

import pytest

from closedloop.dsl import compile_rules
from closedloop.server.api.feedback_report import feedback_message
from closedloop.server.feedback.report import build_report
from closedloop.v1 import retrain_pb2

RULES = """
rule drift_r:
    when type == "drift" and metrics.drift_score > 0.2
    then retrain full priority high cooldown 1h

rule perf_r:
    when type == "performance" and metrics.performance_drop > 10%
    then retrain incremental priority medium cooldown 1h
"""
NOW = dt.datetime.now(dt.timezone.utc)


async def _history(conn) -> dict:
    """Three drift retrains of model fb (two false positives, one that helped), one quiet drift alert
    before the helpful retrain (a false negative), and a model fb2 whose promotion made things worse."""
    version = await conn.fetchval(
        """INSERT INTO automated_response_rules (source, filename, sha256, rule_names, active)
           VALUES ($1, 'fb.rules', 'x', ARRAY['drift_r', 'perf_r'], true) RETURNING version""", RULES)
    for model in ("fb", "fb2"):
        await conn.execute(
            """INSERT INTO monitoring_retraining_integration (model_id, training, metric, promotion_margin)
               VALUES ($1, '{}', 'accuracy', 0.01)""", model)
    ids = {}

    async def alert(name, model, kind, metrics, hours_ago):
        ids[name] = await conn.fetchval(
            """INSERT INTO monitoring_alert_triggers (model_id, alert_type, severity, metrics, observe_time,
                   rule_set_version) VALUES ($1, $2, 3, $3, $4, $5) RETURNING id""",
            model, kind, metrics, NOW - dt.timedelta(hours=hours_ago), version)

    async def retrain(name, alert_name, model, rule, champion, challenger, promoted, hours_ago):
        job = await conn.fetchval(
            """INSERT INTO retrain_jobs (model_id, mode, priority, state, trigger_alert_id, trigger_rule, metric,
                   champion_metric, challenger_metric, promoted, start_time, end_time)
               VALUES ($1, 'FULL', 3, 'SUCCEEDED', $2, $3, 'accuracy', $4, $5, $6, $7, $7) RETURNING id""",
            model, ids[alert_name], rule, champion, challenger, promoted, NOW - dt.timedelta(hours=hours_ago))
        await conn.execute(
            """INSERT INTO closed_loop_actions (alert_id, model_id, rule, rule_set_version, kind, mode, priority,
                   decision, job_id) VALUES ($1, $2, $3, $4, 'RETRAIN', 'FULL', 3, 'QUEUED', $5)""",
            ids[alert_name], model, rule, version, job)
        await conn.execute(
            """INSERT INTO feedback_loop_metrics (time, model_id, job_id, alert_id, rule, mode, outcome, metric,
                   champion_metric, challenger_metric, improvement, promotion_margin, promoted,
                   alert_to_promotion_s)
               VALUES ($1, $2, $3, $4, $5, 'FULL', 'SUCCEEDED', 'accuracy', $6::float8, $7::float8, $7::float8 - $6::float8, 0.01, $8::bool,
                       CASE WHEN $8 THEN 600.0 END)""",
            NOW - dt.timedelta(hours=hours_ago), model, job, ids[alert_name], rule, champion, challenger, promoted)
        ids[name] = job

    await alert("a1", "fb", "drift", {"drift_score": 0.25}, 10)
    await retrain("j1", "a1", "fb", "drift_r", 0.60, 0.605, False, 9.9)
    await alert("a2", "fb", "drift", {"drift_score": 0.30}, 8)
    await retrain("j2", "a2", "fb", "drift_r", 0.60, 0.60, False, 7.9)
    await alert("a4", "fb", "drift", {"drift_score": 0.15}, 6)        # quiet: below 0.2
    await alert("a3", "fb", "drift", {"drift_score": 0.60}, 5)
    await retrain("j3", "a3", "fb", "drift_r", 0.60, 0.66, True, 4.9)  # helped, 1.1 h after a4
    await alert("p1", "fb2", "performance", {"performance_drop": 0.12}, 6)
    await retrain("j4", "p1", "fb2", "perf_r", 0.50, 0.55, True, 5.9)
    await alert("p2", "fb2", "performance", {"performance_drop": 0.30}, 3)  # worse after the promotion
    return ids


@pytest.fixture
async def report(pool):
    async with pool.acquire() as conn:
        await _history(conn)
    # As the client receives it: build_report's dataclasses converted by the API.
    return feedback_message(await build_report(
        pool, model_id=None, rule=None, start=NOW - dt.timedelta(days=1), end=NOW,
        fn_window=dt.timedelta(hours=24), active_ruleset=compile_rules(RULES, "fb.rules")))


def _rule(report, name):
    return next(r.stats for r in report.rules if r.rule == name)


async def test_per_rule_figures(report):
    drift = _rule(report, "drift_r")
    assert (drift.triggers, drift.retrains, drift.succeeded, drift.promoted) == (3, 3, 3, 1)
    assert drift.actions_by_decision == {"QUEUED": 3}
    assert drift.finished_rate == 1.0 and drift.promotion_rate == pytest.approx(1 / 3)
    assert drift.mean_improvement == pytest.approx((0.005 + 0.0 + 0.06) / 3)
    assert drift.median_improvement == pytest.approx(0.005)
    assert drift.false_positive_rate == pytest.approx(2 / 3)      # j1 (+0.005 < margin) and j2
    assert drift.evaluations_quiet == 1 and drift.false_negative_rate == 1.0   # a4, then j3 helped
    assert drift.mean_time_to_recovery.ToSeconds() == 600
    assert (drift.helped, drift.no_effect, drift.harmed) == (1, 2, 0)
    assert drift.helped_rate == pytest.approx(1 / 3)  # helped / finished: the share that helped


async def test_harmed_verdict_and_per_model(report):
    perf = _rule(report, "perf_r")
    assert (perf.helped, perf.harmed) == (0, 1)  # fb2's next performance alert was worse
    [harmed] = [v for v in report.verdicts if v.verdict == retrain_pb2.VERDICT_HARMED]
    assert harmed.model_id == "fb2" and harmed.rule == "perf_r"
    models = {m.model_id: m.stats for m in report.models}
    assert models["fb"].retrains == 3 and models["fb2"].retrains == 1


async def test_threshold_suggestion_removes_false_positives_and_keeps_what_helped(report):
    [s] = [s for s in report.suggestions if s.rule == "drift_r"]
    assert (s.field, s.operator, s.current_value) == ("metrics.drift_score", ">", 0.2)
    assert s.suggested_value == pytest.approx(0.30)
    assert (s.false_positives_removed, s.helpful_retrains_kept, s.helpful_retrains_lost) == (2, 1, 0)
    # The suggestion is advice: compiled with it, the rule would have skipped both false positives.
    tightened = compile_rules(RULES.replace("> 0.2", f"> {s.suggested_value}"), "x")
    from closedloop.dsl import AlertFacts

    fired = [score for score in (0.25, 0.30, 0.60)
             if tightened.match(AlertFacts(type="drift", model_id="fb", severity=3,
                                           metrics={"drift_score": score}, labels={}), None)]
    assert fired == [0.60]


async def test_filters_and_definitions(pool, report):
    assert {d.term for d in report.definitions} >= {"false positive rate", "false negative rate", "verdict"}
    only = feedback_message(await build_report(pool, model_id="fb2", rule=None, start=NOW - dt.timedelta(days=1),
                                               end=NOW, fn_window=None, active_ruleset=None))
    assert [m.model_id for m in only.models] == ["fb2"] and [r.rule for r in only.rules] == ["perf_r"]


async def test_cli_table_names_what_each_rate_counts(report):
    import io

    from closedloop.server.cli.render import render_report

    out = io.StringIO()
    render_report(report, out)
    lines = out.getvalue().splitlines()
    header = next(line for line in lines if line.startswith("rule "))
    assert header.split()[4:7] == ["finished", "promoted", "helped"] and "success" not in header
    row = next(line for line in lines if line.startswith("drift_r "))
    assert row.split()[-11:-8] == ["100%", "33%", "33%"]  # finished, promoted, helped rates
