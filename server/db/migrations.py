"""Migration runner: numbered SQL files from closedloop.migrations, applied once each, in order.

- schema_migrations records each applied file with its SHA-256; an applied file whose text changed
  is refused (editing history silently would leave databases that differ with the same version).
- A session advisory lock serialises runners, so replicas starting together do not race.
- After the files: TimescaleDB hypertables for the time-series tables when the extension is available.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import re
from dataclasses import dataclass

import asyncpg
import structlog

from ..errors import ServerError

log = structlog.get_logger(__name__)

# Arbitrary constant shared by every closedloop process: the key of the migration lock.
MIGRATION_LOCK_KEY = 0x636C6F6F70  # "cloop"
FILE_PATTERN = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
HYPERTABLES = {"feedback_loop_metrics": "time"}


class MigrationError(ServerError):
    """A migration cannot be applied or an applied one was edited; the message says which."""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def bundled_migrations() -> list[Migration]:
    found = []
    for entry in importlib.resources.files("closedloop.migrations").iterdir():
        match = FILE_PATTERN.match(entry.name)
        if match:
            found.append(Migration(int(match.group(1)), match.group(2), entry.read_text(encoding="utf-8")))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise MigrationError(f"two migration files share a number: {versions}")
    return found


@dataclass(frozen=True)
class MigrationReport:
    applied: list[str]
    already: int
    timescale: bool


async def migrate(conn: asyncpg.Connection, migrations: list[Migration] | None = None) -> MigrationReport:
    """Apply pending migrations on `conn` (a plain connection, not in a transaction)."""
    migrations = bundled_migrations() if migrations is None else migrations
    await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK_KEY)
    try:
        await conn.execute(
            """CREATE TABLE IF NOT EXISTS schema_migrations (
                   version integer PRIMARY KEY,
                   name text NOT NULL,
                   checksum text NOT NULL,
                   applied_at timestamptz NOT NULL DEFAULT now())"""
        )
        rows = await conn.fetch("SELECT version, name, checksum FROM schema_migrations ORDER BY version")
        applied = {r["version"]: r for r in rows}
        known = {m.version for m in migrations}
        for version, row in applied.items():
            if version not in known:
                raise MigrationError(
                    f"the database has migration {version:04d}_{row['name']} which this closedloop "
                    "does not know: it was migrated by a newer version"
                )
        done = []
        for m in migrations:
            row = applied.get(m.version)
            if row is not None:
                if row["checksum"] != m.checksum:
                    raise MigrationError(
                        f"migration {m.version:04d}_{m.name}.sql was edited after it was applied "
                        f"(checksum {m.checksum[:12]} differs from the applied {row['checksum'][:12]}); "
                        "add a new migration instead of changing an applied one"
                    )
                continue
            async with conn.transaction():
                await conn.execute(m.sql)
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
                    m.version, m.name, m.checksum,
                )
            log.info("db.migration_applied", version=m.version, name=m.name)
            done.append(f"{m.version:04d}_{m.name}")
        timescale = await _enable_timescale(conn)
        return MigrationReport(applied=done, already=len(applied), timescale=timescale)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK_KEY)


async def _enable_timescale(conn: asyncpg.Connection) -> bool:
    available = await conn.fetchval(
        "SELECT count(*) FROM pg_available_extensions WHERE name = 'timescaledb'"
    )
    if not available:
        log.info("db.timescale_unavailable", tables=sorted(HYPERTABLES), storage="plain tables, BRIN time index")
        return False
    try:
        await conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
        for table, column in HYPERTABLES.items():
            await conn.execute(
                "SELECT create_hypertable($1::regclass, $2::name, if_not_exists => true, migrate_data => true)",
                table, column,
            )
    except asyncpg.PostgresError as exc:
        # Listed but not loadable (shared_preload_libraries) is common; plain tables still work.
        log.warning("db.timescale_failed", error=str(exc), storage="plain tables")
        return False
    log.info("db.timescale_enabled", hypertables=sorted(HYPERTABLES))
    return True
