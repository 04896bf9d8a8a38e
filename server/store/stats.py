"""Service-wide counts for the Prometheus exporter (http/prometheus.py), in one statement.

Read from the tables rather than kept as process counters, so every replica reports the same truth
and a restart loses nothing.
"""

from __future__ import annotations

import asyncpg

_COUNTS = """SELECT
    (SELECT count(*) FROM monitoring_alert_triggers) AS alerts_total,
    (SELECT count(*) FROM closed_loop_actions) AS actions_total,
    (SELECT count(*) FROM retrain_jobs WHERE state = 'QUEUED') AS jobs_queued,
    (SELECT count(*) FROM retrain_jobs WHERE state = 'RUNNING') AS jobs_running,
    (SELECT count(*) FROM retrain_jobs WHERE state = 'SUCCEEDED') AS jobs_succeeded,
    (SELECT count(*) FROM retrain_jobs WHERE state = 'FAILED') AS jobs_failed,
    (SELECT count(*) FROM retrain_jobs WHERE promoted) AS promotions_total"""


async def service_counts(conn: asyncpg.Connection) -> dict[str, int]:
    """{figure name: count}, in a fixed order: alerts, actions, jobs by state, promotions."""
    row = await conn.fetchrow(_COUNTS)
    return dict(row.items())
