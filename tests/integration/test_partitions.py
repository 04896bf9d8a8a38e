"""Monthly partitions of alerts and actions (migration 0008, store/partitions.py): the migration keeps
every row of a populated database, months are created ahead, retention drops whole months."""

from __future__ import annotations

import datetime as dt
import json

import asyncpg
import grpc
import pytest

from closedloop import AsyncClient
from closedloop.server.app import create_server
from closedloop.server.db.migrations import bundled_migrations, migrate
from closedloop.server.store import partitions

from ..acceptance.conftest import make_settings

UTC = dt.timezone.utc
ALERT_COLUMNS = ("id, request_id, request_hash, model_id, alert_type, severity, metrics, labels, source, "
                 "observe_time, create_time, update_time, state, rule_set_version")
ACTION_COLUMNS = ("id, alert_id, model_id, rule, rule_set_version, kind, mode, priority, decision, reason, "
                  "job_id, cooldown_until, create_time")


async def _fill_old_schema(conn) -> None:
    """Alerts over four months (request ids on most, every state and type), their actions and jobs,
    written with the statements the 0001-0007 schema's store used."""
    await conn.execute(
        """INSERT INTO monitoring_retraining_integration (model_id, training, metric)
           SELECT 'm' || i, '{}', 'accuracy' FROM generate_series(0, 4) i""")
    now = await conn.fetchval("SELECT now()")
    for i in range(400):
        observed = now - dt.timedelta(days=110) + dt.timedelta(hours=6.5 * i)
        alert_id = await conn.fetchval(
            """INSERT INTO monitoring_alert_triggers (request_id, request_hash, model_id, alert_type, severity,
                   metrics, labels, source, observe_time, create_time, state, rule_set_version)
               VALUES ($1, $2, $3, $4, $5, $6, $7, 'test', $8::timestamptz, $8::timestamptz + interval '1 second', $9, 1)
               ON CONFLICT (request_id) WHERE request_id IS NOT NULL DO NOTHING RETURNING id""",
            None if i % 7 == 0 else f"req-{i}", b"h%d" % i, f"m{i % 5}", ("drift", "performance", "risk")[i % 3],
            1 + i % 4, json.dumps({"drift_score": i / 400}), json.dumps({"desk": "fx"}), observed,
            ("OPEN", "ACTIONED", "RESOLVED", "ACKNOWLEDGED", "SUPPRESSED")[i % 5])
        if i % 5 == 1:
            job_id = None
            if i % 10 == 1:
                job_id = await conn.fetchval(
                    """INSERT INTO retrain_jobs (model_id, mode, priority, state, trigger_alert_id)
                       VALUES ($1, 'FULL', 3, 'SUCCEEDED', $2) RETURNING id""", f"m{i % 5}", alert_id)
            await conn.execute(
                """INSERT INTO closed_loop_actions (alert_id, model_id, rule, rule_set_version, kind, mode,
                       priority, decision, job_id, create_time)
                   VALUES ($1, $2, 'drift_retrain', 1, 'RETRAIN', 'FULL', 3, $3, $4, $5)""",
                alert_id, f"m{i % 5}", "QUEUED" if job_id else "SKIPPED_COOLDOWN", job_id,
                observed + dt.timedelta(seconds=1))


async def _snapshot(conn) -> tuple[list, list]:
    alerts = [dict(r) for r in await conn.fetch(f"SELECT {ALERT_COLUMNS} FROM monitoring_alert_triggers ORDER BY id")]
    actions = [dict(r) for r in await conn.fetch(f"SELECT {ACTION_COLUMNS} FROM closed_loop_actions ORDER BY id")]
    return alerts, actions


