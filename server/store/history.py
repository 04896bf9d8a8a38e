"""Read-only history queries used by backtests and the feedback report."""

from __future__ import annotations

import datetime as dt
import re
from typing import Sequence

import asyncpg

from .models import like_patterns


async def actions_for_alerts(conn: asyncpg.Connection, alerts: Sequence[asyncpg.Record]) -> list[asyncpg.Record]:
    """The actions of `alerts` (rows with id and create_time), in action order. An action is written in
    its alert's insert transaction or later, never before it, so only the action months from the
    alerts' earliest create_time on are read, not every month for every id."""
    if not alerts:
        return []
    return await conn.fetch(
        """SELECT id, alert_id, model_id, rule, kind, mode, priority, decision, job_id, create_time
             FROM closed_loop_actions WHERE alert_id = ANY($1::bigint[]) AND create_time >= $2 ORDER BY id""",
        [a["id"] for a in alerts], min(a["create_time"] for a in alerts),
    )


async def backtest_page(conn: asyncpg.Connection, start: dt.datetime, end: dt.datetime,
                        after: tuple[dt.datetime, int], limit: int) -> list[asyncpg.Record]:
    """One keyset page of the alerts observed in [start, end) after `after` = (observe_time, id),
    oldest first, with what a backtest replays of each and the decisions stored about it.

    Only the columns a replay reads; metrics and labels as jsonb text, so the caller decodes them
    its own way; observe_time and create_time as ISO 8601 text (JSON's rendering: the same whatever
    the session's DateStyle), which datetime.fromisoformat parses in half the time asyncpg takes to
    build a datetime from the binary value, and only for the rows the caller needs. `actions`: the
    alert's (model_id, rule, decision, mode, priority, job_id) in action order, or None.

    One statement per page. The actions are read only in the months from the page's first
    create_time on (an action is written in its alert's insert transaction or later, never before
    it). Alert ids are handed out in arrival order, so a page of alerts in observe_time order
    usually holds a dense run of ids: then the actions are one range scan of the alert_id index
    over the page's ids (the few actions of alerts between them on other pages drop out in the
    join), instead of one index descent per alert id (10,000 per page, three buffers each). A page
    whose ids are spread out (late alerts, backfills) is looked up id by id, as before: the gating
    conditions run one branch or the other, never both.
    """
    return await conn.fetch(
        """WITH page AS MATERIALIZED (
                SELECT id, model_id, alert_type, severity, metrics::text AS metrics, labels::text AS labels,
                       source, observe_time, create_time, rule_set_version
                  FROM monitoring_alert_triggers
                 WHERE observe_time >= $1 AND observe_time < $2 AND (observe_time, id) > ($3, $4::bigint)
                 ORDER BY observe_time, id
                 LIMIT $5),
           bounds AS MATERIALIZED (
                SELECT min(id) AS low, max(id) AS high, min(create_time) AS since, array_agg(id) AS ids,
                       max(id) - min(id) < 4 * count(*) AS dense
                  FROM page),
           acted AS (
                SELECT alert_id, array_agg((model_id, rule, decision, mode, priority, job_id) ORDER BY id) AS actions
                  FROM (SELECT id, alert_id, model_id, rule, decision, mode, priority, job_id
                          FROM closed_loop_actions
                         WHERE (SELECT dense FROM bounds)
                           AND alert_id BETWEEN (SELECT low FROM bounds) AND (SELECT high FROM bounds)
                           AND create_time >= (SELECT since FROM bounds)
                        UNION ALL
                        SELECT id, alert_id, model_id, rule, decision, mode, priority, job_id
                          FROM closed_loop_actions
                         WHERE NOT (SELECT dense FROM bounds)
                           AND alert_id = ANY((SELECT ids FROM bounds)::bigint[])
                           AND create_time >= (SELECT since FROM bounds)) a
                 GROUP BY alert_id)
           SELECT p.id, p.model_id, p.alert_type, p.severity, p.metrics, p.labels, p.source,
                  to_json(p.observe_time) #>> '{}' AS observe_time, to_json(p.create_time) #>> '{}' AS create_time,
                  p.rule_set_version, c.actions
             FROM page p LEFT JOIN acted c ON c.alert_id = p.id
            ORDER BY p.observe_time, p.id""",
        start, end, after[0], after[1], limit)


