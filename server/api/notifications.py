"""NotificationService: list the outbox and send a notification again. SQL in store/outbox.py.

Replies hold what was sent and how it went, never a target's URL or secret (those live only in the
server's configuration; the stored payload never had them).
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import asyncpg
import structlog

from closedloop.v1 import notify_pb2, notify_pb2_grpc

from ..errors import NotFound
from ..store import outbox
from . import paging
from .convert import timestamp
from .validation import Violations, check_id, check_page

log = structlog.get_logger(__name__)

STATE_TO_PROTO = {
    "PENDING": notify_pb2.NOTIFICATION_STATE_PENDING,
    "DELIVERED": notify_pb2.NOTIFICATION_STATE_DELIVERED,
    "DEAD": notify_pb2.NOTIFICATION_STATE_DEAD,
}
STATE_FROM_PROTO = {v: k for k, v in STATE_TO_PROTO.items()}


def notification_message(row: Mapping[str, Any]) -> notify_pb2.Notification:
    msg = notify_pb2.Notification(
        id=str(row["id"]), target=row["target"], event=row["event"], state=STATE_TO_PROTO[row["state"]],
        idempotency_key=row["idempotency_key"], summary=str((row["payload"] or {}).get("summary", "")),
        model_id=row["model_id"] or "", alert_id=str(row["alert_id"] or ""), job_id=str(row["job_id"] or ""),
        rule=row["rule"] or "", attempts=row["attempts"], last_status=row["last_status"] or 0,
        last_error=row["last_error"] or "")
    for field in ("create_time", "update_time", "delivered_time"):
        if row[field] is not None:
            getattr(msg, field).CopyFrom(timestamp(row[field]))
    if row["state"] == "PENDING":
        msg.next_attempt_time.CopyFrom(timestamp(row["next_attempt_at"]))
    return msg


class NotificationServicer(notify_pb2_grpc.NotificationServiceServicer):
    def __init__(self, pool: asyncpg.Pool, wake: Callable[[], None] | None = None) -> None:
        """`wake`: tells this process's delivery worker that a row is due now (None: no worker here;
        another replica's worker finds the row on its next look)."""
        self.pool = pool
        self.wake = wake

    async def ListNotifications(self, request, context):
        v = Violations()
        if request.state and request.state not in STATE_FROM_PROTO:
            v.add("state", "unknown notification state")
        limit = check_page(v, request.page_size, request.page_token)
        v.raise_if_any()
        filters = {"state": request.state}
        cursor = paging.decode(request.page_token, filters, {"id": paging.bigint})
        before = cursor["id"] if cursor is not None else None
        async with self.pool.acquire() as conn:
            rows = await outbox.list_notifications(conn, state=STATE_FROM_PROTO.get(request.state),
                                                   before_id=before, limit=limit + 1)
        page = rows[:limit]
        token = paging.encode({"id": page[-1]["id"]}, filters) if len(rows) > limit else ""
        return notify_pb2.ListNotificationsResponse(notifications=[notification_message(r) for r in page],
                                                    next_page_token=token)

    async def RetryNotification(self, request, context):
        v = Violations()
        notification_id = check_id(v, request.id, "id")
        v.raise_if_any()
        async with self.pool.acquire() as conn:
            row = await outbox.retry(conn, notification_id)
        if row is None:
            raise NotFound(f"notification {request.id} not found")
        log.info("notify.retry_requested", notification_id=row["id"], target=row["target"])
        if self.wake is not None:
            self.wake()
        return notification_message(row)
