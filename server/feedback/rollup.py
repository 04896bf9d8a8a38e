"""The periodic roll-up of alerts into the daily feedback aggregates (migration 0009).

Every `interval` seconds one replica (an advisory lock elects it) counts the alerts past the watermark
into feedback_daily and feedback_daily_models, by the UTC day of their observe_time, widens each
day's observe_time span (feedback_day_spans: the report reads a partial day from the aggregates
when the span lies in its window) and moves the watermark, each batch in one transaction, so every
alert is counted exactly once. An alert that arrives late (an old observe_time) updates its own day.
Only settled ids are counted (see store/feedback_daily.py): the decision transactions still running
when a pass begins are waited for, briefly; a pass that cannot wait that long leaves the rest to the
next one. Nothing here is on the ingest path: a decision costs the same with or without the aggregates.
"""

from __future__ import annotations

import asyncio
import datetime as dt

import asyncpg
import structlog

from ..periodic import RollupTask
from ..store import feedback_daily as daily
from ..store import history
from .tally import CheckedRules, Counted, compile_sources, tally

log = structlog.get_logger(__name__)
INTERVAL_S = 60.0
BATCH = 5000
SETTLE_WAIT_S = 10.0


def utc_day(alert) -> dt.date:
    return alert["observe_time"].astimezone(dt.timezone.utc).date()


async def roll_up(pool: asyncpg.Pool, *, settle_wait: float = SETTLE_WAIT_S, batch: int = BATCH) -> int:
    """One pass: count every settled alert past the watermark. Returns how many were counted."""
    counted = 0
    async with pool.acquire() as conn:
        hi, at = await daily.settle_point(conn)
        deadline = asyncio.get_running_loop().time() + settle_wait
        while not await daily.settled(conn, at):
            if asyncio.get_running_loop().time() > deadline:
                log.info("feedback.rollup_unsettled", up_to_id=hi)
                return 0
            await asyncio.sleep(0.05)
        while True:
            async with conn.transaction():
                if not await daily.lock_rollup(conn):
                    return counted  # another replica is rolling up
                low = await daily.watermark(conn)
                alerts = await daily.alerts_after(conn, low, hi, batch)
                if not alerts:
                    return counted
                actions = await history.actions_for_alerts(conn, alerts)
                sources = await history.rule_set_sources(conn, sorted({a["rule_set_version"] for a in alerts}))
                by_alert: dict[int, list] = {}
                for act in actions:
                    by_alert.setdefault(act["alert_id"], []).append(act)
                t = tally((Counted(utc_day(a), a["model_id"], a["alert_type"], a["rule_set_version"],
                                   [(act["rule"], act["decision"]) for act in by_alert.get(a["id"], ())])
                           for a in alerts), CheckedRules(compile_sources(sources)))
                await daily.add(
                    conn,
                    [(model, day, rule, c.triggers, c.decisions, c.quiet) for (day, model, rule), c in t.rules.items()],
                    [(model, day, n) for (day, model), n in t.models.items()],
                    _spans(alerts))
                await daily.set_watermark(conn, alerts[-1]["id"])
                counted += len(alerts)


def _spans(alerts) -> list[tuple[dt.date, dt.datetime, dt.datetime]]:
    """(day, first, last observe_time) of the alerts of each day among `alerts`."""
    spans: dict[dt.date, list[dt.datetime]] = {}
    for a in alerts:
        span = spans.setdefault(utc_day(a), [a["observe_time"], a["observe_time"]])
        span[0], span[1] = min(span[0], a["observe_time"]), max(span[1], a["observe_time"])
    return [(day, first, last) for day, (first, last) in spans.items()]


def feedback_rollup_task(pool: asyncpg.Pool, interval: float = INTERVAL_S) -> RollupTask:
    """The background task that runs `roll_up` every `interval` seconds (started by app.py)."""
    return RollupTask("feedback_rollup", roll_up, pool, interval)
