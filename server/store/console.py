"""Read-only queries for the web console (http/console/), each bounded and served by an index.

The console's pages use the general store functions where they fit (alerts.list_alerts,
queue.list_jobs, versions.list_versions, ...); these are the summaries only the console needs.
Every query is limited by a time window that an index ranges over, or by a LIMIT on an index
order, so a page costs the same with ten thousand alerts as with ten million: none reads all alerts.
`scopes` is a token's model globs (None: every model), as in the other stores.
"""

from __future__ import annotations

import datetime as dt
from typing import Sequence

import asyncpg

from .models import like_patterns

# The alert types whose latest alert says whether a model drifts or underperforms, until the
# monitoring tables exist to say it from their windows.
HEALTH_ALERT_TYPES = ["drift", "performance"]
# How far back (in alerts of one model) the console looks for a model's drift or performance alerts.
RECENT_ALERTS = 50


async def alerts_per_hour(conn: asyncpg.Connection, since: dt.datetime,
                          scopes: Sequence[str] | None = None) -> list[asyncpg.Record]:
    """(hour, alert_type, n) for alerts observed since `since`.

    The alert types are found by a loose index scan of (alert_type, observe_time) (one probe per
    type), then each type's window is counted by a range of that same index, which holds both
    columns, so PostgreSQL can answer from the index alone instead of reading every row of the window."""
    return await conn.fetch(
        """WITH RECURSIVE types AS (
               (SELECT alert_type FROM monitoring_alert_triggers ORDER BY alert_type LIMIT 1)
               UNION ALL
               SELECT (SELECT a.alert_type FROM monitoring_alert_triggers a WHERE a.alert_type > types.alert_type
                        ORDER BY a.alert_type LIMIT 1)
                 FROM types WHERE types.alert_type IS NOT NULL)
           SELECT c.hour, t.alert_type, c.n FROM types t
             CROSS JOIN LATERAL (
                  SELECT date_trunc('hour', a.observe_time) AS hour, count(*) AS n FROM monitoring_alert_triggers a
                   WHERE a.alert_type = t.alert_type AND a.observe_time >= $1
                     AND ($2::text[] IS NULL OR a.model_id LIKE ANY($2::text[]))
                   GROUP BY 1) c
            WHERE t.alert_type IS NOT NULL
            ORDER BY 1, 2""",
        since, like_patterns(scopes),
    )


async def recent_decisions(conn: asyncpg.Connection, limit: int,
                           scopes: Sequence[str] | None = None) -> dict[str, int]:
    """{decision: count} over the newest `limit` actions (the primary key, newest first)."""
    rows = await conn.fetch(
        """SELECT decision, count(*) AS n FROM (
               SELECT decision FROM closed_loop_actions
                WHERE ($2::text[] IS NULL OR model_id LIKE ANY($2::text[]))
                ORDER BY id DESC LIMIT $1) newest
            GROUP BY decision ORDER BY decision""",
        limit, like_patterns(scopes),
    )
    return {r["decision"]: r["n"] for r in rows}


async def job_counts(conn: asyncpg.Connection, failed_since: dt.datetime,
                     scopes: Sequence[str] | None = None) -> dict[str, int]:
    """Jobs queued and running now, and failed since `failed_since` (the (state, id) index)."""
    row = await conn.fetchrow(
        """SELECT count(*) FILTER (WHERE state = 'QUEUED') AS queued,
                  count(*) FILTER (WHERE state = 'RUNNING') AS running,
                  count(*) FILTER (WHERE state = 'FAILED' AND end_time >= $1) AS failed
             FROM retrain_jobs
            WHERE state IN ('QUEUED', 'RUNNING', 'FAILED')
              AND (state <> 'FAILED' OR end_time >= $1)
              AND ($2::text[] IS NULL OR model_id LIKE ANY($2::text[]))""",
        failed_since, like_patterns(scopes),
    )
    return dict(row.items())


