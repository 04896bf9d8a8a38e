"""SQL for monitoring: reference profiles, monitoring specs, windows, their partials and measurements.

Windows of one model version and kind (OBSERVATIONS or OUTCOMES) are written under an advisory lock
per (model, version, kind), taken by `window_transaction`: a server flushing its partial and the server
closing the window serialise on it, so a flush never lands in a window that is being closed and a window
is closed exactly once with every partial flushed before it. The lock is transaction-scoped and costs
no row writes, like the decision lock (store/models.py).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
from typing import AsyncIterator, Sequence

import asyncpg

WINDOW_COLUMNS = """id, model_id, version, kind, seq, state, start_time, due_time, close_time, rows,
                    first_observe_time, last_observe_time, judged, verdict, alert_id"""


# -- profiles ----------------------------------------------------------------------------------------

async def put_profile(conn: asyncpg.Connection, model_id: str, version: int, profile: bytes, summary: dict,
                      origin: str) -> None:
    """Store (or replace, for a backfill) the reference profile of a version."""
    await conn.execute(
        """INSERT INTO model_profiles (model_id, version, profile, summary, origin) VALUES ($1, $2, $3, $4, $5)
           ON CONFLICT (model_id, version) DO UPDATE
               SET profile = EXCLUDED.profile, summary = EXCLUDED.summary, origin = EXCLUDED.origin,
                   create_time = now()""",
        model_id, version, profile, summary, origin,
    )


async def get_profile(conn: asyncpg.Connection, model_id: str, version: int) -> bytes | None:
    return await conn.fetchval(
        "SELECT profile FROM model_profiles WHERE model_id = $1 AND version = $2", model_id, version)


async def profile_summary(conn: asyncpg.Connection, model_id: str, version: int) -> asyncpg.Record | None:
    return await conn.fetchrow(
        "SELECT summary, origin, create_time FROM model_profiles WHERE model_id = $1 AND version = $2",
        model_id, version)


# -- specs and the model's serving version -----------------------------------------------------------

async def put_spec(conn: asyncpg.Connection, model_id: str, spec: dict | None) -> None:
    """Set a model's monitoring spec (protobuf JSON); None removes it (the defaults apply)."""
    if spec is None:
        await conn.execute("DELETE FROM model_monitoring_specs WHERE model_id = $1", model_id)
        return
    await conn.execute(
        """INSERT INTO model_monitoring_specs (model_id, spec) VALUES ($1, $2)
           ON CONFLICT (model_id) DO UPDATE SET spec = EXCLUDED.spec, update_time = now()""",
        model_id, spec)


async def specs_for(conn: asyncpg.Connection, model_ids: Sequence[str]) -> dict[str, dict]:
    rows = await conn.fetch("SELECT model_id, spec FROM model_monitoring_specs WHERE model_id = ANY($1::text[])",
                            list(model_ids))
    return {r["model_id"]: r["spec"] for r in rows}


async def monitored_model(conn: asyncpg.Connection, model_id: str) -> asyncpg.Record | None:
    """The registry's current version and the monitoring spec (NULL: defaults); None if not registered."""
    return await conn.fetchrow(
        """SELECT m.model_id, m.current_version, s.spec
             FROM monitoring_retraining_integration m
             LEFT JOIN model_monitoring_specs s ON s.model_id = m.model_id
            WHERE m.model_id = $1""",
        model_id)


async def version_exists(conn: asyncpg.Connection, model_id: str, version: int) -> bool:
    return bool(await conn.fetchval(
        "SELECT EXISTS (SELECT 1 FROM model_versions WHERE model_id = $1 AND version = $2)", model_id, version))


# -- windows -----------------------------------------------------------------------------------------

