"""The console's hourly roll-ups (migration 0010) give the same counts as the raw alert and action rows.

A generated history (several models, one of them not registered, four alert types, two rules, alerts over six weeks: some past
the roll-up's horizon, some in the current hour) is read by the console's queries before any roll-up
(every alert past the watermark, from the tables), after a roll-up, after late arrivals (an alert
observed days ago, new ones this hour) and after a second roll-up, and compared each time with a
count over the raw rows, for every model and for scoped callers.
"""

from __future__ import annotations

import datetime as dt
import random

from closedloop.server.store import console as console_store
from closedloop.server.store import partitions
from closedloop.server.store.console_hourly import HORIZON, roll_up

MODELS = ("m1", "m2", "m13", "other", "m1-unregistered")   # alerts may name an unregistered model
TYPES = ("drift", "performance", "risk", "age")
RULES = ("drift_r", "perf_r")
NOW = dt.datetime.now(dt.timezone.utc)
SCOPES = (None, ["m1*"], ["m2", "other"], ["nobody*"])


async def _alert(conn, rng: random.Random, model: str, observe: dt.datetime, version: int) -> None:
    kind = rng.choice(TYPES)
    alert = await conn.fetchval(
        """INSERT INTO monitoring_alert_triggers (model_id, alert_type, severity, observe_time, rule_set_version)
           VALUES ($1, $2, 2, $3, $4) RETURNING id""", model, kind, observe, version)
    for rule in RULES:
        if rng.random() < 0.3:
            await conn.execute(
                """INSERT INTO closed_loop_actions (alert_id, model_id, rule, rule_set_version, kind, mode, priority,
                       decision, create_time) VALUES ($1, $2, $3, $4, 'RETRAIN', 'FULL', 3, 'COALESCED', $5)""",
                alert, model, rule, version, observe + dt.timedelta(seconds=rng.uniform(0, 5)))


async def _raw_per_hour(conn, since: dt.datetime, scopes) -> list[tuple]:
    rows = await conn.fetch(
        """SELECT date_trunc('hour', observe_time, 'UTC') AS hour, alert_type, count(*) AS n
             FROM monitoring_alert_triggers
            WHERE observe_time >= date_trunc('hour', $1::timestamptz, 'UTC')
              AND ($2::text[] IS NULL OR model_id LIKE ANY($2::text[]))
            GROUP BY 1, 2 ORDER BY 1, 2""",
        since, console_store.like_patterns(scopes))
    return [tuple(r) for r in rows]


async def _raw_triggers(conn, since: dt.datetime, scopes) -> list[tuple]:
    rows = await conn.fetch(
        """SELECT rule, date_trunc('day', create_time, 'UTC') AS day, count(*) AS n FROM closed_loop_actions
            WHERE create_time >= date_trunc('day', $1::timestamptz, 'UTC')
              AND ($2::text[] IS NULL OR model_id LIKE ANY($2::text[]))
            GROUP BY 1, 2 ORDER BY 1, 2""",
        since, console_store.like_patterns(scopes))
    return [tuple(r) for r in rows]


async def _assert_equal(pool) -> None:
    async with pool.acquire() as conn:
        for scopes in SCOPES:
            for days in (1, 7, 14):
                since = NOW - dt.timedelta(days=days, minutes=17)
                got = [tuple(r) for r in await console_store.alerts_per_hour(conn, since, scopes)]
                assert got == await _raw_per_hour(conn, since, scopes), (scopes, days)
                got = [tuple(r) for r in await console_store.rule_triggers_per_day(conn, RULES, since, scopes)]
                assert got == await _raw_triggers(conn, since, scopes), (scopes, days)


async def test_hourly_rollup_equals_raw_counts(pool):
    rng = random.Random(16)
    async with pool.acquire() as conn:
        await partitions.ensure_months(conn, NOW - dt.timedelta(days=60), NOW)
        version = await conn.fetchval(
            """INSERT INTO automated_response_rules (source, filename, sha256, rule_names, active)
               VALUES ('', 'c.rules', 'x', ARRAY['drift_r', 'perf_r'], true) RETURNING version""")
        for model in MODELS[:-1]:
            await conn.execute("""INSERT INTO monitoring_retraining_integration (model_id, training, metric)
                                  VALUES ($1, '{}', 'accuracy')""", model)
        for _ in range(400):
            ago = dt.timedelta(seconds=rng.uniform(0, 42 * 86400))   # some past the 31-day horizon
            await _alert(conn, rng, rng.choice(MODELS), NOW - ago, version)
        for _ in range(20):                                         # this very hour
            await _alert(conn, rng, rng.choice(MODELS), NOW - dt.timedelta(seconds=rng.uniform(0, 600)), version)
        assert await conn.fetchval("SELECT count(*) FROM closed_loop_actions") > 100

    await _assert_equal(pool)                  # nothing rolled up: all from the tables
    assert await roll_up(pool) == 420
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT last_alert_id FROM console_rollup_state") == \
            await conn.fetchval("SELECT max(id) FROM monitoring_alert_triggers")
        assert await conn.fetchval("SELECT min(hour) FROM console_model_alerts_hourly") >= \
            NOW - HORIZON - dt.timedelta(hours=1)
        assert await conn.fetchval("SELECT sum(alerts) FROM console_alerts_hourly") == \
            await conn.fetchval("SELECT sum(alerts) FROM console_model_alerts_hourly")
    await _assert_equal(pool)                  # from the roll-up

    async with pool.acquire() as conn:         # late arrivals and new alerts, past the watermark
        await _alert(conn, rng, "m2", NOW - dt.timedelta(days=3, hours=2), version)
        await _alert(conn, rng, "m13", NOW - dt.timedelta(days=9), version)
        for _ in range(5):
            await _alert(conn, rng, rng.choice(MODELS), NOW - dt.timedelta(seconds=rng.uniform(0, 300)), version)
    await _assert_equal(pool)
    assert await roll_up(pool) == 7
    await _assert_equal(pool)
    assert await roll_up(pool) == 0            # counted once
    await _assert_equal(pool)


async def test_rollup_waits_for_decisions_still_in_flight(pool):
    """An alert whose transaction began before the pass and is still open is not skipped: the pass
    waits for it, or counts nothing and leaves it to the next."""
    async with pool.acquire() as conn:
        await conn.execute("""INSERT INTO monitoring_alert_triggers (model_id, alert_type, severity, observe_time)
                              VALUES ('m', 'drift', 2, now())""")
        tx = conn.transaction()
        await tx.start()
        await conn.execute("""INSERT INTO monitoring_alert_triggers (model_id, alert_type, severity, observe_time)
                              VALUES ('m', 'drift', 2, now())""")
        assert await roll_up(pool, settle_wait=0.2) == 0
        await tx.commit()
    assert await roll_up(pool) == 2
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT sum(alerts) FROM console_alerts_hourly") == 2