async def registry(conn: asyncpg.Connection) -> list[asyncpg.Record]:
    return await conn.fetch(
        """SELECT model_id, enabled, cooldown_override_s, max_retrains_per_day, current_version,
                  current_version_time, metric, promotion_margin
             FROM monitoring_retraining_integration""")


async def typical_job_seconds(conn: asyncpg.Connection) -> dict[str, float]:
    """Median create→end time of finished jobs per model: how long a simulated job stays active.
    Grouped by the ids' bytes (COLLATE "C": the same groups, a sort without the locale's rules;
    100,000 jobs: ~130 -> ~95 ms, before every backtest's first page)."""
    rows = await conn.fetch(
        """SELECT model_id COLLATE "C" AS model_id, percentile_cont(0.5) WITHIN GROUP
                  (ORDER BY extract(epoch FROM end_time - create_time)) AS seconds
             FROM retrain_jobs WHERE end_time IS NOT NULL GROUP BY 1""")
    return {r["model_id"]: float(r["seconds"]) for r in rows if r["seconds"] is not None}


async def promotions(conn: asyncpg.Connection) -> list[asyncpg.Record]:
    return await conn.fetch(
        "SELECT model_id, to_version, create_time FROM model_promotions ORDER BY model_id, create_time")


async def rule_set_sources(conn: asyncpg.Connection, versions: Sequence[int]) -> dict[int, asyncpg.Record]:
    rows = await conn.fetch(
        "SELECT version, source, filename FROM automated_response_rules WHERE version = ANY($1::bigint[])",
        list(versions))
    return {r["version"]: r for r in rows}


async def retrain_actions(conn: asyncpg.Connection, start: dt.datetime, end: dt.datetime,
                          model_id: str | None, rule: str | None,
                          scopes: Sequence[str] | None = None) -> list[asyncpg.Record]:
    """The QUEUED actions (each started a job) on the alerts observed in [start, end), with the
    alert's observe_time and metrics, in action order: one row per retrain, not per alert."""
    return await conn.fetch(
        """SELECT c.id, c.alert_id, c.model_id, c.rule, c.kind, c.decision, c.job_id, a.observe_time,
                  a.metrics AS alert_metrics
             FROM closed_loop_actions c
             JOIN monitoring_alert_triggers a ON a.id = c.alert_id
            WHERE c.decision = 'QUEUED' AND c.job_id IS NOT NULL
              AND a.observe_time >= $1 AND a.observe_time < $2
              -- Lets the planner skip older action months. Decisions are written with their alert,
              -- whose observe_time is at most 300 s ahead of the clock (api/validation.py): an action
              -- is never created before its alert's observe_time minus that; an hour leaves room for
              -- clock differences between replicas and the database.
              AND c.create_time >= $1 - interval '1 hour'
              AND ($3::text IS NULL OR c.model_id = $3) AND ($4::text IS NULL OR c.rule = $4)
              AND ($5::text[] IS NULL OR c.model_id LIKE ANY($5::text[]))
            ORDER BY c.id""",
        start, end, model_id, rule, like_patterns(scopes))


async def manual_jobs(conn: asyncpg.Connection, start: dt.datetime, end: dt.datetime, model_id: str | None,
                      scopes: Sequence[str] | None = None) -> list[int]:
    """Manual retrains that ended in [start, end) (by their feedback row)."""
    rows = await conn.fetch(
        """SELECT DISTINCT job_id FROM feedback_loop_metrics
            WHERE manual AND time >= $1 AND time < $2 AND ($3::text IS NULL OR model_id = $3)
              AND ($4::text[] IS NULL OR model_id LIKE ANY($4::text[]))""",
        start, end, model_id, like_patterns(scopes))
    return [r["job_id"] for r in rows]


