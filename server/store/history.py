"""Read-only history queries used by backtests and the feedback report."""

from __future__ import annotations

import datetime as dt
from typing import Sequence

import asyncpg

from .models import like_patterns


async def actions_for_alerts(conn: asyncpg.Connection, alert_ids: Sequence[int]) -> list[asyncpg.Record]:
    return await conn.fetch(
        """SELECT id, alert_id, model_id, rule, kind, mode, priority, decision, job_id, create_time
             FROM closed_loop_actions WHERE alert_id = ANY($1::bigint[]) ORDER BY id""",
        list(alert_ids),
    )


async def registry(conn: asyncpg.Connection) -> list[asyncpg.Record]:
    return await conn.fetch(
        """SELECT model_id, enabled, cooldown_override_s, max_retrains_per_day, current_version,
                  current_version_time, metric, promotion_margin
             FROM monitoring_retraining_integration""")


async def typical_job_seconds(conn: asyncpg.Connection) -> dict[str, float]:
    """Median create→end time of finished jobs per model: how long a simulated job stays active."""
    rows = await conn.fetch(
        """SELECT model_id, percentile_cont(0.5) WITHIN GROUP
                  (ORDER BY extract(epoch FROM end_time - create_time)) AS seconds
             FROM retrain_jobs WHERE end_time IS NOT NULL GROUP BY model_id""")
    return {r["model_id"]: float(r["seconds"]) for r in rows if r["seconds"] is not None}


async def promotions(conn: asyncpg.Connection) -> list[asyncpg.Record]:
    return await conn.fetch(
        "SELECT model_id, to_version, create_time FROM model_promotions ORDER BY model_id, create_time")


async def rule_set_sources(conn: asyncpg.Connection, versions: Sequence[int]) -> dict[int, asyncpg.Record]:
    rows = await conn.fetch(
        "SELECT version, source, filename FROM automated_response_rules WHERE version = ANY($1::bigint[])",
        list(versions))
    return {r["version"]: r for r in rows}


async def feedback_rows(conn: asyncpg.Connection, start: dt.datetime, end: dt.datetime,
                        model_id: str | None, scopes: Sequence[str] | None = None) -> list[asyncpg.Record]:
    """Finished jobs with their trigger, in the window (by job end); `scopes`: model globs (None: all)."""
    return await conn.fetch(
        """SELECT f.*, a.observe_time AS alert_time
             FROM feedback_loop_metrics f
             LEFT JOIN monitoring_alert_triggers a ON a.id = f.alert_id
            WHERE f.time >= $1 AND f.time < $2 AND ($3::text IS NULL OR f.model_id = $3)
              AND ($4::text[] IS NULL OR f.model_id LIKE ANY($4::text[]))
            ORDER BY f.time""",
        start, end, model_id, like_patterns(scopes))


async def actions_in_window(conn: asyncpg.Connection, start: dt.datetime, end: dt.datetime,
                            model_id: str | None, rule: str | None,
                            scopes: Sequence[str] | None = None) -> list[asyncpg.Record]:
    return await conn.fetch(
        """SELECT c.id, c.alert_id, c.model_id, c.rule, c.kind, c.decision, c.job_id, a.observe_time,
                  a.metrics AS alert_metrics,
                  j.state AS job_state, j.promoted, j.champion_metric, j.challenger_metric, j.metric,
                  j.new_version
             FROM closed_loop_actions c
             JOIN monitoring_alert_triggers a ON a.id = c.alert_id
             LEFT JOIN retrain_jobs j ON j.id = c.job_id
            WHERE a.observe_time >= $1 AND a.observe_time < $2
              AND ($3::text IS NULL OR c.model_id = $3) AND ($4::text IS NULL OR c.rule = $4)
              AND ($5::text[] IS NULL OR c.model_id LIKE ANY($5::text[]))
            ORDER BY c.id""",
        start, end, model_id, rule, like_patterns(scopes))
