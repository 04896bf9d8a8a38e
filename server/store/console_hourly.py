"""The console's hourly roll-ups (migration 0010): alerts per hour by type, actions per hour by rule,
for every model together and per model, maintained by a periodic pass behind an alert-id watermark.

Every `interval` seconds one server (a transaction-level advisory lock elects it) counts the alerts
past the watermark, and the actions written in their decision transactions, into the hourly tables
and moves the watermark, each batch of ids in one transaction, so every alert is counted exactly once.
Only settled ids are counted, as for the daily feedback aggregates (store/feedback_daily.py explains
why a visible id does not prove every smaller one is visible). A late alert (an old observe_time)
updates its own hour. The tables keep HORIZON: the console never shows more (7 days of alerts, 14
of triggers); older hours are deleted by the same pass. Nothing here is on the ingest path.
The readers (store/console.py) add the alerts and actions past the watermark from the raw tables.
"""

from __future__ import annotations

import asyncio
import datetime as dt

import asyncpg
import structlog

from ..periodic import RollupTask
from .feedback_daily import settle_point, settled

log = structlog.get_logger(__name__)

INTERVAL_S = 60.0
# Alert ids per transaction: a batch is a few grouped INSERTs, so it can be large.
BATCH_IDS = 200_000
SETTLE_WAIT_S = 10.0
HORIZON = dt.timedelta(days=31)
# Serialises roll-ups across replicas (pg_try_advisory_xact_lock); "clhour".
ROLLUP_LOCK_KEY = 0x636C686F7572

# One statement per batch: the alerts and the actions of ids in ($1, $2] observed (created) within
# the horizon ($3), grouped per hour, added to both the all-models and the per-model tables.
_ROLLUP_SQL = """
WITH a AS (
    SELECT model_id, alert_type, date_trunc('hour', observe_time, 'UTC') AS hour FROM monitoring_alert_triggers
     WHERE id > $1 AND id <= $2 AND observe_time >= $3),
c AS (
    SELECT model_id, rule, date_trunc('hour', create_time, 'UTC') AS hour FROM closed_loop_actions
     WHERE alert_id > $1 AND alert_id <= $2 AND create_time >= $3),
seen AS (
    INSERT INTO console_rollup_models (model_id) SELECT model_id FROM a UNION SELECT model_id FROM c
    ON CONFLICT DO NOTHING),
am AS (
    INSERT INTO console_model_alerts_hourly (model_id, hour, alert_type, alerts)
    SELECT model_id, hour, alert_type, count(*) FROM a GROUP BY 1, 2, 3
    ON CONFLICT (model_id, hour, alert_type) DO UPDATE SET alerts = console_model_alerts_hourly.alerts + EXCLUDED.alerts),
aa AS (
    INSERT INTO console_alerts_hourly (hour, alert_type, alerts)
    SELECT hour, alert_type, count(*) FROM a GROUP BY 1, 2
    ON CONFLICT (hour, alert_type) DO UPDATE SET alerts = console_alerts_hourly.alerts + EXCLUDED.alerts),
cm AS (
    INSERT INTO console_model_actions_hourly (model_id, hour, rule, actions)
    SELECT model_id, hour, rule, count(*) FROM c GROUP BY 1, 2, 3
    ON CONFLICT (model_id, hour, rule) DO UPDATE SET actions = console_model_actions_hourly.actions + EXCLUDED.actions)
INSERT INTO console_actions_hourly (hour, rule, actions)
SELECT hour, rule, count(*) FROM c GROUP BY 1, 2
ON CONFLICT (hour, rule) DO UPDATE SET actions = console_actions_hourly.actions + EXCLUDED.actions
"""
_TABLES = ("console_alerts_hourly", "console_actions_hourly", "console_model_alerts_hourly",
           "console_model_actions_hourly")


async def watermark(conn: asyncpg.Connection) -> int:
    """Every alert id up to this one is counted in the hourly tables."""
    return await conn.fetchval("SELECT last_alert_id FROM console_rollup_state")


async def _prune(conn: asyncpg.Connection, before: dt.datetime) -> None:
    for table in _TABLES:
        await conn.execute(f"DELETE FROM {table} WHERE hour < $1", before)


async def roll_up(pool: asyncpg.Pool, *, settle_wait: float = SETTLE_WAIT_S, batch: int = BATCH_IDS) -> int:
    """One pass: count every settled alert past the watermark. Returns the watermark's advance in ids."""
    async with pool.acquire() as conn:
        hi, at = await settle_point(conn)
        deadline = asyncio.get_running_loop().time() + settle_wait
        while not await settled(conn, at):
            if asyncio.get_running_loop().time() > deadline:
                log.info("console.rollup_unsettled", up_to_id=hi)
                return 0
            await asyncio.sleep(0.05)
        start = None
        while True:
            async with conn.transaction():
                if not await conn.fetchval("SELECT pg_try_advisory_xact_lock($1)", ROLLUP_LOCK_KEY):
                    return 0  # another server is rolling up
                low = await watermark(conn)
                start = low if start is None else start
                if low >= hi:
                    return low - start
                top = min(low + batch, hi)
                horizon = (await conn.fetchval("SELECT now()")) - HORIZON
                await conn.execute(_ROLLUP_SQL, low, top, horizon)
                if low == start:
                    await _prune(conn, horizon)
                await conn.execute("UPDATE console_rollup_state SET last_alert_id = $1, update_time = now()", top)


def console_rollup_task(pool: asyncpg.Pool, interval: float = INTERVAL_S) -> RollupTask:
    """The background task that runs `roll_up` every `interval` seconds (started by app.py on every
    server: replicas take turns by the lock, and a pass with nothing new costs two small queries)."""
    return RollupTask("console_rollup", roll_up, pool, interval)