def _window_lock_key(model_id: str, version: int, kind: str) -> int:
    digest = hashlib.blake2b(f"closedloop.window:{model_id}:{version}:{kind}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


@contextlib.asynccontextmanager
async def window_transaction(conn: asyncpg.Connection, model_id: str, version: int,
                             kind: str) -> AsyncIterator[None]:
    """A transaction holding the window lock of (model, version, kind)."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", _window_lock_key(model_id, version, kind))
        yield


async def open_window(conn: asyncpg.Connection, model_id: str, version: int, kind: str,
                      window_seconds: float | None) -> asyncpg.Record:
    """The OPEN window of (model, version, kind), created (next seq) when there is none. Hold the lock."""
    row = await conn.fetchrow(
        f"""SELECT {WINDOW_COLUMNS} FROM monitor_windows
             WHERE model_id = $1 AND version = $2 AND kind = $3 AND state = 'OPEN'""",
        model_id, version, kind)
    if row is not None:
        return row
    return await conn.fetchrow(
        f"""INSERT INTO monitor_windows (model_id, version, kind, seq, due_time)
            SELECT $1, $2, $3, coalesce(max(seq), 0) + 1,
                   CASE WHEN $4::float8 IS NULL THEN NULL ELSE now() + make_interval(secs => $4::float8) END
              FROM monitor_windows WHERE model_id = $1 AND version = $2 AND kind = $3
            RETURNING {WINDOW_COLUMNS}""",
        model_id, version, kind, window_seconds)


async def read_partial(conn: asyncpg.Connection, window_id: int, server_id: str) -> bytes | None:
    return await conn.fetchval(
        "SELECT state FROM monitor_partials WHERE window_id = $1 AND server_id = $2", window_id, server_id)


async def write_partial(conn: asyncpg.Connection, window_id: int, server_id: str, *, total_rows: int,
                        added_rows: int, state: bytes, first_observe: dt.datetime | None,
                        last_observe: dt.datetime | None) -> asyncpg.Record:
    """Store this server's merged partial; returns the window as updated (its rows over all servers).
    One statement: a flush is a round trip fewer."""
    return await conn.fetchrow(
        f"""WITH stored AS (
                INSERT INTO monitor_partials (window_id, server_id, rows, state) VALUES ($1, $2, $3, $4)
                ON CONFLICT (window_id, server_id) DO UPDATE
                    SET rows = EXCLUDED.rows, state = EXCLUDED.state, update_time = now())
            UPDATE monitor_windows
               SET rows = rows + $5,
                   first_observe_time = least(first_observe_time, $6),
                   last_observe_time = greatest(last_observe_time, $7)
             WHERE id = $1 RETURNING {WINDOW_COLUMNS}""",
        window_id, server_id, total_rows, state, added_rows, first_observe, last_observe)


async def get_window(conn: asyncpg.Connection, window_id: int) -> asyncpg.Record | None:
    return await conn.fetchrow(f"SELECT {WINDOW_COLUMNS} FROM monitor_windows WHERE id = $1", window_id)


async def partial_states(conn: asyncpg.Connection, window_id: int, except_server: str | None = None) -> list[bytes]:
    """The stored partials of a window (but `except_server`'s, which the caller holds)."""
    rows = await conn.fetch(
        """SELECT state FROM monitor_partials WHERE window_id = $1 AND server_id IS DISTINCT FROM $2
            ORDER BY server_id""", window_id, except_server)
    return [r["state"] for r in rows]


async def close_window(conn: asyncpg.Connection, window_id: int, *, judged: bool, verdict: dict,
                       alert_id: int | None) -> None:
    """Mark the window CLOSED and drop its partials (their merge is in the verdict and measurements)."""
    await conn.execute(
        """WITH dropped AS (DELETE FROM monitor_partials WHERE window_id = $1)
           UPDATE monitor_windows SET state = 'CLOSED', close_time = now(), judged = $2, verdict = $3, alert_id = $4
            WHERE id = $1""",
        window_id, judged, verdict, alert_id)


async def insert_measurements(conn: asyncpg.Connection, window: asyncpg.Record, measurements: list[tuple]) -> None:
    """measurements: (feature, method, statistic, p_value, threshold, drifted, effect, reference_rows, window_rows)."""
    if not measurements:
        return
    await conn.executemany(
        """INSERT INTO monitor_measurements (window_id, model_id, version, feature, method, statistic, p_value,
                                             threshold, drifted, effect, reference_rows, window_rows, measure_time)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, now())""",
        [(window["id"], window["model_id"], window["version"], *m) for m in measurements])


async def due_windows(conn: asyncpg.Connection, limit: int = 100) -> list[asyncpg.Record]:
    """OPEN windows whose time is up (any server may close them)."""
    return await conn.fetch(
        """SELECT id, model_id, version, kind FROM monitor_windows
            WHERE state = 'OPEN' AND due_time <= now() ORDER BY due_time LIMIT $1""",
        limit)


async def list_windows(conn: asyncpg.Connection, model_id: str, *, version: int | None = None,
                       kind: str | None = None, state: str | None = None, before_id: int | None = None,
                       limit: int = 50) -> list[asyncpg.Record]:
    """Newest first (by id)."""
    return await conn.fetch(
        f"""SELECT {WINDOW_COLUMNS} FROM monitor_windows
             WHERE model_id = $1 AND ($2::int IS NULL OR version = $2) AND ($3::text IS NULL OR kind = $3)
               AND ($4::text IS NULL OR state = $4) AND ($5::bigint IS NULL OR id < $5)
             ORDER BY id DESC LIMIT $6""",
        model_id, version, kind, state, before_id, limit)


async def measurements_for(conn: asyncpg.Connection, window_ids: Sequence[int]) -> dict[int, list[asyncpg.Record]]:
    rows = await conn.fetch(
        """SELECT window_id, feature, method, statistic, p_value, threshold, drifted, effect, reference_rows,
                  window_rows FROM monitor_measurements WHERE window_id = ANY($1::bigint[])
            ORDER BY window_id, feature""",
        list(window_ids))
    grouped: dict[int, list[asyncpg.Record]] = {}
    for r in rows:
        grouped.setdefault(r["window_id"], []).append(r)
    return grouped
