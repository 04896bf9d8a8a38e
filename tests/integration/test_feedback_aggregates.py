"""The feedback report from the daily aggregates equals the report from raw rows (issue 15 point 3).

A generated history (several models, both rules, twelve days, promoted or not, false positives and
negatives, pending, failed and manual jobs, performance alerts that make verdicts harmed) is read by
the server's report before any roll-up (every alert from the table), after a roll-up (whole days from
the aggregates) and after late arrivals (jobs finishing days after their alert, an alert observed days
ago), and compared figure by figure with the raw-row report of tests/integration/feedback_reference.py,
read on one connection and on three sharing a snapshot.
"""

from __future__ import annotations

import datetime as dt
import gc
import random

import asyncpg
import pytest

from closedloop.dsl import compile_rules
from closedloop.server.feedback import report as report_module
from closedloop.server.feedback.report import build_report
from closedloop.server.feedback.rollup import roll_up
from closedloop.server.store import feedback_daily, history

from .feedback_reference import reference_report

RULES = """
rule drift_r:
    when type == "drift" and metrics.drift_score > 0.2
    then retrain full priority high cooldown 1h

rule perf_r:
    when type == "performance" and metrics.performance_drop > 10%
    then retrain incremental priority medium cooldown 1h

# Names a model: the rule index checks it only against m1's drift alerts (the history never acts on
# it), so its quiet checks test that the report picks the checked rules per named model.
rule m1_watch:
    when type == "drift" and model_id == "m1" and metrics.drift_score > 0.95
    then record
"""
MODELS = ("m1", "m2", "m3", "other")
NOW = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
BASE = NOW - dt.timedelta(days=12)
DAY = dt.timedelta(days=1)
MIDNIGHT = dt.datetime.combine(NOW.date(), dt.time(), dt.timezone.utc)


class History:
    def __init__(self, conn, rng: random.Random, version: int) -> None:
        self.conn, self.rng, self.version = conn, rng, version
        self.pending: list[tuple] = []   # (job, alert, model, rule, observe_time) not finished yet

    async def alert(self, model: str, observe: dt.datetime) -> None:
        rng = self.rng
        kind = rng.choice(("drift", "drift", "performance", "data_quality"))
        metrics = ({"drift_score": round(rng.uniform(0.0, 0.6), 3)} if kind == "drift" else
                   {"performance_drop": round(rng.uniform(0.0, 0.4), 3)} if kind == "performance" else {})
        alert = await self.conn.fetchval(
            """INSERT INTO monitoring_alert_triggers (model_id, alert_type, severity, metrics, observe_time,
                   rule_set_version) VALUES ($1, $2, $3, $4, $5, $6) RETURNING id""",
            model, kind, rng.randint(1, 4), metrics, observe, self.version)
        rule = ("drift_r" if kind == "drift" and metrics["drift_score"] > 0.2 else
                "perf_r" if kind == "performance" and metrics["performance_drop"] > 0.1 else None)
        if rule is None:
            return
        decision = rng.choice(("QUEUED", "QUEUED", "COALESCED", "SKIPPED_COOLDOWN", "SKIPPED_BUDGET"))
        job = None
        if decision == "QUEUED":
            job = await self.conn.fetchval(
                """INSERT INTO retrain_jobs (model_id, mode, priority, state, trigger_alert_id, trigger_rule)
                   VALUES ($1, 'FULL', 3, 'SUCCEEDED', $2, $3) RETURNING id""", model, alert, rule)
            self.pending.append((job, alert, model, rule, observe))
        await self.conn.execute(
            """INSERT INTO closed_loop_actions (alert_id, model_id, rule, rule_set_version, kind, mode, priority,
                   decision, job_id) VALUES ($1, $2, $3, $4, 'RETRAIN', 'FULL', 3, $5, $6)""",
            alert, model, rule, self.version, decision, job)

    async def finish(self, job, alert, model, rule, ended: dt.datetime, manual: bool = False) -> None:
        rng = self.rng
        outcome = rng.choice(("SUCCEEDED", "SUCCEEDED", "SUCCEEDED", "FAILED"))
        champion = None if rng.random() < 0.15 else 0.6
        challenger = round(rng.uniform(0.55, 0.7), 3)
        improvement = None if champion is None else challenger - champion
        promoted = outcome == "SUCCEEDED" and rng.random() < 0.6
        await self.conn.execute(
            """INSERT INTO feedback_loop_metrics (time, model_id, job_id, alert_id, rule, manual, mode, outcome,
                   metric, champion_metric, challenger_metric, improvement, promotion_margin, promoted,
                   alert_to_promotion_s)
               VALUES ($1, $2, $3, $4, $5, $6, 'FULL', $7, 'accuracy', $8, $9, $10, 0.01, $11, $12)""",
            ended, model, job, alert, rule, manual, outcome, champion, challenger, improvement, promoted,
            rng.uniform(60, 90000) if promoted and not manual else None)

    async def finish_some(self, until: dt.datetime, share: float) -> None:
        still = []
        for job, alert, model, rule, observe in self.pending:
            ended = observe + dt.timedelta(hours=self.rng.uniform(0.2, 60))   # often on a later day
            if ended < until and self.rng.random() < share:
                await self.finish(job, alert, model, rule, ended)
            else:
                still.append((job, alert, model, rule, observe))
        self.pending = still

    async def manual(self, model: str, ended: dt.datetime) -> None:
        job = await self.conn.fetchval(
            "INSERT INTO retrain_jobs (model_id, mode, priority, state, manual) VALUES ($1, 'FULL', 3, 'SUCCEEDED', "
            "true) RETURNING id", model)
        await self.finish(job, None, model, None, ended, manual=True)


