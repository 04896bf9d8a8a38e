"""Database truths for the HTTP side's /metrics scrape (http/metrics_page.py), cheap at any table size.

What every replica shares lives in the database: the job queue's depth and its oldest wait. Both
read only the active jobs through the partial indexes on retrain_jobs (WHERE state = 'QUEUED' /
'RUNNING'), so their cost follows the queue's length, not the history's. Table sizes come from the
planner's estimate in pg_class (kept fresh by autovacuum), never from count(*): a scrape never reads
the alert or action tables (tests/acceptance/test_http.py EXPLAINs these statements).
Counts of what happened (alerts ingested, decisions, promotions) are process counters (metrics.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

# Tables whose estimated size /metrics reports.
SIZED_TABLES = ("monitoring_alert_triggers", "closed_loop_actions", "retrain_jobs", "feedback_loop_metrics")

_QUEUE = """SELECT
    (SELECT count(*) FROM retrain_jobs WHERE state = 'QUEUED') AS queued,
    (SELECT count(*) FROM retrain_jobs WHERE state = 'RUNNING') AS running,
    (SELECT extract(epoch FROM now() - min(run_after))::float8 FROM retrain_jobs
      WHERE state = 'QUEUED' AND run_after <= now()) AS oldest_runnable_s"""

_SIZES = """SELECT c.relname, greatest(c.reltuples, 0)::float8 AS rows
              FROM pg_class c
             WHERE c.relname = ANY($1::text[]) AND c.relkind IN ('r', 'p')
               AND c.relnamespace = to_regnamespace(current_schema())"""


@dataclass(frozen=True)
class ScrapeFigures:
    jobs_queued: int
    jobs_running: int
    oldest_runnable_s: float  # 0 when nothing runnable waits
    table_rows: dict[str, float]  # planner estimates


async def scrape_figures(conn: asyncpg.Connection) -> ScrapeFigures:
    """Two statements, neither of which reads the alert or action tables."""
    queue = await conn.fetchrow(_QUEUE)
    sizes = await conn.fetch(_SIZES, list(SIZED_TABLES))
    return ScrapeFigures(jobs_queued=queue["queued"], jobs_running=queue["running"],
                         oldest_runnable_s=queue["oldest_runnable_s"] or 0.0,
                         table_rows={r["relname"]: r["rows"] for r in sizes})