async def outcomes(conn: asyncpg.Connection, job_ids: Sequence[int], start: dt.datetime,
                   until: dt.datetime) -> dict[int, asyncpg.Record]:
    """Each job's feedback row (its latest, if several) written in [start, until): the columns the
    report's definitions read (definitions.py), not all of them (10,000 rows at ten million alerts)."""
    rows = await conn.fetch(
        """SELECT DISTINCT ON (job_id) job_id, time, outcome, promoted, improvement, promotion_margin,
                  alert_to_promotion_s
             FROM feedback_loop_metrics
            WHERE job_id = ANY($1::bigint[]) AND time >= $2 AND time < $3
            ORDER BY job_id, time DESC""",
        list(job_ids), start, until)
    return {r["job_id"]: r for r in rows}


async def promoted_retrains(conn: asyncpg.Connection, start: dt.datetime, until: dt.datetime,
                            model_id: str | None, scopes: Sequence[str] | None = None) -> list[asyncpg.Record]:
    """Feedback rows of promoted jobs (manual ones too) written in [start, until]: their model, time
    and what definitions.beat_champion reads."""
    return await conn.fetch(
        """SELECT model_id, time, promoted, improvement, promotion_margin FROM feedback_loop_metrics
            WHERE promoted AND time >= $1 AND time <= $2 AND ($3::text IS NULL OR model_id = $3)
              AND ($4::text[] IS NULL OR model_id LIKE ANY($4::text[]))""",
        start, until, model_id, like_patterns(scopes))


async def alerts_in_ranges(conn: asyncpg.Connection, models: Sequence[str], lows: Sequence[dt.datetime],
                           highs: Sequence[dt.datetime], start: dt.datetime, end: dt.datetime,
                           metrics: Sequence[str]) -> list[asyncpg.Record]:
    """The alerts of models[i] observed in [lows[i], highs[i]] and in [start, end), in no particular
    order: rule_set_version, alert_type, model_id, `values` (the value of each of `metrics`, NULL
    where the alert has none) and `rules`, the rules that acted on it (in action order; NULL: none).
    Only what the report's false-negative check reads: at ten million alerts these are ~70,000 rows,
    and an array of floats is decoded much faster than a json document (a timestamp, too, costs
    more to decode than the rest of the row).
    The ranges of one model must not overlap (then each alert comes once, and no sort is needed to
    drop repeats)."""
    return await conn.fetch(
        """WITH near AS MATERIALIZED (
                SELECT a.id, a.model_id, a.alert_type, a.rule_set_version, a.observe_time, a.create_time,
                       ARRAY(SELECT (a.metrics->>k)::float8 FROM unnest($6::text[]) AS k) AS values
                  FROM unnest($1::text[], $2::timestamptz[], $3::timestamptz[]) AS h(model_id, low, high)
                  -- One (model_id, observe_time) index range per range, in the months of [start, end) only:
                  -- OFFSET 0 keeps the planner from flattening this into a hash join over every month's
                  -- alerts (10 s at ten million alerts).
                  CROSS JOIN LATERAL (
                       SELECT * FROM monitoring_alert_triggers a
                        WHERE a.model_id = h.model_id AND a.observe_time >= greatest(h.low, $4)
                          AND a.observe_time <= h.high AND a.observe_time >= $4 AND a.observe_time < $5
                       OFFSET 0) a),
           -- Their actions by id, only in the action months from the alerts' create_time on (an
           -- action is written in its alert's decision transaction or later, never before it): the
           -- alerts created in the newest (UTC) month probe that month alone, the others every month
           -- from their earliest (at ten million alerts 140,000 -> 80,000 probes, 473,000 -> 286,000 buffers).
           newest AS (SELECT date_trunc('month', max(create_time) AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' AS month
                        FROM near),
           acted AS (
                SELECT alert_id, array_agg(rule ORDER BY id) AS rules
                  FROM (SELECT alert_id, id, rule FROM closed_loop_actions
                         WHERE alert_id = ANY((SELECT array_agg(id) FROM near
                                                WHERE create_time < (SELECT month FROM newest))::bigint[])
                           AND create_time >= (SELECT min(create_time) FROM near)
                        UNION ALL
                        SELECT alert_id, id, rule FROM closed_loop_actions
                         WHERE alert_id = ANY((SELECT array_agg(id) FROM near
                                                WHERE create_time >= (SELECT month FROM newest))::bigint[])
                           AND create_time >= (SELECT month FROM newest)) c
                 GROUP BY alert_id)
           SELECT n.rule_set_version, n.alert_type, n.model_id, n.values, c.rules
             FROM near n LEFT JOIN acted c ON c.alert_id = n.id""",
        list(models), list(lows), list(highs), start, end, list(metrics))