async def _generate(conn, rng) -> History:
    version = await conn.fetchval(
        """INSERT INTO automated_response_rules (source, filename, sha256, rule_names, active)
           VALUES ($1, 'agg.rules', 'x', ARRAY['drift_r', 'perf_r', 'm1_watch'], true) RETURNING version""", RULES)
    for model in MODELS:
        await conn.execute(
            """INSERT INTO monitoring_retraining_integration (model_id, training, metric, promotion_margin)
               VALUES ($1, '{}', 'accuracy', 0.01)""", model)
    h = History(conn, rng, version)
    for _ in range(260):
        await h.alert(rng.choice(MODELS), BASE + dt.timedelta(seconds=rng.uniform(0, 12 * 86400 - 3600)))
    for _ in range(8):
        await h.manual(rng.choice(MODELS), BASE + dt.timedelta(seconds=rng.uniform(0, 12 * 86400 - 3600)))
    await h.finish_some(NOW - dt.timedelta(hours=1), 0.7)   # the rest stays pending for now
    return h


def _windows():
    ruleset = compile_rules(RULES, "agg.rules")
    return [
        dict(model_id=None, rule=None, start=NOW - 10 * DAY, end=NOW, active_ruleset=ruleset),
        dict(model_id=None, rule=None, start=MIDNIGHT - 9 * DAY, end=MIDNIGHT - 2 * DAY, active_ruleset=ruleset),
        dict(model_id="m1", rule=None, start=BASE, end=NOW),
        dict(model_id=None, rule="drift_r", start=NOW - 11 * DAY, end=NOW - dt.timedelta(hours=5),
             active_ruleset=ruleset),
        dict(model_id=None, rule=None, start=BASE, end=NOW, scopes=["m*"]),
        dict(model_id=None, rule=None, start=BASE, end=NOW, fn_window=dt.timedelta(hours=6), active_ruleset=ruleset),
        dict(model_id=None, rule=None, start=NOW - 30 * DAY, end=NOW, fn_window=dt.timedelta(days=3)),
        dict(model_id=None, rule=None, start=MIDNIGHT - 3 * DAY + dt.timedelta(hours=3),
             end=MIDNIGHT - 3 * DAY + dt.timedelta(hours=20)),
    ]


async def _assert_equal(pool) -> None:
    for window in _windows():
        kwargs = dict(fn_window=None, active_ruleset=None, scopes=None) | window
        got = await build_report(pool, **kwargs)
        assert gc.isenabled()                 # paused only while the report ran
        want = await reference_report(pool, **kwargs)
        assert got.rules == want.rules, window
        assert got.models == want.models, window
        assert got.manual == want.manual, window
        assert got.verdicts == want.verdicts, window
        assert got.suggestions == want.suggestions, window
        assert got == want, window


