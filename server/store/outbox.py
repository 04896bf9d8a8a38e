"""SQL of the notification outbox (migrations/0007_notifications.sql).

Writers add rows inside the transaction of what they report; `insert` skips a row whose
idempotency key is stored already, so a decision replayed after a retry notifies once. The delivery
worker (notify/worker.py) claims due rows with FOR UPDATE SKIP LOCKED, which lets every replica's
worker share the outbox, and leases each claimed row by pushing its next_attempt_at ahead: a worker
that dies mid-request leaves the row to be claimed again when the lease runs out (at-least-once).
The attempt number the claim returns fences the report of that attempt.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import asyncpg

STATES = ("PENDING", "DELIVERED", "DEAD")


@dataclass(frozen=True)
class NewNotification:
    target: str
    event: str
    idempotency_key: str
    payload: dict
    model_id: str | None = None
    alert_id: int | None = None
    job_id: int | None = None
    rule: str | None = None


async def insert(conn: asyncpg.Connection, items: Sequence[NewNotification]) -> None:
    if not items:
        return
    await conn.executemany(
        """INSERT INTO notifications (target, event, idempotency_key, payload, model_id, alert_id, job_id, rule)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
           ON CONFLICT (idempotency_key) DO NOTHING""",
        [(n.target, n.event, n.idempotency_key, n.payload, n.model_id, n.alert_id, n.job_id, n.rule)
         for n in items],
    )


async def claim_due(conn: asyncpg.Connection, *, limit: int, lease_s: float) -> list[asyncpg.Record]:
    """Take up to `limit` due PENDING rows: count the attempt and lease the row for `lease_s`."""
    return await conn.fetch(
        """UPDATE notifications n
              SET attempts = n.attempts + 1, update_time = now(),
                  next_attempt_at = now() + make_interval(secs => $2)
            WHERE n.id IN (SELECT id FROM notifications
                            WHERE state = 'PENDING' AND next_attempt_at <= now()
                            ORDER BY next_attempt_at LIMIT $1
                            FOR UPDATE SKIP LOCKED)
        RETURNING n.*""",
        limit, lease_s,
    )


async def mark_delivered(conn: asyncpg.Connection, notification_id: int, attempt: int, status: int) -> bool:
    """The receiver accepted attempt `attempt`; False when the row moved on meanwhile (fenced)."""
    return await conn.fetchval(
        """UPDATE notifications
              SET state = 'DELIVERED', last_status = $3, last_error = '', delivered_time = now(),
                  update_time = now()
            WHERE id = $1 AND attempts = $2 AND state = 'PENDING'
        RETURNING true""",
        notification_id, attempt, status,
    ) or False


async def mark_failed(conn: asyncpg.Connection, notification_id: int, attempt: int, *, status: int | None,
                      error: str, retry_in_s: float | None) -> str | None:
    """Attempt `attempt` failed: due again in `retry_in_s`, or DEAD when that is None.
    Returns the new state, None when fenced."""
    return await conn.fetchval(
        """UPDATE notifications
              SET state = CASE WHEN $5::float8 IS NULL THEN 'DEAD' ELSE 'PENDING' END,
                  next_attempt_at = now() + make_interval(secs => coalesce($5::float8, 0)),
                  last_status = $3, last_error = $4, update_time = now()
            WHERE id = $1 AND attempts = $2 AND state = 'PENDING'
        RETURNING state""",
        notification_id, attempt, status, error, retry_in_s,
    )


async def retry(conn: asyncpg.Connection, notification_id: int) -> asyncpg.Record | None:
    """Send again from the first attempt, now: a dead letter, or any other row (a resend)."""
    return await conn.fetchrow(
        """UPDATE notifications
              SET state = 'PENDING', attempts = 0, next_attempt_at = now(), update_time = now(),
                  delivered_time = NULL
            WHERE id = $1
        RETURNING *""",
        notification_id,
    )


async def get(conn: asyncpg.Connection, notification_id: int) -> asyncpg.Record | None:
    return await conn.fetchrow("SELECT * FROM notifications WHERE id = $1", notification_id)


async def list_notifications(conn: asyncpg.Connection, *, state: str | None, before_id: int | None,
                             limit: int) -> list[asyncpg.Record]:
    """Newest first; keyset paging on id (`before_id` is the last id of the previous page)."""
    return await conn.fetch(
        """SELECT * FROM notifications
            WHERE ($1::text IS NULL OR state = $1) AND ($2::bigint IS NULL OR id < $2)
            ORDER BY id DESC LIMIT $3""",
        state, before_id, limit,
    )


async def rule_notifications_of_alert(conn: asyncpg.Connection, alert_id: int) -> list[asyncpg.Record]:
    """The (target, rule) pairs a rule's `notify` told about the alert: who to tell it is resolved."""
    return await conn.fetch(
        """SELECT DISTINCT target, rule, model_id FROM notifications
            WHERE alert_id = $1 AND event = 'alert.matched' ORDER BY target, rule""",
        alert_id,
    )


async def seconds_until_due(conn: asyncpg.Connection) -> float | None:
    """Seconds until the earliest PENDING row is due (0 when one is), None when none is pending."""
    return await conn.fetchval(
        """SELECT greatest(extract(epoch FROM min(next_attempt_at) - now()), 0)::float8
             FROM notifications WHERE state = 'PENDING'"""
    )