async def test_migration_keeps_every_row_and_the_api_reads_them(empty_database_url, tmp_path):
    conn = await asyncpg.connect(empty_database_url)
    try:
        await migrate(conn, [m for m in bundled_migrations() if m.version < 8])
        await _fill_old_schema(conn)
        alerts_before, actions_before = await _snapshot(conn)
        report = await migrate(conn)
        assert report.applied[0] == "0008_partitioned_alerts"  # and any later migration after it
        assert await _snapshot(conn) == (alerts_before, actions_before)
        months = await partitions.month_partitions(conn, "monitoring_alert_triggers")
        assert len(months) >= 6  # four months of history, this month and the months ahead
        assert await conn.fetchval("SELECT count(*) FROM ONLY monitoring_alert_triggers") == 0  # all in months
        assert await conn.fetchval("SELECT count(*) FROM alert_request_ids") == sum(
            1 for a in alerts_before if a["request_id"] is not None)
    finally:
        await conn.close()

    srv, port = await create_server(make_settings(empty_database_url, tmp_path))
    try:
        async with AsyncClient(f"127.0.0.1:{port}", timeout=15.0, retries=0) as client:
            for old in alerts_before[::37]:
                got = await client.get_alert(str(old["id"]))
                assert (got.model_id, got.type, got.observe_time.ToDatetime(tzinfo=UTC)) == (
                    old["model_id"], old["alert_type"], old["observe_time"])
                want_actions = [a["id"] for a in actions_before if a["alert_id"] == old["id"]]
                assert [int(a.id) for a in got.actions] == want_actions
            # Every filter pages through exactly the stored rows, newest first.
            for filters, keep in [({}, lambda a: True), ({"model_id": "m2"}, lambda a: a["model_id"] == "m2"),
                                  ({"type": "risk"}, lambda a: a["alert_type"] == "risk"),
                                  ({"state": "RESOLVED"}, lambda a: a["state"] == "RESOLVED")]:
                seen, token = [], ""
                while True:
                    page = await client.list_alerts(page_size=23, page_token=token, **filters)
                    seen += [int(a.id) for a in page.alerts]
                    token = page.next_page_token
                    if not token:
                        break
                expected = sorted((a for a in alerts_before if keep(a)), key=lambda a: (a["observe_time"], a["id"]),
                                  reverse=True)
                assert seen == [a["id"] for a in expected], filters
            # A request_id stored before the migration is still taken (its payload fingerprint is this
            # test's stand-in, so a different payload is refused naming the stored alert).
            old = next(a for a in alerts_before if a["request_id"] == "req-8")
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await client.create_alert(old["model_id"], old["alert_type"], "low", request_id="req-8")
            assert err.value.code() == grpc.StatusCode.ALREADY_EXISTS and f"(id {old['id']})" in err.value.details()
            fresh = await client.create_alert("m1", "drift", "low", request_id="req-new")
            assert int(fresh.id) > max(a["id"] for a in alerts_before)
    finally:
        await srv.stop(grace=1.0)


async def _insert_alert(conn, observed: dt.datetime, request_id: str | None = None) -> int:
    return await conn.fetchval(
        """INSERT INTO monitoring_alert_triggers (model_id, alert_type, severity, observe_time, request_id)
           VALUES ('m', 'drift', 1, $1, $2) RETURNING id""", observed, request_id)


async def test_months_are_created_ahead_and_older_rows_move_into_their_month(database_url):
    conn = await asyncpg.connect(database_url)
    try:
        now = await conn.fetchval("SELECT now()")
        report = await partitions.maintain(conn, retention=None)
        assert not report.dropped and not report.skipped
        months = await partitions.month_partitions(conn, "monitoring_alert_triggers")
        assert months[-1] > now + dt.timedelta(days=31)  # at least the next month exists
        old = await _insert_alert(conn, now - dt.timedelta(days=200))  # lands in the _before partition
        assert await conn.fetchval("SELECT count(*) FROM monitoring_alert_triggers_before") == 1
        await partitions.ensure_months(conn, now - dt.timedelta(days=240), now)
        assert await conn.fetchval("SELECT count(*) FROM monitoring_alert_triggers_before") == 0
        assert await conn.fetchval("SELECT id FROM monitoring_alert_triggers WHERE id = $1", old) == old
        months = await partitions.month_partitions(conn, "monitoring_alert_triggers")
        assert months[0] <= now - dt.timedelta(days=240)
    finally:
        await conn.close()


