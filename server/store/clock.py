"""The database's clock: the one time every replica agrees on (cooldowns, ages, leases use it)."""

from __future__ import annotations

import datetime as dt

import asyncpg


async def db_now(conn: asyncpg.Connection) -> dt.datetime:
    """now() of the connection's transaction: the same instant for every statement inside it."""
    return await conn.fetchval("SELECT now()")
