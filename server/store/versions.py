"""SQL for model_versions and model_promotions, and the model's current version.

A model's current version changes in exactly two ways, both recorded in model_promotions: a job's
challenger is promoted, or an operator (or a rule) rolls back. Callers hold a transaction; the
model's registry row is locked first so a promotion and a rollback of the same model serialise.
"""

from __future__ import annotations

import asyncpg

from .models import MODELS_CHANGED_CHANNEL

VERSION_COLUMNS = """model_id, version, job_id, mode, metric, metric_value, champion_metric_value, promoted,
                     artifact_path, artifact_sha256, data_window, data_end, train_rows, holdout_rows,
                     refit_fallback, create_time"""


async def lock_model(conn: asyncpg.Connection, model_id: str) -> asyncpg.Record | None:
    return await conn.fetchrow(
        """SELECT model_id, current_version, current_version_time, promotion_margin, metric
             FROM monitoring_retraining_integration WHERE model_id = $1 FOR UPDATE""",
        model_id,
    )


async def latest_version_number(conn: asyncpg.Connection, model_id: str) -> int:
    """The highest version trained so far (0 before the first); versions are never reused."""
    return await conn.fetchval(
        "SELECT coalesce(max(version), 0) FROM model_versions WHERE model_id = $1", model_id
    )


async def get_version(conn: asyncpg.Connection, model_id: str, version: int) -> asyncpg.Record | None:
    return await conn.fetchrow(
        f"SELECT {VERSION_COLUMNS} FROM model_versions WHERE model_id = $1 AND version = $2", model_id, version
    )


async def current_version_row(conn: asyncpg.Connection, model_id: str) -> asyncpg.Record | None:
    """The serving version's row (artifact, data_end); None before the first promotion."""
    return await conn.fetchrow(
        f"""SELECT {', '.join('v.' + c.strip() for c in VERSION_COLUMNS.split(','))}
              FROM monitoring_retraining_integration m
              JOIN model_versions v ON v.model_id = m.model_id AND v.version = m.current_version
             WHERE m.model_id = $1""",
        model_id,
    )


async def insert_version(conn: asyncpg.Connection, *, model_id: str, version: int, job_id: int | None, mode: str,
                         metric: str, metric_value: float, champion_metric_value: float | None, promoted: bool,
                         artifact_path: str, artifact_sha256: str, data_window: str, data_end: str | None,
                         train_rows: int, holdout_rows: int, refit_fallback: bool) -> asyncpg.Record:
    return await conn.fetchrow(
        f"""INSERT INTO model_versions
                (model_id, version, job_id, mode, metric, metric_value, champion_metric_value, promoted,
                 artifact_path, artifact_sha256, data_window, data_end, train_rows, holdout_rows, refit_fallback)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)
            RETURNING {VERSION_COLUMNS}""",
        model_id, version, job_id, mode, metric, metric_value, champion_metric_value, promoted,
        artifact_path, artifact_sha256, data_window, data_end, train_rows, holdout_rows, refit_fallback,
    )


async def list_versions(conn: asyncpg.Connection, model_id: str) -> list[asyncpg.Record]:
    return await conn.fetch(
        f"SELECT {VERSION_COLUMNS} FROM model_versions WHERE model_id = $1 ORDER BY version DESC", model_id
    )


async def set_current(conn: asyncpg.Connection, model_id: str, *, to_version: int, kind: str,
                      job_id: int | None = None, reason: str = "") -> asyncpg.Record:
    """Make `to_version` current and record the change (kind PROMOTION or ROLLBACK).

    Every server replica caches model facts (version, age) for rule evaluation; the NOTIFY, sent at
    commit, tells them to drop this model's entry.
    """
    await conn.execute("SELECT pg_notify($1, $2)", MODELS_CHANGED_CHANNEL, model_id)
    return await conn.fetchrow(
        """WITH before AS (
               SELECT current_version FROM monitoring_retraining_integration WHERE model_id = $1
           ), moved AS (
               UPDATE monitoring_retraining_integration
                  SET current_version = $2, current_version_time = now(), update_time = now()
                WHERE model_id = $1
               RETURNING model_id
           )
           INSERT INTO model_promotions (model_id, from_version, to_version, kind, job_id, reason)
           SELECT $1, before.current_version, $2, $3, $4, $5 FROM before, moved
           RETURNING *""",
        model_id, to_version, kind, job_id, reason,
    )


async def rollback(conn: asyncpg.Connection, model_id: str, *, to_version: int | None, reason: str = "",
                   job_id: int | None = None) -> asyncpg.Record | None:
    """Return the model to an earlier version; the model_promotions row, or None if there is none.

    `to_version` None (or 0) means the newest version below the current one that was ever serving
    (promoted by a job or reached by a rollback). An explicit version must exist and not be current:
    ValueError otherwise, with a message for the client. None is returned, not raised, when there
    is no earlier version (or no such model), so a rule's rollback inside an alert batch does not abort the batch.
    """
    model = await lock_model(conn, model_id)
    if model is None:
        return None
    current = model["current_version"]
    if to_version:
        if to_version == current:
            raise ValueError(f"version {to_version} is already the current version")
        if await get_version(conn, model_id, to_version) is None:
            raise ValueError(f"model {model_id!r} has no version {to_version}")
        target = to_version
    else:
        target = await conn.fetchval(
            """SELECT max(v.version) FROM model_versions v
                WHERE v.model_id = $1 AND v.version < $2
                  AND (v.promoted OR EXISTS (SELECT 1 FROM model_promotions p
                                              WHERE p.model_id = v.model_id AND p.to_version = v.version))""",
            model_id, current,
        )
        if target is None:
            return None
    return await set_current(conn, model_id, to_version=target, kind="ROLLBACK", job_id=job_id,
                             reason=reason or f"rollback from version {current}")
