"""SQL for the daily feedback aggregates (migration 0009) and the roll-up's watermark.

The roll-up counts alerts in id order. An id is drawn when a decision transaction inserts its alert,
but transactions commit in any order, so a visible id does not prove that every smaller one is
visible too. `settle_point` and `settled` close that gap: every id up to the largest one seen at
instant T was drawn by a transaction that was already running at T; once no transaction started
before T is still running, those ids are all committed (or rolled back) for good.
"""

from __future__ import annotations

import datetime as dt
from typing import Iterable, Sequence

import asyncpg

from .models import like_patterns

# The decisions of closed_loop_actions and the aggregate column that counts each.
DECISION_COLUMNS = {
    "QUEUED": "queued", "COALESCED": "coalesced", "SKIPPED_COOLDOWN": "skipped_cooldown",
    "SKIPPED_BUDGET": "skipped_budget", "RECORDED": "recorded", "ROLLED_BACK": "rolled_back",
}
# Serialises roll-ups across replicas (pg_try_advisory_xact_lock); any constant shared by all.
ROLLUP_LOCK_KEY = 0x636C66646179  # "clfday"


async def settle_point(conn: asyncpg.Connection) -> tuple[int, dt.datetime]:
    """The largest alert id now visible (0: none) and the instant it was read."""
    row = await conn.fetchrow(
        "SELECT coalesce((SELECT max(id) FROM monitoring_alert_triggers), 0) AS hi, clock_timestamp() AS at")
    return row["hi"], row["at"]


async def settled(conn: asyncpg.Connection, at: dt.datetime) -> bool:
    """No other session of this database is still inside a transaction that began before `at`.
    Sessions of other roles show no xact_start to an unprivileged role; closedloop writes alerts
    as one role, so its own sessions are the ones that matter."""
    return await conn.fetchval(
        """SELECT NOT EXISTS (SELECT 1 FROM pg_stat_activity
                               WHERE datname = current_database() AND pid <> pg_backend_pid()
                                 AND backend_type = 'client backend' AND xact_start < $1)""", at)


async def lock_rollup(conn: asyncpg.Connection) -> bool:
    """Inside a transaction: True if this session may roll up now (no other replica is)."""
    return await conn.fetchval("SELECT pg_try_advisory_xact_lock($1)", ROLLUP_LOCK_KEY)


async def watermark(conn: asyncpg.Connection) -> int:
    return await conn.fetchval("SELECT last_alert_id FROM feedback_rollup_state")


async def set_watermark(conn: asyncpg.Connection, last_alert_id: int) -> None:
    await conn.execute("UPDATE feedback_rollup_state SET last_alert_id = $1, update_time = now()", last_alert_id)


async def alerts_after(conn: asyncpg.Connection, after_id: int, up_to_id: int, limit: int) -> list[asyncpg.Record]:
    """The next alerts to count, in id order, with what the roll-up counts of each (feedback/tally.py)
    and the create_time that bounds the search for their actions."""
    return await conn.fetch(
        """SELECT id, model_id, alert_type, rule_set_version, observe_time, create_time FROM monitoring_alert_triggers
             WHERE id > $1 AND id <= $2 ORDER BY id LIMIT $3""", after_id, up_to_id, limit)