async def test_aggregate_report_equals_raw_report(pool):
    rng = random.Random(15)
    async with pool.acquire() as conn:
        h = await _generate(conn, rng)
    await _assert_equal(pool)                 # nothing rolled up: every alert read from the table
    report = await build_report(pool, model_id=None, rule=None, start=BASE, end=NOW, fn_window=None)
    figures = [s for s in report.rules.values()]
    assert sum(s.harmed for s in figures) and sum(s.helped for s in figures) and sum(s.no_effect for s in figures)
    assert any(s.false_positive_rate for s in figures) and any(s.false_negative_rate for s in figures)
    assert report.manual.retrains
    drift = report.rules["drift_r"]   # m1_watch is checked against m1's drift alerts only
    assert 0 < report.rules["m1_watch"].evaluations_quiet < drift.triggers + drift.evaluations_quiet

    assert await roll_up(pool) == 260
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT last_alert_id FROM feedback_rollup_state") == \
            await conn.fetchval("SELECT max(id) FROM monitoring_alert_triggers")
        assert await conn.fetchval("SELECT sum(queued + coalesced + skipped_cooldown + skipped_budget) "
                                   "FROM feedback_daily") == await conn.fetchval("SELECT count(*) FROM closed_loop_actions")
        per_rule = "SELECT day, rule, sum(triggers), sum(queued), sum(coalesced), sum(quiet) FROM {} GROUP BY 1, 2 ORDER BY 1, 2"
        assert await conn.fetch(per_rule.format("feedback_daily_rules")) == \
            await conn.fetch(per_rule.format("feedback_daily"))   # the per-rule totals the all-models report reads
    await _assert_equal(pool)                 # whole days from the aggregates

    # Late arrivals: jobs finish days after their alert, an alert arrives observed days ago, and a
    # promoted retrain turns earlier quiet alerts into false negatives.
    async with pool.acquire() as conn:
        h.conn = conn
        await h.finish_some(NOW, 1.0)
        await h.alert("m2", MIDNIGHT - 5 * DAY + dt.timedelta(hours=7))
        await h.alert("m3", MIDNIGHT - 4 * DAY + dt.timedelta(hours=2))
        await h.manual("m1", MIDNIGHT - 6 * DAY)
    await _assert_equal(pool)                 # the new alerts read from the table, past the watermark
    assert await roll_up(pool) == 2
    await _assert_equal(pool)
    assert await roll_up(pool) == 0           # counted once


async def test_a_partial_day_is_read_from_the_aggregates_when_its_counted_alerts_lie_in_the_window(pool, monkeypatch):
    """A window rarely starts or ends at midnight. After a roll-up, a partial first or last day whose
    counted alerts all lie in the window is read from the aggregates (its span, migration 0013); one
    holding a counted alert outside the window is read alert by alert. Both equal the raw-row report."""
    async with pool.acquire() as conn:
        await _generate(conn, random.Random(19))
    assert await roll_up(pool) == 260
    day = MIDNIGHT - 3 * DAY
    async with pool.acquire() as conn:
        times = [r[0] for r in await conn.fetch(
            "SELECT observe_time FROM monitoring_alert_triggers WHERE observe_time >= $1 AND observe_time < $2 "
            "ORDER BY observe_time", day, day + DAY)]
    assert len(times) > 2
    read = []
    real = feedback_daily.uncounted_alerts

    async def spy(conn, start, end, days_start, days_end, *args):
        read.append((days_start, days_end))
        return await real(conn, start, end, days_start, days_end, *args)
    monkeypatch.setattr(feedback_daily, "uncounted_alerts", spy)
    ruleset = compile_rules(RULES, "agg.rules")
    cases = [  # (start, end, the days read from the aggregates)
        (day - 4 * DAY, times[-1] + dt.timedelta(seconds=1), (day - 4 * DAY, day + DAY)),  # last day in
        (day - 4 * DAY, times[-1], (day - 4 * DAY, day)),            # its last alert is outside: read raw
        (times[0], day + 2 * DAY, (day, day + 2 * DAY)),              # first day in
        (times[0] + dt.timedelta(seconds=1), day + 2 * DAY, (day + DAY, day + 2 * DAY)),
        (times[0], times[-1] + dt.timedelta(seconds=1), (day, day + DAY)),   # within one day
        (times[0], times[-1], (times[0], times[0])),                 # nothing from the aggregates
    ]
    for start, end, days in cases:
        kwargs = dict(model_id=None, rule=None, start=start, end=end, fn_window=None, active_ruleset=ruleset)
        read.clear()
        got = await build_report(pool, **kwargs)
        assert read == [days], (start, end)
        assert got == await reference_report(pool, **kwargs), (start, end)


