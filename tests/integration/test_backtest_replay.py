"""BacktestRules' paged replay gives exactly the report of the plain replay it replaced (issue 15).

A generated history (registered, disabled, budgeted, overridden and unregistered models, promotions
during the window, finished jobs, alerts of every type with metrics and labels, arriving late or
early, ties in observe_time, stored decisions of two rule set versions) is backtested with small
pages and slices, so every boundary, the prefetch and the decisions' look-up by page are exercised, and
compared field by field with tests/integration/backtest_reference.py.
"""

from __future__ import annotations

import datetime as dt
import gc
import json
import random

import pytest

from closedloop.dsl import compile_rules
from closedloop.server.loop import backtest

from .backtest_reference import reference_backtest

CANDIDATE = """
rule drift_r:
    when type == "drift" and metrics.drift_score > 0.3
    then retrain full priority high cooldown 2h

rule perf_r:
    when type == "performance" and severity >= medium and metrics.performance_drop > 10%
    then retrain incremental priority medium cooldown 1h per model

rule old_model:
    when type == "age" and model.age > 1d
    then retrain incremental priority low cooldown 6h

rule fx_desk:
    when labels.desk == "fx" and severity >= high
    then record

rule risky:
    when type == "risk" and (metrics.risk_score > 70 or age > 10m)
    then retrain full priority critical cooldown 30m, notify

rule undo:
    when type == "risk" and metrics.risk_score > 95
    then rollback priority high
"""
NOW = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
START = NOW - dt.timedelta(days=3)
TYPES = ("drift", "drift", "performance", "risk", "age", "data_quality")
DESKS = ("fx", "rates", "credit")
RULES = ("drift_auto_retrain", "risk_auto_retrain", "performance_auto_retrain")
DECISIONS = ("QUEUED", "COALESCED", "SKIPPED_COOLDOWN", "SKIPPED_BUDGET", "RECORDED")


async def fill(conn, rng: random.Random, alerts: int, ids_in_time_order: bool = False) -> None:
    """`ids_in_time_order`: alert ids ascend with observe_time (as alerts arriving on time get them),
    so each page's ids are a dense run and its actions are read by id range; otherwise the ids are
    shuffled against observe_time and each page's actions are looked up id by id."""
    models = [f"m{i}" for i in range(12)]
    await conn.executemany(
        """INSERT INTO monitoring_retraining_integration (model_id, training, metric, enabled, cooldown_override_s,
               max_retrains_per_day, current_version, current_version_time)
           VALUES ($1, '{}', 'accuracy', $2, $3, $4, $5, $6)""",
        [(m, i % 5 != 4, 1800.0 if i % 6 == 1 else None, 2 if i % 4 == 2 else None, 1 + i % 3,
          START - dt.timedelta(days=i)) for i, m in enumerate(models)])
    await conn.executemany(
        """INSERT INTO model_promotions (model_id, from_version, to_version, kind, create_time)
           VALUES ($1, $2, $3, 'PROMOTION', $4)""",
        [(m, v, v + 1, START + dt.timedelta(hours=rng.uniform(-48, 72)))
         for m in models[:8] for v in range(1, 4)])
    jobs = []
    for m in models[:6]:
        for _ in range(3):
            created = START - dt.timedelta(hours=rng.uniform(1, 30))
            jobs.append(await conn.fetchval(
                """INSERT INTO retrain_jobs (model_id, mode, priority, state, create_time, end_time)
                   VALUES ($1, 'FULL', 3, 'SUCCEEDED', $2, $3) RETURNING id""",
                m, created, created + dt.timedelta(minutes=rng.uniform(5, 180))))
    rows, actions = [], []
    for i in range(alerts):
        model = rng.choice(models + ["ghost"])
        kind = rng.choice(TYPES)
        metrics = {"drift": {"drift_score": round(rng.uniform(0, 0.6), 3), "psi": rng.random()},
                   "performance": {"performance_drop": round(rng.uniform(0, 0.3), 3)},
                   "risk": {"risk_score": round(rng.uniform(20, 100), 1)},
                   "age": {"model_age_days": rng.randint(0, 9)}}.get(kind, {})
        labels = {"desk": rng.choice(DESKS)} if rng.random() < 0.8 else {}
        # Ties in observe_time (whole minutes), alerts arriving late, and clocks ahead of the server.
        observed = START + dt.timedelta(minutes=rng.randrange(0, 3 * 24 * 60))
        created = observed + dt.timedelta(seconds=rng.choice((0.5, 2, 30, 900, -5)))
        rows.append((i + 1, model, kind, rng.randint(1, 4), json.dumps(metrics), json.dumps(labels),
                     rng.choice(("monitor", "desk")), observed, created, rng.choice((1, 1, 2))))
        for _ in range(rng.choice((0, 0, 0, 1, 1, 2))):
            decision = rng.choice(DECISIONS)
            job = rng.choice(jobs) if decision in ("QUEUED", "COALESCED") and rng.random() < 0.9 else None
            actions.append((i + 1, model if model != "ghost" else "m0", rng.choice(RULES), decision,
                            rng.choice(("FULL", "INCREMENTAL", None)), rng.randint(1, 4), job, created))
    if ids_in_time_order:
        new_id = {row[0]: n + 1 for n, row in enumerate(sorted(rows, key=lambda row: (row[7], row[0])))}
        rows = [(new_id[row[0]],) + row[1:] for row in rows]
        actions = [(new_id[a[0]],) + a[1:] for a in actions]
    await conn.executemany(
        """INSERT INTO monitoring_alert_triggers (id, model_id, alert_type, severity, metrics, labels, source,
               observe_time, create_time, rule_set_version)
           VALUES ($1, $2, $3, $4, $5::text::jsonb, $6::text::jsonb, $7, $8, $9, $10)""", rows)
    await conn.executemany(
        """INSERT INTO closed_loop_actions (alert_id, model_id, rule, rule_set_version, kind, mode, priority,
               decision, job_id, create_time)
           VALUES ($1, $2, $3, 1, 'RETRAIN', $5, $6, $4, $7, $8)""", actions)