async def add(conn: asyncpg.Connection, rules: Iterable[tuple], models: Iterable[tuple],
              spans: Iterable[tuple] = ()) -> None:
    """Add counts to the aggregates. `rules`: (model_id, day, rule, triggers, {decision: n}, quiet),
    also summed per day and rule; `models`: (model_id, day, triggers); `spans`: (day, first
    observe_time, last observe_time) of the alerts counted, which widen their day's span."""
    spans = list(spans)
    if spans:
        await conn.execute(
            """INSERT INTO feedback_day_spans (day, first_observe, last_observe)
               SELECT * FROM unnest($1::date[], $2::timestamptz[], $3::timestamptz[])
               ON CONFLICT (day) DO UPDATE SET
                   first_observe = least(feedback_day_spans.first_observe, EXCLUDED.first_observe),
                   last_observe = greatest(feedback_day_spans.last_observe, EXCLUDED.last_observe)""",
            [d[0] for d in spans], [d[1] for d in spans], [d[2] for d in spans])
    rules = list(rules)
    if rules:
        counts = [[r[3] for r in rules], *([r[4].get(d, 0) for r in rules] for d in DECISION_COLUMNS),
                  [r[5] for r in rules]]
        await _add_counts(conn, "feedback_daily", {"model_id": [r[0] for r in rules], "day": [r[1] for r in rules],
                                                   "rule": [r[2] for r in rules]}, counts)
        # The same counts summed over the models, per day and rule (migration 0014).
        totals: dict[tuple, list[int]] = {}
        for i, r in enumerate(rules):
            row = totals.setdefault((r[1], r[2]), [0] * len(counts))
            for c, column in enumerate(counts):
                row[c] += column[i]
        await _add_counts(conn, "feedback_daily_rules", {"day": [k[0] for k in totals], "rule": [k[1] for k in totals]},
                          [list(column) for column in zip(*totals.values())])
    models = list(models)
    if models:
        await conn.execute(
            """INSERT INTO feedback_daily_models (model_id, day, triggers)
               SELECT * FROM unnest($1::text[], $2::date[], $3::bigint[])
               ON CONFLICT (model_id, day) DO UPDATE SET triggers = feedback_daily_models.triggers + EXCLUDED.triggers""",
            [m[0] for m in models], [m[1] for m in models], [m[2] for m in models])


_COUNTED = ["triggers", *DECISION_COLUMNS.values(), "quiet"]
_KEY_TYPES = {"model_id": "text", "day": "date", "rule": "text"}


async def _add_counts(conn: asyncpg.Connection, table: str, keys: dict[str, list], counts: list[list[int]]) -> None:
    """Add `counts` (one list per column of _COUNTED, one value per row) to `table`'s rows at `keys`
    (column -> values), creating the rows that do not exist yet: one statement."""
    columns = [*keys, *_COUNTED]
    types = [_KEY_TYPES[k] for k in keys] + ["bigint"] * len(_COUNTED)
    await conn.execute(
        f"""INSERT INTO {table} ({", ".join(columns)})
            SELECT * FROM unnest({", ".join(f"${i + 1}::{t}[]" for i, t in enumerate(types))})
            ON CONFLICT ({", ".join(keys)}) DO UPDATE SET
            {", ".join(f"{c} = {table}.{c} + EXCLUDED.{c}" for c in _COUNTED)}""",
        *keys.values(), *counts)


async def day_spans(conn: asyncpg.Connection,
                    days: Sequence[dt.date]) -> dict[dt.date, tuple[dt.datetime, dt.datetime]]:
    """Per day of `days` that has counted alerts, the (first, last) observe_time of those alerts (or
    a wider span: migration 0013)."""
    rows = await conn.fetch(
        "SELECT day, first_observe, last_observe FROM feedback_day_spans WHERE day = ANY($1::date[])", list(days))
    return {r["day"]: (r["first_observe"], r["last_observe"]) for r in rows}


async def rule_sums(conn: asyncpg.Connection, first_day: dt.date, end_day: dt.date, model_id: str | None,
                    rule: str | None, scopes: Sequence[str] | None) -> list[asyncpg.Record]:
    """Per rule and model, the counts of the days in [first_day, end_day).

    Summed as int4: a day's count of one model and rule stays far below 2^31, and PostgreSQL sums
    int4 in a bigint where it sums bigint in a numeric (a 30-day report over every model sums
    870,000 rows at ten million alerts: 810 -> 560 ms)."""
    return await conn.fetch(
        f"""SELECT rule, model_id, {", ".join(f"sum({c}::int4) AS {c}" for c in _COUNTED)}
              FROM feedback_daily
             WHERE day >= $1 AND day < $2 AND ($3::text IS NULL OR model_id = $3)
               AND ($4::text IS NULL OR rule = $4) AND ($5::text[] IS NULL OR model_id LIKE ANY($5::text[]))
             GROUP BY rule, model_id""",
        first_day, end_day, model_id, rule, like_patterns(scopes))


async def rule_totals(conn: asyncpg.Connection, first_day: dt.date, end_day: dt.date,
                      rule: str | None) -> list[asyncpg.Record]:
    """Per rule, its counts over every model on the days in [first_day, end_day) (migration 0014)."""
    return await conn.fetch(
        f"""SELECT rule, {", ".join(f"sum({c})::bigint AS {c}" for c in _COUNTED)}
              FROM feedback_daily_rules
             WHERE day >= $1 AND day < $2 AND ($3::text IS NULL OR rule = $3)
             GROUP BY rule""",
        first_day, end_day, rule)