async def test_actions_of_alerts_created_months_before_them_are_found(pool):
    """The report looks up the actions of the alerts created in the newest month in that month alone,
    the others' in every month from their earliest create_time on: alerts created 40 days before
    their actions (still never after them) count as before."""
    async with pool.acquire() as conn:
        await _generate(conn, random.Random(18))
        await conn.execute(
            "UPDATE monitoring_alert_triggers SET create_time = create_time - interval '40 days' WHERE id % 3 = 0")
    await _assert_equal(pool)
    assert await roll_up(pool) == 260
    await _assert_equal(pool)


async def test_rollup_waits_for_decisions_still_in_flight(pool):
    """An alert whose transaction began before the pass and is still open is not skipped: the pass
    waits for it, or counts nothing and leaves it to the next."""
    async with pool.acquire() as conn:
        await conn.execute(
            """INSERT INTO monitoring_alert_triggers (model_id, alert_type, severity, observe_time)
               VALUES ('m', 'drift', 2, now())""")
        tx = conn.transaction()
        await tx.start()
        await conn.execute(
            """INSERT INTO monitoring_alert_triggers (model_id, alert_type, severity, observe_time)
               VALUES ('m', 'drift', 2, now())""")
        assert await roll_up(pool, settle_wait=0.2) == 0
        await tx.commit()
    assert await roll_up(pool) == 2


async def test_report_parts_read_one_snapshot_on_one_or_three_connections(pool, monkeypatch):
    """With connections to spare the report's three parts read at once, on connections sharing one
    exported snapshot; without, on one connection. The figures are the same either way."""
    async with pool.acquire() as conn:
        await _generate(conn, random.Random(16))
    assert await roll_up(pool) == 260
    imported = []
    real_import = history.import_snapshot

    async def spy(conn, snapshot):
        imported.append(snapshot)
        await real_import(conn, snapshot)
    monkeypatch.setattr(history, "import_snapshot", spy)
    await _assert_equal(pool)
    assert len(imported) == 2 * len(_windows())
    imported.clear()
    monkeypatch.setattr(report_module, "SPARE_CONNECTIONS", 10**6)
    await _assert_equal(pool)
    assert imported == []


async def test_imported_snapshot_sees_what_the_exporter_saw(pool):
    async with pool.acquire() as first, pool.acquire() as writer, pool.acquire() as second:
        async with first.transaction(isolation="repeatable_read", readonly=True):
            snapshot = await history.export_snapshot(first)
            await writer.execute(
                """INSERT INTO monitoring_alert_triggers (model_id, alert_type, severity, observe_time)
                   VALUES ('m', 'drift', 2, now())""")
            async with second.transaction(isolation="repeatable_read", readonly=True):
                await history.import_snapshot(second, snapshot)
                assert await second.fetchval("SELECT count(*) FROM monitoring_alert_triggers") == 0
        assert await second.fetchval("SELECT count(*) FROM monitoring_alert_triggers") == 1
        with pytest.raises(ValueError):
            await history.import_snapshot(second, "x'; DROP TABLE t; --")


async def test_a_failing_part_fails_the_report_with_its_own_error(pool, monkeypatch):
    """On three connections, a part that fails stops the others and the report raises that part's
    error (not a group of them), as on one connection; every connection goes back to the pool."""
    async with pool.acquire() as conn:
        await _generate(conn, random.Random(17))

    async def broken(conn, *args):
        await conn.fetchval("SELECT 1 / 0")
    monkeypatch.setattr(history, "performance_neighbours", broken)
    for spare in (2, 10**6):
        monkeypatch.setattr(report_module, "SPARE_CONNECTIONS", spare)
        with pytest.raises(asyncpg.DivisionByZeroError):
            await build_report(pool, model_id=None, rule=None, start=BASE, end=NOW, fn_window=None)
        assert pool.get_idle_size() == pool.get_size()
        assert gc.isenabled()