@pytest.mark.parametrize("ids_in_time_order", [False, True])
async def test_paged_backtest_equals_the_plain_replay(pool, monkeypatch, ids_in_time_order):
    async with pool.acquire() as conn:
        await fill(conn, random.Random(15), 4000, ids_in_time_order)
    candidate = compile_rules(CANDIDATE, "candidate.rules")
    monkeypatch.setattr(backtest, "PAGE", 97)  # many pages, a partial last one
    monkeypatch.setattr(backtest, "SLICE", 13)  # each replayed in slices, a partial last one
    for start, end in ((START - dt.timedelta(hours=1), NOW + dt.timedelta(hours=1)),
                       (START + dt.timedelta(hours=20), START + dt.timedelta(hours=50))):
        got = await backtest.run_backtest(pool, candidate, start, end)
        want = await reference_backtest(pool, candidate, start, end)
        assert got.alerts == want.alerts > 0
        assert got.active == want.active
        assert got.candidate == want.candidate
        assert got.differences_total == want.differences_total > 0
        assert got.differences == want.differences
        assert got == want
    # Enough happened on both sides for the comparison to mean something.
    assert want.candidate.jobs > 10 and want.active.jobs > 5
    assert {r.rule for r in want.candidate.rules} >= {"drift_r", "perf_r", "fx_desk", "risky", "old_model"}


async def test_a_window_without_alerts(pool):
    candidate = compile_rules(CANDIDATE, "candidate.rules")
    report = await backtest.run_backtest(pool, candidate, START, NOW)
    assert report == await reference_backtest(pool, candidate, START, NOW)
    assert report.alerts == 0 and report.differences_total == 0


async def test_the_collector_is_paused_while_replaying_and_resumes_after(pool, monkeypatch):
    async with pool.acquire() as conn:
        await fill(conn, random.Random(3), 300, ids_in_time_order=True)
    seen = []
    replay_page = backtest._Replay.page

    def spy(self, rows):
        seen.append(gc.isenabled())
        return replay_page(self, rows)

    monkeypatch.setattr(backtest._Replay, "page", spy)
    monkeypatch.setattr(backtest, "PAGE", 97)
    assert gc.isenabled()
    report = await backtest.run_backtest(pool, compile_rules(CANDIDATE, "candidate.rules"), START, NOW)
    assert report.alerts == 300 and len(seen) > 3 and not any(seen)
    assert gc.isenabled()
