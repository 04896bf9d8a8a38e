"""The migration runner against a real PostgreSQL: fresh, re-run, edited file, two runners at once."""

from __future__ import annotations

import asyncio
import dataclasses

import asyncpg
import pytest

from closedloop.server.db.migrations import MigrationError, bundled_migrations, migrate

SEED_TABLES = {
    "monitoring_alert_triggers", "closed_loop_actions", "monitoring_retraining_integration",
    "feedback_loop_metrics", "automated_response_rules", "retrain_jobs", "model_versions",
    "schema_migrations",
}


async def _tables(conn) -> set[str]:
    rows = await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
    return {r["tablename"] for r in rows}


async def test_fresh_database_gets_every_table(empty_database_url):
    conn = await asyncpg.connect(empty_database_url)
    try:
        report = await migrate(conn)
        assert report.applied == [f"{m.version:04d}_{m.name}" for m in bundled_migrations()]
        assert SEED_TABLES <= await _tables(conn)
        assert report.timescale is False  # pgserver ships no timescaledb
    finally:
        await conn.close()


async def test_rerun_applies_nothing(empty_database_url):
    conn = await asyncpg.connect(empty_database_url)
    try:
        await migrate(conn)
        again = await migrate(conn)
        assert again.applied == []
        assert again.already == len(bundled_migrations())
    finally:
        await conn.close()


async def test_edited_applied_migration_is_refused(empty_database_url):
    conn = await asyncpg.connect(empty_database_url)
    try:
        await migrate(conn)
        edited = [dataclasses.replace(m, sql=m.sql + "\n-- edited\n") for m in bundled_migrations()]
        with pytest.raises(MigrationError, match=r"0001_initial\.sql was edited after it was applied"):
            await migrate(conn, edited)
    finally:
        await conn.close()


async def test_unknown_applied_migration_is_refused(empty_database_url):
    conn = await asyncpg.connect(empty_database_url)
    try:
        await migrate(conn)
        await conn.execute("INSERT INTO schema_migrations (version, name, checksum) VALUES (9999, 'future', 'x')")
        with pytest.raises(MigrationError, match="9999_future"):
            await migrate(conn)
    finally:
        await conn.close()


async def test_two_runners_at_once_apply_each_file_once(empty_database_url):
    conns = [await asyncpg.connect(empty_database_url) for _ in range(2)]
    try:
        reports = await asyncio.gather(*(migrate(c) for c in conns))
        applied = sorted(len(r.applied) for r in reports)
        assert applied == [0, len(bundled_migrations())]
        count = await conns[0].fetchval("SELECT count(*) FROM schema_migrations")
        assert count == len(bundled_migrations())
    finally:
        for c in conns:
            await c.close()


async def test_failed_migration_leaves_nothing_half_applied(empty_database_url):
    conn = await asyncpg.connect(empty_database_url)
    try:
        good = bundled_migrations()
        from closedloop.server.db.migrations import Migration

        broken = Migration(good[-1].version + 1, "broken", "CREATE TABLE half (x int); SELECT no_such_function();")
        with pytest.raises(asyncpg.PostgresError):
            await migrate(conn, good + [broken])
        assert "half" not in await _tables(conn)
        assert await conn.fetchval("SELECT max(version) FROM schema_migrations") == good[-1].version
    finally:
        await conn.close()


async def test_stored_improvement_is_backfilled_with_the_formula_sql_used(empty_database_url):
    conn = await asyncpg.connect(empty_database_url)
    try:
        every = bundled_migrations()
        await migrate(conn, every[:[m.name for m in every].index("job_improvement")])
        await conn.execute("""INSERT INTO monitoring_retraining_integration (model_id, training, metric)
                              VALUES ('m', '{}'::jsonb, 'accuracy')""")
        await conn.execute(
            """INSERT INTO retrain_jobs (model_id, mode, priority, state, metric, champion_metric, challenger_metric)
               VALUES ('m', 'FULL', 2, 'SUCCEEDED', 'accuracy', 0.6, 0.7),
                      ('m', 'FULL', 2, 'SUCCEEDED', 'rmse', 0.5, 0.4),
                      ('m', 'FULL', 2, 'SUCCEEDED', 'log_loss', 0.3, 0.35),
                      ('m', 'FULL', 2, 'SUCCEEDED', 'accuracy', NULL, 0.7)""")
        await migrate(conn)
        got = [r["improvement"] for r in await conn.fetch("SELECT improvement FROM retrain_jobs ORDER BY id")]
        assert got[:3] == [pytest.approx(0.1), pytest.approx(0.1), pytest.approx(-0.05)] and got[3] is None
    finally:
        await conn.close()


async def test_days_counted_before_the_spans_existed_get_a_span_that_holds_their_alerts(empty_database_url):
    """Migration 0013 on a populated database: each day the aggregates already count gets the span
    of its alerts (wider than the counted ones is safe, narrower never), a day whose alerts retention
    dropped gets the whole day, so no partial window reads it from the aggregates."""
    conn = await asyncpg.connect(empty_database_url)
    try:
        every = bundled_migrations()
        await migrate(conn, every[:[m.name for m in every].index("feedback_day_spans")])
        await conn.execute(
            """INSERT INTO monitoring_alert_triggers (model_id, alert_type, severity, observe_time) VALUES
                   ('m', 'drift', 2, '2026-11-20 03:00+00'), ('m', 'drift', 2, '2026-11-20 17:30+00'),
                   ('m', 'drift', 2, '2026-11-22 12:00+00')""")
        await conn.execute(
            """INSERT INTO feedback_daily_models (model_id, day, triggers)
               VALUES ('m', '2026-11-20', 2), ('m', '2026-10-01', 5)""")
        await migrate(conn)
        spans = {r["day"].isoformat(): (r["first_observe"].isoformat(), r["last_observe"].isoformat())
                 for r in await conn.fetch("SELECT * FROM feedback_day_spans")}
        assert spans == {
            "2026-11-20": ("2026-11-20T03:00:00+00:00", "2026-11-20T17:30:00+00:00"),
            "2026-10-01": ("2026-10-01T00:00:00+00:00", "2026-10-02T00:00:00+00:00"),
        }  # 2026-11-22: nothing counted there yet, so no span: the roll-up starts it
    finally:
        await conn.close()


async def test_rule_totals_are_backfilled_from_the_per_model_aggregates(empty_database_url):
    """Migration 0014 on a populated database: the per-rule daily totals equal the sums of the
    per-model rows already counted, so a report over every model reads the same figures."""
    conn = await asyncpg.connect(empty_database_url)
    try:
        every = bundled_migrations()
        await migrate(conn, every[:[m.name for m in every].index("feedback_daily_rules")])
        await conn.execute(
            """INSERT INTO feedback_daily (model_id, day, rule, triggers, queued, coalesced, quiet) VALUES
                   ('a', '2026-11-20', 'drift', 2, 1, 1, 3), ('b', '2026-11-20', 'drift', 0, 0, 0, 5),
                   ('a', '2026-11-21', 'drift', 1, 1, 0, 0), ('a', '2026-11-20', 'perf', 0, 0, 0, 4)""")
        await migrate(conn)
        rows = await conn.fetch("SELECT day::text, rule, triggers, queued, coalesced, quiet FROM feedback_daily_rules "
                                "ORDER BY day, rule")
        assert [tuple(r) for r in rows] == [("2026-11-20", "drift", 2, 1, 1, 8), ("2026-11-20", "perf", 0, 0, 0, 4),
                                            ("2026-11-21", "drift", 1, 1, 0, 0)]
    finally:
        await conn.close()
