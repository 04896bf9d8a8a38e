"""SQL for monitoring_alert_triggers and closed_loop_actions (alerts and the decisions about them).

Both tables are partitioned by month (migrations/0008_partitioned_alerts.sql): alerts by observe_time,
actions by create_time; request_id uniqueness lives in alert_request_ids. A look-up by id alone probes
each month's primary key index (a handful); everything with a time range reads only its months.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Sequence

import asyncpg

from .models import like_patterns

ALERT_COLUMNS = """id, request_id, request_hash, model_id, alert_type, severity, metrics, labels, source,
                   observe_time, create_time, update_time, state, rule_set_version"""
# The alert states (the CHECK of the state column), each with its partial index for ListAlerts.
ALERT_STATES = frozenset({"OPEN", "ACTIONED", "SUPPRESSED", "ACKNOWLEDGED", "RESOLVED"})
# Rows per statement when a whole time window is read (alerts_in_window).
WINDOW_PAGE = 20_000
ACTION_COLUMNS = """id, alert_id, model_id, rule, rule_set_version, kind, mode, priority, decision, reason,
                    job_id, cooldown_until, create_time"""


@dataclass(frozen=True, slots=True)
class NewAlert:
    """An alert ready to insert (validated; observe_time resolved)."""

    request_id: str | None
    request_hash: bytes
    model_id: str
    alert_type: str
    severity: int
    metrics: dict[str, float]
    labels: dict[str, str]
    source: str
    observe_time: dt.datetime


@dataclass(frozen=True, slots=True)
class NewAction:
    alert_id: int
    model_id: str
    rule: str
    rule_set_version: int
    kind: str
    mode: str | None
    priority: int | None
    decision: str
    reason: str
    job_id: int | None
    cooldown_until: dt.datetime | None
    starts_job: bool = False  # the action that started job_id: the job links to it (trigger_action_id)


# The alert rows of a batch, as an `input` CTE and the `claimed` request_ids (see insert_alerts).
# $1 is the batch as one JSON array of rows (_alert_rows).
_ALERTS_INPUT = """
           input AS (
               SELECT nextval('monitoring_alert_triggers_ids') AS id, e.v->>0 AS r, decode(e.v->>1, 'hex') AS h,
                      e.v->>2 AS m, e.v->>3 AS t, (e.v->>4)::smallint AS s, e.v->5 AS mt, e.v->6 AS lb,
                      e.v->>7 AS src, (e.v->>8)::timestamptz AS ot, e.v->>9 AS st, e.ord
                 FROM jsonb_array_elements($1::jsonb) WITH ORDINALITY AS e(v, ord)
                ORDER BY e.ord),
           claimed AS (
               INSERT INTO alert_request_ids (request_id, alert_id, observe_time)
               SELECT r, id, ot FROM input WHERE r IS NOT NULL ORDER BY ord
               ON CONFLICT (request_id) DO NOTHING
               RETURNING alert_id)"""
# The alerts whose claim succeeded (or that carry no request_id); $2 is the rule set version.
_ALERTS_INSERT = """
           INSERT INTO monitoring_alert_triggers
               (id, request_id, request_hash, model_id, alert_type, severity, metrics, labels, source,
                observe_time, state, rule_set_version)
           SELECT id, r, h, m, t, s, mt, lb, src, ot, st, $2
             FROM input
            WHERE r IS NULL OR id IN (SELECT alert_id FROM claimed)
            ORDER BY ord
           RETURNING id, request_id, create_time"""


def _alert_rows(alerts: Sequence[NewAlert], states: Sequence[str]) -> list[list]:
    # The batch travels as one JSON array of rows: asyncpg encodes ten parallel arrays element by
    # element with several isinstance checks per element, which cost more CPU on the ingest path
    # than building and parsing one document.
    return [[a.request_id, a.request_hash.hex(), a.model_id, a.alert_type, a.severity, a.metrics, a.labels, a.source,
             a.observe_time.isoformat(), state] for a, state in zip(alerts, states)]


async def insert_alerts(conn: asyncpg.Connection, alerts: Sequence[NewAlert], rule_set_version: int,
                        states: Sequence[str]) -> list[asyncpg.Record]:
    """Insert a batch in one statement; returns (id, request_id, create_time) in input order.

    A request_id that exists already is skipped (ON CONFLICT on alert_request_ids), so the caller can
    tell a race with another writer by the count. Identities are drawn in the order the SELECT produces rows, so
    sorting by id restores the input order.
    """
    if not alerts:
        return []
    # The alert's id is drawn first so the request_id claim (alert_request_ids, unique across every
    # month) and the alert row are written by one statement; only alerts whose claim succeeded (or
    # that carry no request_id) are inserted.
    rows = await conn.fetch(f"WITH {_ALERTS_INPUT}{_ALERTS_INSERT}", _alert_rows(alerts, states), rule_set_version)
    return sorted(rows, key=lambda r: r["id"])


@dataclass(frozen=True, slots=True)
class NewJob:
    """A retrain job a decided alert starts: `alert` is the alert's position in the batch written
    with it, `coalesced` the later triggers of the same batch folded into it."""

    alert: int
    mode: str
    priority: int
    reason: str  # follows "alert <id>" in the job's reason
    rule: str
    coalesced: int


@dataclass(frozen=True, slots=True)
class Join:
    """Triggers folded into a job the decisions saw active: the merged mode and priority, how many."""

    job_id: int
    mode: str
    priority: int
    count: int


@dataclass(frozen=True)
class DecidedWrite:
    alerts: list[asyncpg.Record]  # (id, request_id, create_time) in input order, minus skipped repeats
    jobs: dict[int, int]          # job id per NewJob.alert, for the jobs created
    joined: set[int]              # the Join job ids that were still active


async def insert_decided(conn: asyncpg.Connection, alerts: Sequence[NewAlert], rule_set_version: int,
                         states: Sequence[str], jobs: Sequence[NewJob], joins: Sequence[Join], *,
                         max_attempts: int | None, timeout_s: float | None, jobs_channel: str) -> DecidedWrite:
    """A decided batch in one statement, inside the decision transaction: the alerts (as
    insert_alerts), the jobs they start (each NOTIFYing `jobs_channel` at commit), and the triggers
    folded into active jobs (the priority rises to the maximum, a still QUEUED job turns full when
    asked for full, the triggers are counted).

    The decisions came from a snapshot, and the database may disagree by now: a job the batch
    meant to start is skipped when the model has an active job already (a manual SubmitRetrain
    since), and a job that ended since is left alone. The caller sees both in the result (a job
    missing from `jobs`, an id missing from `joined`) and settles them with queue.enqueue. Fewer
    alerts than given means a request_id was stored meanwhile: the caller rolls back.
    """
    rows = await conn.fetch(
        f"""WITH {_ALERTS_INPUT},
           alerts AS ({_ALERTS_INSERT}),
           new_jobs AS (
               INSERT INTO retrain_jobs AS j
                   (model_id, mode, priority, reason, trigger_alert_id, trigger_rule, max_attempts, timeout_s,
                    coalesced_triggers)
               SELECT i.m, x.mode, x.priority, 'alert ' || i.id || x.reason, i.id, x.rule, coalesce($9::int, 3),
                      $10::float8, x.n
                 FROM unnest($3::bigint[], $4::text[], $5::smallint[], $6::text[], $7::text[], $8::int[])
                      WITH ORDINALITY AS x(alert, mode, priority, reason, rule, n, ord)
                 JOIN input i ON i.ord = x.alert + 1
                ORDER BY x.ord
               ON CONFLICT (model_id) WHERE state IN ('QUEUED', 'RUNNING') DO NOTHING
               RETURNING id, trigger_alert_id),
           joined AS (
               UPDATE retrain_jobs AS j SET
                    priority = greatest(j.priority, x.priority),
                    mode = CASE WHEN j.state = 'QUEUED' AND x.mode = 'FULL' THEN 'FULL' ELSE j.mode END,
                    coalesced_triggers = j.coalesced_triggers + x.n,
                    update_time = now()
                 FROM unnest($11::bigint[], $12::text[], $13::smallint[], $14::int[]) AS x(id, mode, priority, n)
                WHERE j.id = x.id AND j.state IN ('QUEUED', 'RUNNING')
               RETURNING j.id),
           notified AS (SELECT pg_notify($15, id::text) FROM new_jobs)
           SELECT 'alert' AS kind, id, request_id, create_time, NULL::bigint AS alert_id FROM alerts
           UNION ALL SELECT 'job', id, NULL, NULL, trigger_alert_id FROM new_jobs
           UNION ALL SELECT 'joined', id, NULL, NULL, NULL FROM joined
           -- a SELECT in WITH runs only when referenced: this row makes the NOTIFYs happen
           UNION ALL SELECT 'notified', count(*), NULL, NULL, NULL FROM notified""",
        _alert_rows(alerts, states), rule_set_version,
        [j.alert for j in jobs], [j.mode for j in jobs], [j.priority for j in jobs], [j.reason for j in jobs],
        [j.rule for j in jobs], [j.coalesced for j in jobs], max_attempts, timeout_s,
        [j.job_id for j in joins], [j.mode for j in joins], [j.priority for j in joins], [j.count for j in joins],
        jobs_channel,
    )
    inserted = sorted((r for r in rows if r["kind"] == "alert"), key=lambda r: r["id"])
    position = {r["id"]: n for n, r in enumerate(inserted)}
    return DecidedWrite(
        alerts=inserted,
        jobs={position[r["alert_id"]]: r["id"] for r in rows if r["kind"] == "job" and r["alert_id"] in position},
        joined={r["id"] for r in rows if r["kind"] == "joined"})


class DecisionConflict(Exception):
    """write_decided wrote nothing: the decision state changed since it was read (or a job appeared
    or ended without the decision lock). The batch is decided again under the locks."""


class RequestIdTaken(Exception):
    """write_decided wrote nothing: a request_id of the batch is stored already."""


@dataclass(frozen=True, slots=True)
class DecidedAction:
    """An action of a batch written by write_decided. `alert`: its alert's position in the batch;
    its job is either `job_id` (an active job) or the job started by the alert at position `new_job`
    in the same batch; `reason` None: it joined that new job (the database names the job)."""

    alert: int
    rule: str
    kind: str
    mode: str | None
    priority: int | None
    decision: str
    reason: str | None
    job_id: int | None
    new_job: int | None
    cooldown_until: dt.datetime | None
    starts_job: bool


@dataclass(frozen=True)
class OptimisticWrite:
    alerts: list[asyncpg.Record]          # (id, request_id, create_time, pos) in input order
    jobs: dict[int, int]                  # job id per starting alert's position
    actions: list[asyncpg.Record]         # (id, create_time, pos) in input order


async def write_decided(conn: asyncpg.Connection, alerts: Sequence[NewAlert], rule_set_version: int,
                        states: Sequence[str], jobs: Sequence[NewJob], joins: Sequence[Join],
                        actions: Sequence[DecidedAction], *, lock_keys: Sequence[int], models: Sequence[str],
                        cooldown_s: float, fingerprint: str, max_attempts: int | None, timeout_s: float | None,
                        jobs_channel: str) -> OptimisticWrite:
    """A decided batch in one autocommitted statement (closedloop_write_decided, migration 0015): the
    decision locks, a check that the state of `models` still has `fingerprint` (decision_state's),
    then the alerts, the jobs they start (NOTIFYing `jobs_channel`), the triggers folded into active
    jobs and the actions. Raises DecisionConflict or RequestIdTaken having written nothing."""
    try:
        rows = await conn.fetch(
            """SELECT * FROM closedloop_write_decided(
                   $1::jsonb, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19,
                   $20, $21, $22, $23, $24, $25, $26, $27, $28, $29, $30)""",
            _alert_rows(alerts, states), rule_set_version, list(lock_keys), list(models), cooldown_s, fingerprint,
            [j.alert for j in jobs], [j.mode for j in jobs], [j.priority for j in jobs], [j.reason for j in jobs],
            [j.rule for j in jobs], [j.coalesced for j in jobs], max_attempts, timeout_s, jobs_channel,
            [j.job_id for j in joins], [j.mode for j in joins], [j.priority for j in joins], [j.count for j in joins],
            [a.alert for a in actions], [a.rule for a in actions], [a.kind for a in actions],
            [a.mode for a in actions], [a.priority for a in actions], [a.decision for a in actions],
            [a.reason for a in actions], [a.job_id for a in actions], [a.new_job for a in actions],
            [a.cooldown_until for a in actions], [a.starts_job for a in actions],
        )
    except asyncpg.PostgresError as exc:
        if exc.sqlstate == "CLD01":
            raise DecisionConflict() from None
        if exc.sqlstate == "CLD02":
            raise RequestIdTaken() from None
        raise
    return OptimisticWrite(
        alerts=[r for r in rows if r["kind"] == "alert"],
        jobs={r["pos"]: r["id"] for r in rows if r["kind"] == "job"},
        actions=sorted((r for r in rows if r["kind"] == "action"), key=lambda r: r["pos"]))


async def existing_request_ids(conn: asyncpg.Connection, request_ids: Sequence[str]) -> set[str]:
    rows = await conn.fetch(
        "SELECT request_id FROM alert_request_ids WHERE request_id = ANY($1::text[])", list(request_ids))
    return {r["request_id"] for r in rows}


async def alerts_by_request_ids(conn: asyncpg.Connection, request_ids: Sequence[str]) -> dict[str, asyncpg.Record]:
    rows = await conn.fetch(
        f"""SELECT {ALERT_COLUMNS} FROM monitoring_alert_triggers
             WHERE (id, observe_time) IN (SELECT alert_id, observe_time FROM alert_request_ids
                                           WHERE request_id = ANY($1::text[]))""",
        list(request_ids),
    )
    return {r["request_id"]: r for r in rows}


async def insert_actions(conn: asyncpg.Connection, actions: Sequence[NewAction]) -> list[dict]:
    """Insert decisions in one statement; returns the rows (as dicts) in input order.

    The same statement links each job to the action that started it (`starts_job`): the jobs were
    written first, so the link is an update of rows written earlier in the transaction. Only the id
    and create_time come back from the database; the rest is what was written, so the reply does
    not pay for decoding every column of every action again.
    """
    if not actions:
        return []
    # Ids are drawn in input order (as for alerts), before the insert, so the link can name them.
    rows = await conn.fetch(
        """WITH input AS (
               SELECT nextval('closed_loop_actions_ids') AS id, x.*
                 FROM unnest($1::bigint[], $2::text[], $3::text[], $4::bigint[], $5::text[], $6::text[],
                             $7::smallint[], $8::text[], $9::text[], $10::bigint[], $11::timestamptz[],
                             $12::boolean[])
                      WITH ORDINALITY AS x(a, m, r, v, k, md, p, d, rs, j, cu, starts, ord)
                ORDER BY x.ord),
           linked AS (
               UPDATE retrain_jobs AS j SET trigger_action_id = input.id, update_time = now()
                 FROM input WHERE input.starts AND j.id = input.j)
           INSERT INTO closed_loop_actions
                (id, alert_id, model_id, rule, rule_set_version, kind, mode, priority, decision, reason,
                 job_id, cooldown_until)
           SELECT id, a, m, r, v, k, md, p, d, rs, j, cu FROM input ORDER BY ord
           RETURNING id, create_time""",
        [a.alert_id for a in actions], [a.model_id for a in actions], [a.rule for a in actions],
        [a.rule_set_version for a in actions], [a.kind for a in actions], [a.mode for a in actions],
        [a.priority for a in actions], [a.decision for a in actions], [a.reason for a in actions],
        [a.job_id for a in actions], [a.cooldown_until for a in actions], [a.starts_job for a in actions],
    )
    rows = sorted(rows, key=lambda r: r["id"])
    return [{"id": r["id"], "create_time": r["create_time"], "alert_id": a.alert_id, "model_id": a.model_id,
             "rule": a.rule, "rule_set_version": a.rule_set_version, "kind": a.kind, "mode": a.mode,
             "priority": a.priority, "decision": a.decision, "reason": a.reason, "job_id": a.job_id,
             "cooldown_until": a.cooldown_until} for r, a in zip(rows, actions)]


async def get_alert(conn: asyncpg.Connection, alert_id: int) -> asyncpg.Record | None:
    return await conn.fetchrow(f"SELECT {ALERT_COLUMNS} FROM monitoring_alert_triggers WHERE id = $1", alert_id)


async def actions_for(conn: asyncpg.Connection, alert_ids: Sequence[int]) -> dict[int, list[asyncpg.Record]]:
    rows = await conn.fetch(
        f"SELECT {ACTION_COLUMNS} FROM closed_loop_actions WHERE alert_id = ANY($1::bigint[]) ORDER BY id",
        list(alert_ids),
    )
    out: dict[int, list[asyncpg.Record]] = {}
    for r in rows:
        out.setdefault(r["alert_id"], []).append(r)
    return out


async def list_alerts(conn: asyncpg.Connection, *, model_id: str | None, alert_type: str | None,
                      state: str | None, start: dt.datetime | None, end: dt.datetime | None,
                      after: tuple[dt.datetime, int] | None, limit: int,
                      scopes: Sequence[str] | None = None) -> list[asyncpg.Record]:
    """Newest first by (observe_time, id); `after` is the keyset cursor of the previous page;
    `scopes`: only models matching one of these globs (None: all).

    The WHERE clause names only the filters given, so each combination is its own prepared statement
    with its own plan: a generic plan for "model_id = $1 OR $1 IS NULL" would read the time index and
    filter, which is fine for "everything" and a disaster for one model among ten thousand. Each
    filter has an index (filter, observe_time DESC, id DESC) in every month; the upper time bound
    also lets the planner skip months newer than the cursor. The state has one partial index per
    value instead (migrations/0011_state_and_retrain_indexes.sql), so it is written as a literal: the
    planner can only use an index whose predicate it can prove, and a parameter proves nothing.
    """
    conditions: list[str] = []
    args: list = []

    def where(sql: str, *values) -> None:
        args.extend(values)
        conditions.append(sql.format(*(f"${len(args) - len(values) + i + 1}" for i in range(len(values)))))

    if model_id is not None:
        where("model_id = {0}", model_id)
    if alert_type is not None:
        where("alert_type = {0}", alert_type)
    if state is not None:
        if state not in ALERT_STATES:  # the literal below is safe because it is one of these
            raise ValueError(f"unknown alert state {state!r}")
        conditions.append(f"state = '{state}'")
    if start is not None:
        where("observe_time >= {0}", start)
    if end is not None:
        where("observe_time < {0}", end)
    if after is not None:
        where("observe_time <= {0} AND (observe_time, id) < ({0}, {1}::bigint)", after[0], after[1])
    if scopes is not None:
        where("model_id LIKE ANY({0}::text[])", like_patterns(scopes))
    args.append(limit)
    return await conn.fetch(
        f"""SELECT {ALERT_COLUMNS} FROM monitoring_alert_triggers
             {"WHERE " + " AND ".join(conditions) if conditions else ""}
             ORDER BY observe_time DESC, id DESC
             LIMIT ${len(args)}""",
        *args,
    )


async def lock_alert(conn: asyncpg.Connection, alert_id: int) -> asyncpg.Record | None:
    return await conn.fetchrow(
        f"SELECT {ALERT_COLUMNS} FROM monitoring_alert_triggers WHERE id = $1 FOR UPDATE", alert_id
    )


async def update_state(conn: asyncpg.Connection, alert_id: int, state: str) -> asyncpg.Record:
    return await conn.fetchrow(
        f"""UPDATE monitoring_alert_triggers SET state = $2, update_time = now() WHERE id = $1
            RETURNING {ALERT_COLUMNS}""",
        alert_id, state,
    )


async def alerts_in_window(conn: asyncpg.Connection, start: dt.datetime, end: dt.datetime,
                           model_id: str | None = None, scopes: Sequence[str] | None = None) -> list[asyncpg.Record]:
    """Every alert observed in [start, end), oldest first (backtests and feedback).

    Read in keyset pages of WINDOW_PAGE rows, one statement each: a backtest over a million alerts
    is many short statements (each within --db-timeout) instead of one that outlasts it. The cursor
    (observe_time, id) starts at (start, 0) so every page is one range of the time index.
    """
    rows: list[asyncpg.Record] = []
    after: tuple[dt.datetime, int] = (start, 0)
    while True:
        page = await conn.fetch(
            f"""SELECT {ALERT_COLUMNS} FROM monitoring_alert_triggers
                 WHERE observe_time >= $3 AND observe_time < $2 AND (observe_time, id) > ($3, $4::bigint)
                   AND ($5::text IS NULL OR model_id = $5)
                   AND ($6::text[] IS NULL OR model_id LIKE ANY($6::text[]))
                 ORDER BY observe_time, id
                 LIMIT $1""",
            WINDOW_PAGE, end, after[0], after[1], model_id, like_patterns(scopes),
        )
        rows.extend(page)
        if len(page) < WINDOW_PAGE:
            return rows
        after = (page[-1]["observe_time"], page[-1]["id"])