async def acted_sums(conn: asyncpg.Connection, first_day: dt.date, end_day: dt.date,
                     rule: str | None) -> list[asyncpg.Record]:
    """Per model, the triggers and decisions of the rules (or of `rule`) that acted on its alerts on
    the days in [first_day, end_day): only the rows where a rule acted (`triggers > 0`, their own
    partial index), not the quiet checks' rows. Summed as int4, as rule_sums explains."""
    columns = ["triggers", *DECISION_COLUMNS.values()]
    return await conn.fetch(
        f"""SELECT model_id, {", ".join(f"sum({c}::int4) AS {c}" for c in columns)}
              FROM feedback_daily
             WHERE day >= $1 AND day < $2 AND triggers > 0 AND ($3::text IS NULL OR rule = $3)
             GROUP BY model_id""",
        first_day, end_day, rule)


async def model_triggers(conn: asyncpg.Connection, first_day: dt.date, end_day: dt.date, model_id: str | None,
                         scopes: Sequence[str] | None) -> dict[str, int]:
    """Per model, its alerts that drew any action on the days in [first_day, end_day)."""
    rows = await conn.fetch(
        """SELECT model_id, sum(triggers::int4) AS triggers FROM feedback_daily_models
            WHERE day >= $1 AND day < $2 AND ($3::text IS NULL OR model_id = $3)
              AND ($4::text[] IS NULL OR model_id LIKE ANY($4::text[]))
            GROUP BY model_id""",
        first_day, end_day, model_id, like_patterns(scopes))
    return {r["model_id"]: r["triggers"] for r in rows}


async def uncounted_alerts(conn: asyncpg.Connection, start: dt.datetime, end: dt.datetime,
                           days_start: dt.datetime, days_end: dt.datetime, after_id: int,
                           model_id: str | None, scopes: Sequence[str] | None) -> list[asyncpg.Record]:
    """The window's alerts the aggregates of [days_start, days_end) do not hold: those outside these
    days, and those inside them that the roll-up has not reached (id > after_id; the days may reach
    past the window: report.counted_days). Grouped by what the
    report counts of an alert (feedback/tally.py): model_id, alert_type, rule_set_version and its
    actions (`rules` and `decisions`, in action order; NULL: none), with `n` the alerts in each group.

    The actions are found by the alerts' ids in the action months from their earliest create_time on
    (an action is written in its alert's decision transaction or later, never before it), in the same
    statement: a day of alerts at ten million is ~55,000 ids, and only a few columns of each."""
    return await conn.fetch(
        """WITH uncounted AS MATERIALIZED (
                SELECT id, model_id, alert_type, rule_set_version, create_time FROM monitoring_alert_triggers
                 WHERE observe_time >= $1 AND observe_time < $2 AND NOT (observe_time >= $3 AND observe_time < $4)
                   AND ($6::text IS NULL OR model_id = $6) AND ($7::text[] IS NULL OR model_id LIKE ANY($7::text[]))
                UNION ALL
                SELECT id, model_id, alert_type, rule_set_version, create_time FROM monitoring_alert_triggers
                 WHERE id > $5 AND observe_time >= $3 AND observe_time < $4 AND observe_time >= $1 AND observe_time < $2
                   AND ($6::text IS NULL OR model_id = $6) AND ($7::text[] IS NULL OR model_id LIKE ANY($7::text[]))),
           acted AS (
                SELECT alert_id, array_agg(rule ORDER BY id) AS rules, array_agg(decision ORDER BY id) AS decisions
                  FROM closed_loop_actions
                 WHERE alert_id = ANY((SELECT array_agg(id) FROM uncounted)::bigint[])
                   AND create_time >= (SELECT min(create_time) FROM uncounted)
                 GROUP BY alert_id)
           SELECT u.model_id, u.alert_type, u.rule_set_version, c.rules, c.decisions, count(*) AS n
             FROM uncounted u LEFT JOIN acted c ON c.alert_id = u.id
            GROUP BY u.model_id, u.alert_type, u.rule_set_version, c.rules, c.decisions""",
        start, end, days_start, days_end, after_id, model_id, like_patterns(scopes))
