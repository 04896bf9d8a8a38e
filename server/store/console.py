"""Read-only queries for the web console (http/console/), each bounded and served by an index.

The console's pages use the general store functions where they fit (alerts.list_alerts,
queue.list_jobs, versions.list_versions, ...); these are the summaries only the console needs.
Every query is limited by a time window that an index ranges over, or by a LIMIT on an index
order, so a page costs the same with ten thousand alerts as with ten million: none reads all alerts.
The counts over days (alerts per hour, triggers per day) read the hourly roll-ups of
store/console_hourly.py, not the alerts.
`scopes` is a token's model globs (None: every model), as in the other stores.
"""

from __future__ import annotations

import datetime as dt
from typing import Sequence

import asyncpg

from . import console_hourly
from .models import like_patterns

# The alert types whose latest alert says whether a model drifts or underperforms, until the
# monitoring tables exist to say it from their windows.
HEALTH_ALERT_TYPES = ["drift", "performance"]
# How far back (in alerts of one model) the console looks for a model's drift or performance alerts.
RECENT_ALERTS = 50


async def alerts_per_hour(conn: asyncpg.Connection, since: dt.datetime,
                          scopes: Sequence[str] | None = None) -> list[asyncpg.Record]:
    """(hour, alert_type, n) for the UTC hours from the one holding `since` (at most
    console_hourly.HORIZON back): the hourly roll-up's rows, plus the alerts past its watermark
    (the last minute or so: a range of each month's primary key). Without scopes, one row per hour
    and type; with scopes, the per-model rows of the caller's models (see _scoped_rows)."""
    first = _hour(since)
    rolled = ("SELECT hour, alert_type, alerts FROM console_alerts_hourly WHERE hour >= $1" if scopes is None else
              _scoped_rows("SELECT hour, alert_type, alerts FROM console_model_alerts_hourly h", "h.hour >= $1"))
    return await conn.fetch(
        f"""SELECT hour, alert_type, sum(alerts)::bigint AS n FROM (
                {rolled}
                UNION ALL
                SELECT date_trunc('hour', observe_time, 'UTC'), alert_type, 1 FROM monitoring_alert_triggers
                 WHERE {_PAST_WATERMARK.format(id="id")} AND observe_time >= $1
                   AND ($2 OR model_id LIKE ANY($3::text[]))) counted
            GROUP BY 1, 2 ORDER BY 1, 2""",
        first, scopes is None, like_patterns(scopes), await console_hourly.watermark(conn),
    )


# The ids past the roll-up's watermark. The subquery reads it in the statement's own snapshot, so
# an alert is counted either in the roll-up or here, never both; $4 is the same watermark read just
# before (it only grows: never a wrong bound), which lets the planner see that few rows pass and
# range over the id index instead of scanning the months.
_PAST_WATERMARK = "{id} > $4 AND {id} > (SELECT last_alert_id FROM console_rollup_state)"


def _scoped_rows(select: str, condition: str) -> str:
    """The per-model roll-up rows of the models the scopes ($3) match: the models are matched in the
    small console_rollup_models, then each one's rows are one range of the (model_id, hour) key.
    OFFSET 0 keeps the planner from flattening the lateral subquery into a hash join over every
    model's rows of the window. The cost grows with the caller's models, not with all of them."""
    return f"""SELECT r.* FROM console_rollup_models m
                CROSS JOIN LATERAL ({select} WHERE h.model_id = m.model_id AND {condition} OFFSET 0) r
               WHERE m.model_id LIKE ANY($3::text[])"""


def _hour(t: dt.datetime) -> dt.datetime:
    return t.astimezone(dt.timezone.utc).replace(minute=0, second=0, microsecond=0)


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
    """(rule, day, n): how often each rule acted per UTC day, from the day holding `since` (at most
    console_hourly.HORIZON back): the hourly roll-up's rows plus the actions of the alerts past its
    watermark (a range of the alert_id index), as alerts_per_hour reads its alerts."""
    first = _hour(since).replace(hour=0)
    rolled = ("SELECT hour, rule, actions FROM console_actions_hourly WHERE hour >= $1 AND rule = ANY($5::text[])"
              if scopes is None else
              _scoped_rows("SELECT hour, rule, actions FROM console_model_actions_hourly h",
                           "h.hour >= $1 AND h.rule = ANY($5::text[])"))
    return await conn.fetch(
        f"""SELECT rule, date_trunc('day', hour, 'UTC') AS day, sum(actions)::bigint AS n FROM (
                {rolled}
                UNION ALL
                SELECT create_time, rule, 1 FROM closed_loop_actions
                 WHERE {_PAST_WATERMARK.format(id="alert_id")} AND create_time >= $1
                   AND rule = ANY($5::text[]) AND ($2 OR model_id LIKE ANY($3::text[]))) counted
            GROUP BY 1, 2 ORDER BY 1, 2""",
        first, scopes is None, like_patterns(scopes), await console_hourly.watermark(conn), list(rules),
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
