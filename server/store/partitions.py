"""Monthly partitions of the alert and action tables: created ahead, dropped whole when expired.

The partitioning itself, and the two functions that create and drop months, are in
migrations/0008_partitioned_alerts.sql (defined once, in the database, so the migration and the server
use the same code). Here: the calls, and the periodic task each server runs (`PartitionMaintenance`):
every run makes sure this month and the next MONTHS_AHEAD exist (an insert for a month that has no
partition would fail), and with a retention period drops every month that ended before the cutoff.

Retention never deletes alert or action rows one by one: a month is a table, dropped whole. The
idempotency keys (alert_request_ids, one narrow row per request_id) expire with the same period by a
range DELETE in batches; run every hour, that is an hour's worth of keys. Feedback (feedback_loop_metrics, the
daily aggregates, retrain_jobs, model versions) is never touched: reports over old periods keep working
after the alerts behind them are gone.

Replicas may run this at the same time: a transaction-level advisory lock makes the others skip.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import asyncpg
import structlog

from ..periodic import PeriodicTask

log = structlog.get_logger(__name__)

PARTITIONED_TABLES = ("monitoring_alert_triggers", "closed_loop_actions")
# Months created ahead of the current one: a server may be down for a while without inserts failing.
MONTHS_AHEAD = 2
# How often a server runs the maintenance (seconds).
MAINTENANCE_INTERVAL_S = 3600.0
LOCK_TIMEOUT_MS = 1000
# Idempotency keys deleted per statement (an hour's worth at the 10M-alerts-in-180-days target is ~2,300).
EXPIRY_BATCH = 20_000
# Key of the advisory lock ("cparts"): one replica maintains at a time.
MAINTENANCE_LOCK_KEY = 0x637061727473


@dataclass(frozen=True)
class MaintenanceReport:
    created: int                 # month partitions created
    dropped: tuple[str, ...]     # partitions dropped by retention
    request_ids_expired: int     # idempotency keys past the retention period
    skipped: bool = False        # another replica held the lock


async def ensure_months(conn: asyncpg.Connection, since: dt.datetime, upto: dt.datetime) -> int:
    """Create every missing month partition of both tables covering [since, upto]; returns how many."""
    created = 0
    for table in PARTITIONED_TABLES:
        created += await conn.fetchval("SELECT closedloop_ensure_months($1, $2, $3)", table, since, upto)
    return created


async def month_partitions(conn: asyncpg.Connection, table: str) -> list[dt.datetime]:
    """The first instants of `table`'s month partitions, oldest first."""
    return [r[0] for r in await conn.fetch("SELECT m FROM closedloop_months($1) m", table)]


async def maintain(conn: asyncpg.Connection, retention: dt.timedelta | None) -> MaintenanceReport:
    """One maintenance run: months ahead, then retention when it is set.

    Creating and dropping months is one short transaction (it locks the parents); the expired
    idempotency keys are deleted after it commits, in batches that each commit on their own, so
    neither ingest nor the per-statement database timeout waits for a large first expiry.
    """
    async with conn.transaction():
        if not await conn.fetchval("SELECT pg_try_advisory_xact_lock($1)", MAINTENANCE_LOCK_KEY):
            return MaintenanceReport(0, (), 0, skipped=True)
        # Creating or dropping a month locks the parent table exclusively, so ingest queues behind a
        # DDL statement that waits for a long reader: give up after a second and retry next run.
        await conn.execute(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT_MS}ms'")
        now = await conn.fetchval("SELECT now()")
        created = await ensure_months(conn, now, now + dt.timedelta(days=31 * MONTHS_AHEAD))
        dropped: list[str] = []
        if retention is not None:
            for table in PARTITIONED_TABLES:
                dropped += [r[0] for r in await conn.fetch("SELECT closedloop_drop_months($1, $2)",
                                                           table, now - retention)]
    expired = await expire_request_ids(conn, now - retention) if retention is not None else 0
    return MaintenanceReport(created, tuple(dropped), expired)


async def expire_request_ids(conn: asyncpg.Connection, cutoff: dt.datetime) -> int:
    """Delete the idempotency keys stored before `cutoff`, EXPIRY_BATCH at a time; returns how many."""
    total = 0
    while True:
        status = await conn.execute(
            """DELETE FROM alert_request_ids WHERE request_id IN (
                   SELECT request_id FROM alert_request_ids WHERE create_time < $1 LIMIT $2)""",
            cutoff, EXPIRY_BATCH)
        done = int(status.split()[-1])
        total += done
        if done < EXPIRY_BATCH:
            return total


class PartitionMaintenance(PeriodicTask):
    """The periodic task: `maintain` at start and every `interval` seconds."""

    name = "partition_maintenance"

    def __init__(self, pool: asyncpg.Pool, retention: dt.timedelta | None,
                 interval: float = MAINTENANCE_INTERVAL_S) -> None:
        super().__init__(interval)
        self.pool = pool
        self.retention = retention



    async def run_once(self) -> MaintenanceReport:
        async with self.pool.acquire() as conn:
            report = await maintain(conn, self.retention)
        if report.created or report.dropped or report.request_ids_expired:
            log.info("db.partitions_maintained", created=report.created, dropped=list(report.dropped),
                     request_ids_expired=report.request_ids_expired)
        return report