async def test_retention_drops_whole_months_and_keeps_feedback(database_url):
    conn = await asyncpg.connect(database_url)
    try:
        now = await conn.fetchval("SELECT now()")
        await partitions.ensure_months(conn, now - dt.timedelta(days=150), now)
        old_ids = [await _insert_alert(conn, now - dt.timedelta(days=d)) for d in (140, 120, 100)]
        recent = await _insert_alert(conn, now - dt.timedelta(hours=1))
        await conn.execute(
            """INSERT INTO closed_loop_actions (alert_id, model_id, rule, rule_set_version, kind, decision, create_time)
               VALUES ($1, 'm', 'r', 1, 'RECORD', 'RECORDED', $2), ($3, 'm', 'r', 1, 'RECORD', 'RECORDED', now())""",
            old_ids[0], now - dt.timedelta(days=140), recent)
        await conn.execute(
            """INSERT INTO alert_request_ids (request_id, alert_id, observe_time, create_time)
               VALUES ('old', $1, $2, $2), ('new', $3, now(), now())""",
            old_ids[0], now - dt.timedelta(days=140), recent)
        await conn.execute(
            """INSERT INTO feedback_loop_metrics (time, model_id, job_id, mode, outcome)
               VALUES ($1, 'm', 1, 'FULL', 'SUCCEEDED')""", now - dt.timedelta(days=140))
        months_before = await partitions.month_partitions(conn, "monitoring_alert_triggers")

        report = await partitions.maintain(conn, retention=dt.timedelta(days=60))

        assert report.dropped and all(name.startswith(("monitoring_alert_triggers_", "closed_loop_actions_"))
                                      for name in report.dropped)
        months_after = await partitions.month_partitions(conn, "monitoring_alert_triggers")
        cutoff = now - dt.timedelta(days=60)
        assert all(m + dt.timedelta(days=31) > cutoff for m in months_after)  # nothing wholly expired is left
        assert len(months_after) < len(months_before)
        remaining = {r[0] for r in await conn.fetch("SELECT id FROM monitoring_alert_triggers")}
        assert recent in remaining and not remaining & set(old_ids[:2])  # 140 and 120 days: their months are gone
        assert await conn.fetchval("SELECT count(*) FROM closed_loop_actions") == 1
        assert [r[0] for r in await conn.fetch("SELECT request_id FROM alert_request_ids")] == ["new"]
        assert report.request_ids_expired == 1
        assert await conn.fetchval("SELECT count(*) FROM feedback_loop_metrics") == 1  # feedback is kept
        again = await partitions.maintain(conn, retention=dt.timedelta(days=60))
        assert again.dropped == () and again.request_ids_expired == 0
    finally:
        await conn.close()


@pytest.mark.parametrize("text", ["off", "180d", "26w", "4320h"])
def test_retention_flag_reads_durations(text):
    from closedloop.server.config import parse_retention

    assert parse_retention(text) == (None if text == "off" else dt.timedelta(days=180) if text != "26w"
                                     else dt.timedelta(weeks=26))


async def test_expired_request_ids_go_in_batches(database_url, monkeypatch):
    monkeypatch.setattr(partitions, "EXPIRY_BATCH", 3)
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(
            """INSERT INTO alert_request_ids (request_id, alert_id, observe_time, create_time)
               SELECT 'k' || i, i, now(), now() - interval '10 days' FROM generate_series(1, 7) i""")
        await conn.execute("INSERT INTO alert_request_ids (request_id, alert_id, observe_time) VALUES ('kept', 8, now())")
        assert await partitions.expire_request_ids(conn, await conn.fetchval("SELECT now() - interval '1 day'")) == 7
        assert [r[0] for r in await conn.fetch("SELECT request_id FROM alert_request_ids")] == ["kept"]
    finally:
        await conn.close()


async def test_a_time_window_is_read_in_pages_in_order(database_url, monkeypatch):
    from closedloop.server.store import alerts as alert_store

    monkeypatch.setattr(alert_store, "WINDOW_PAGE", 3)
    conn = await asyncpg.connect(database_url)
    try:
        now = await conn.fetchval("SELECT date_trunc('second', now())")
        # Ties on observe_time across page boundaries, and rows either side of the window.
        times = [now - dt.timedelta(minutes=m) for m in (1, 2, 2, 2, 2, 3, 3, 4, 9, 60)]
        ids = [await _insert_alert(conn, t) for t in times]
        got = await alert_store.alerts_in_window(conn, now - dt.timedelta(minutes=9), now)
        want = sorted((t, i) for t, i in zip(times, ids) if t >= now - dt.timedelta(minutes=9))
        assert [(r["observe_time"], r["id"]) for r in got] == want
    finally:
        await conn.close()
