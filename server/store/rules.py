"""SQL for automated_response_rules: versioned rule sets, one of them active."""

from __future__ import annotations

import asyncpg

RULESET_COLUMNS = "version, source, filename, sha256, rule_names, active, create_time"
RULES_CHANGED_CHANNEL = "closedloop_rules"


async def activate(conn: asyncpg.Connection, *, source: str, filename: str, sha256: str,
                   rule_names: list[str]) -> asyncpg.Record:
    """Store a new version and make it the only active one (in the caller's transaction)."""
    # Serialise concurrent ApplyRules so versions activate in the order they were created.
    await conn.execute("SELECT pg_advisory_xact_lock(hashtext('closedloop.rules'))")
    await conn.execute("UPDATE automated_response_rules SET active = false WHERE active")
    row = await conn.fetchrow(
        f"""INSERT INTO automated_response_rules (source, filename, sha256, rule_names, active)
            VALUES ($1, $2, $3, $4, true) RETURNING {RULESET_COLUMNS}""",
        source, filename, sha256, rule_names,
    )
    await conn.execute("SELECT pg_notify($1, $2)", RULES_CHANGED_CHANNEL, str(row["version"]))
    return row


async def active(conn: asyncpg.Connection) -> asyncpg.Record | None:
    return await conn.fetchrow(f"SELECT {RULESET_COLUMNS} FROM automated_response_rules WHERE active")


async def get_version(conn: asyncpg.Connection, version: int) -> asyncpg.Record | None:
    return await conn.fetchrow(f"SELECT {RULESET_COLUMNS} FROM automated_response_rules WHERE version = $1", version)