async def models_with_health(conn: asyncpg.Connection, *, after: str | None, limit: int,
                             scopes: Sequence[str] | None = None) -> list[asyncpg.Record]:
    """A page of models (by model_id), each with its latest drift or performance alert among its
    newest RECENT_ALERTS alerts and whether a rule acted on it. The look-back is bounded so a model
    whose alerts are all of other types costs RECENT_ALERTS index entries, not all its history."""
    return await conn.fetch(
        """SELECT m.model_id, m.current_version, m.metric, m.enabled,
                  a.id AS alert_id, a.alert_type, a.severity, a.metrics, a.observe_time,
                  EXISTS (SELECT 1 FROM closed_loop_actions c WHERE c.alert_id = a.id) AS acted
             FROM monitoring_retraining_integration m
             LEFT JOIN LATERAL (
                  SELECT * FROM (SELECT id, alert_type, severity, metrics, observe_time FROM monitoring_alert_triggers t
                                  WHERE t.model_id = m.model_id
                                  ORDER BY observe_time DESC, id DESC LIMIT $5) recent
                   WHERE alert_type = ANY($4::text[])
                   ORDER BY observe_time DESC, id DESC LIMIT 1) a ON true
            WHERE ($1::text IS NULL OR m.model_id > $1) AND ($3::text[] IS NULL OR m.model_id LIKE ANY($3::text[]))
            ORDER BY m.model_id LIMIT $2""",
        after, limit, like_patterns(scopes), HEALTH_ALERT_TYPES, RECENT_ALERTS,
    )


async def recent_promotions(conn: asyncpg.Connection, *, model_id: str | None, limit: int,
                            scopes: Sequence[str] | None = None) -> list[asyncpg.Record]:
    """Promotions and rollbacks, newest first (the primary key, or (model_id, id) for one model)."""
    return await conn.fetch(
        """SELECT id, model_id, from_version, to_version, kind, job_id, reason, create_time
             FROM model_promotions
            WHERE ($1::text IS NULL OR model_id = $1) AND ($3::text[] IS NULL OR model_id LIKE ANY($3::text[]))
            ORDER BY id DESC LIMIT $2""",
        model_id, limit, like_patterns(scopes),
    )


async def alerts_of_type(conn: asyncpg.Connection, model_id: str, alert_type: str,
                         limit: int) -> list[asyncpg.Record]:
    """A model's newest alerts of one type (id, observe_time, metrics), looked for among its newest
    RECENT_ALERTS * 10 alerts (a bounded range of the (model_id, observe_time) index)."""
    return await conn.fetch(
        """SELECT id, observe_time, metrics FROM (
               SELECT id, alert_type, observe_time, metrics FROM monitoring_alert_triggers
                WHERE model_id = $1 ORDER BY observe_time DESC, id DESC LIMIT $4) recent
            WHERE alert_type = $2
            ORDER BY observe_time DESC, id DESC LIMIT $3""",
        model_id, alert_type, limit, RECENT_ALERTS * 10,
    )


async def jobs_by_ids(conn: asyncpg.Connection, job_ids: Sequence[int]) -> dict[int, asyncpg.Record]:
    rows = await conn.fetch("SELECT * FROM retrain_jobs WHERE id = ANY($1::bigint[])", list(job_ids))
    return {r["id"]: r for r in rows}


async def rule_set_versions(conn: asyncpg.Connection, *, before: int | None, limit: int) -> list[asyncpg.Record]:
    """A page of stored rule sets, newest first, without their source (the primary key)."""
    return await conn.fetch(
        """SELECT version, filename, sha256, rule_names, active, create_time FROM automated_response_rules
            WHERE ($1::bigint IS NULL OR version < $1) ORDER BY version DESC LIMIT $2""",
        before, limit,
    )


async def previous_rule_set_version(conn: asyncpg.Connection, version: int) -> int | None:
    return await conn.fetchval(
        "SELECT max(version) FROM automated_response_rules WHERE version < $1", version)


async def rule_triggers_per_day(conn: asyncpg.Connection, rules: Sequence[str], since: dt.datetime,
                                scopes: Sequence[str] | None = None) -> list[asyncpg.Record]:
    """(rule, day, n): how often each rule acted per day since `since` (the (rule, create_time) index)."""
    return await conn.fetch(
        """SELECT rule, date_trunc('day', create_time) AS day, count(*) AS n FROM closed_loop_actions
            WHERE rule = ANY($1::text[]) AND create_time >= $2
              AND ($3::text[] IS NULL OR model_id LIKE ANY($3::text[]))
            GROUP BY 1, 2 ORDER BY 1, 2""",
        list(rules), since, like_patterns(scopes),
    )


async def time_of_nth_newest_alert(conn: asyncpg.Connection, n: int,
                                   scopes: Sequence[str] | None = None) -> dt.datetime | None:
    """The observe_time of the n-th newest alert (None when there are fewer): where a window holding
    at most n alerts starts. Walks n entries of the observe_time index."""
    return await conn.fetchval(
        """SELECT observe_time FROM monitoring_alert_triggers
            WHERE ($2::text[] IS NULL OR model_id LIKE ANY($2::text[]))
            ORDER BY observe_time DESC, id DESC OFFSET $1 LIMIT 1""",
        n, like_patterns(scopes),
    )