async def performance_neighbours(conn: asyncpg.Connection, models: Sequence[str], before: Sequence[dt.datetime],
                                 after: Sequence[dt.datetime], start: dt.datetime,
                                 end: dt.datetime) -> list[tuple]:
    """For each i: models[i]'s last performance alert observed in [start, before[i]] and its first one
    observed in (after[i], end), as (alert or None, alert or None). Order ties by id, as in the alert
    table. Of each alert only what a verdict reads (definitions.performance_value): its severity and
    its performance_drop metric, if it has one (not every metric, and no timestamp: 43,000 alerts at
    ten million, and a timestamp costs more to decode than the rest of the row).
    Each probe reads one row of the performance alerts' own index (migration 0012)."""
    rows = await conn.fetch(
        """SELECT (b.metrics->>'performance_drop')::float8 AS b_drop, b.severity AS b_severity,
                  (n.metrics->>'performance_drop')::float8 AS n_drop, n.severity AS n_severity
             FROM unnest($1::text[], $2::timestamptz[], $3::timestamptz[]) WITH ORDINALITY
                  AS h(model_id, before, after, i)
             LEFT JOIN LATERAL (
                  SELECT metrics, severity, observe_time FROM monitoring_alert_triggers
                   WHERE model_id = h.model_id AND alert_type = 'performance'
                     AND observe_time >= $4 AND observe_time <= h.before AND observe_time < $5
                   ORDER BY observe_time DESC, id DESC LIMIT 1) b ON true
             LEFT JOIN LATERAL (
                  SELECT metrics, severity, observe_time FROM monitoring_alert_triggers
                   WHERE model_id = h.model_id AND alert_type = 'performance'
                     AND observe_time > h.after AND observe_time >= $4 AND observe_time < $5
                   ORDER BY observe_time, id LIMIT 1) n ON true
            ORDER BY h.i""",
        list(models), list(before), list(after), start, end)

    def alert(drop, severity):
        if severity is None:  # every alert has a severity: none means no such alert
            return None
        return {"metrics": {} if drop is None else {"performance_drop": drop}, "severity": severity}
    return [(alert(b_drop, b_severity), alert(n_drop, n_severity)) for b_drop, b_severity, n_drop, n_severity in rows]


async def report_settings(conn: asyncpg.Connection, work_mem: str) -> None:
    """Inside a transaction, until it ends: its sorts and hashes may use `work_mem`, and no statement
    starts parallel workers (the report already reads on up to three connections at once)."""
    await conn.execute("SELECT set_config('work_mem', $1, true), set_config('max_parallel_workers_per_gather', '0', true)",
                       work_mem)


async def export_snapshot(conn: asyncpg.Connection) -> str:
    """Inside a REPEATABLE READ transaction: an id other sessions can read this transaction's snapshot
    by (valid while it stays open), so one report can read with several connections at once."""
    return await conn.fetchval("SELECT pg_export_snapshot()")


async def import_snapshot(conn: asyncpg.Connection, snapshot: str) -> None:
    """First statement of a REPEATABLE READ transaction: see exactly what `export_snapshot`'s did."""
    if not re.fullmatch(r"[0-9A-F-]+", snapshot):
        raise ValueError(f"not a snapshot id: {snapshot!r}")
    await conn.execute(f"SET TRANSACTION SNAPSHOT '{snapshot}'")  # takes no parameters
