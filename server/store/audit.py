"""SQL for audit_records: the append-only trail of operator actions (migration 0004).

Only INSERT and SELECT live here; the table's triggers refuse UPDATE, DELETE and TRUNCATE.
"""

from __future__ import annotations

import datetime as dt

import asyncpg


async def append(conn: asyncpg.Connection, *, token_name: str, method: str, request: dict, code: str,
                 message: str) -> int:
    return await conn.fetchval(
        """INSERT INTO audit_records (token_name, method, request, code, message)
           VALUES ($1, $2, $3, $4, $5) RETURNING id""",
        token_name, method, request, code, message,
    )


async def list_records(conn: asyncpg.Connection, *, since: dt.datetime | None, before_id: int | None,
                       limit: int) -> list[asyncpg.Record]:
    """Newest first; keyset paging on id (`before_id` is the last id of the previous page)."""
    return await conn.fetch(
        """SELECT id, time, token_name, method, request, code, message FROM audit_records
            WHERE ($1::timestamptz IS NULL OR time >= $1) AND ($2::bigint IS NULL OR id < $2)
            ORDER BY id DESC LIMIT $3""",
        since, before_id, limit,
    )
