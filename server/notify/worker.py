"""The delivery worker: posts due outbox rows to their targets, at least once.

Every server that runs workers runs one. A round claims due rows (store.outbox.claim_due: SKIP
LOCKED, so replicas share the outbox, and a lease, so a row whose worker died is claimed again),
posts them concurrently with aiohttp, and records each result fenced by its attempt number:

- 2xx: DELIVERED.
- a network error, a timeout, 408, 429 or 5xx: PENDING again after an exponential backoff
  (target.backoff_initial doubling per attempt, capped at target.backoff_max, with +-10 % jitter
  so replicas do not retry in step), or DEAD once target.max_attempts attempts failed.
- any other status (the receiver refused the request itself; sending it again will not help), or
  a target no longer configured: DEAD at once.

DEAD rows stay until `closedloop notifications retry ID` sends them again. Errors recorded and
logged name the target, never its URL or secret (a Slack URL carries its token; see `_redact`).
`outcomes` counts deliveries per (target, outcome) for the metrics endpoint; `on_outcome`, when
given, is called with each (target, outcome), outcome one of delivered, retry, dead.
"""

from __future__ import annotations

import asyncio
import collections
import random
from typing import Callable
from urllib.parse import urlsplit

import aiohttp
import asyncpg
import structlog

from ..config import NotifySettings, NotifyTarget
from ..db.pool import CONNECTION_ERRORS
from ..store import outbox
from .formats import render

log = structlog.get_logger(__name__)

RETRYABLE_STATUS = {408, 429}
BATCH = 16  # rows claimed per round


def backoff_s(target: NotifyTarget, attempt: int) -> float:
    """Seconds to wait after failed attempt number `attempt` (1-based)."""
    delay = min(target.backoff_max, target.backoff_initial * 2 ** (attempt - 1))
    return delay * random.uniform(0.9, 1.1)


def _redact(text: str, target: NotifyTarget) -> str:
    """`text` with the target's URL (and its path and query, where tokens live) and secret blanked."""
    parts = urlsplit(target.url)
    for secret in (target.url, target.secret, parts.path + ("?" + parts.query if parts.query else ""), parts.query):
        if secret and len(secret) > 1:
            text = text.replace(secret, "***")
    return text


class DeliveryWorker:
    def __init__(self, pool: asyncpg.Pool, settings: NotifySettings, *,
                 on_outcome: Callable[[str, str], None] | None = None) -> None:
        self.pool = pool
        self.settings = settings
        self.on_outcome = on_outcome
        self.outcomes: collections.Counter[tuple[str, str]] = collections.Counter()
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._session: aiohttp.ClientSession | None = None
        # A claimed row's lease: longer than its request may take, so no one else claims it meanwhile.
        self.lease_s = max((t.timeout for t in settings.targets.values()), default=10.0) + 30.0

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(raise_for_status=False)
        self._task = asyncio.create_task(self._loop(), name="notify-delivery")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        if self._session is not None:
            await self._session.close()
            self._session = None

    def wake(self) -> None:
        """Look for due rows now (a retry was requested in this process)."""
        self._wake.set()

    async def _loop(self) -> None:
        while True:
            try:
                delivered = await self.deliver_due()
                wait = 0.0 if delivered else await self._idle_wait()
            except CONNECTION_ERRORS as exc:
                log.warning("notify.database_unavailable", error=type(exc).__name__)
                wait = self.settings.poll_interval
            except Exception:  # noqa: BLE001 - a bug: logged, and the loop keeps delivering
                log.exception("notify.round_failed")
                wait = self.settings.poll_interval
            if wait > 0:
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(), wait)
                except asyncio.TimeoutError:
                    pass

    async def _idle_wait(self) -> float:
        async with self.pool.acquire() as conn:
            due_in = await outbox.seconds_until_due(conn)
        return self.settings.poll_interval if due_in is None else min(due_in, self.settings.poll_interval)

    async def deliver_due(self) -> int:
        """One round: claim due rows and deliver them; returns how many were claimed."""
        async with self.pool.acquire() as conn:
            rows = await outbox.claim_due(conn, limit=BATCH, lease_s=self.lease_s)
        results = await asyncio.gather(*(self._deliver(row) for row in rows), return_exceptions=True)
        for row, result in zip(rows, results):
            if isinstance(result, Exception):  # e.g. the database went away: the lease brings it back
                log.warning("notify.result_not_recorded", notification_id=row["id"], target=row["target"],
                            error=type(result).__name__)
        return len(rows)

    async def _deliver(self, row) -> None:
        nlog = log.bind(notification_id=row["id"], target=row["target"], notify_event=row["event"],
                        attempt=row["attempts"])
        target = self.settings.targets.get(row["target"])
        if target is None:
            await self._failed(row, None, None, f"target {row['target']!r} is not configured", nlog, final=True)
            return
        status, error = await self._post(target, row)
        if status is not None and 200 <= status < 300:
            async with self.pool.acquire() as conn:
                recorded = await outbox.mark_delivered(conn, row["id"], row["attempts"], status)
            if recorded:
                self._count(row["target"], "delivered")
                nlog.info("notify.delivered", status=status)
            return
        refused = status is not None and status < 500 and status not in RETRYABLE_STATUS
        if refused:
            error = f"HTTP {status}: the receiver refused the request (not retried)"
        await self._failed(row, target, status, error, nlog, final=refused or row["attempts"] >= target.max_attempts)

    async def _post(self, target: NotifyTarget, row) -> tuple[int | None, str]:
        request = render(target, row)
        try:
            async with self._session.post(target.url, data=request.body, headers=request.headers,
                                          timeout=aiohttp.ClientTimeout(total=target.timeout),
                                          allow_redirects=False) as response:
                await response.read()
                return response.status, f"HTTP {response.status}"
        except asyncio.TimeoutError:
            return None, f"no answer within {target.timeout:g} s"
        except (aiohttp.ClientError, OSError, ValueError) as exc:
            return None, _redact(f"{type(exc).__name__}: {exc}", target)

    async def _failed(self, row, target: NotifyTarget | None, status: int | None, error: str, nlog,
                      *, final: bool) -> None:
        retry_in = None if final or target is None else backoff_s(target, row["attempts"])
        async with self.pool.acquire() as conn:
            state = await outbox.mark_failed(conn, row["id"], row["attempts"], status=status, error=error,
                                             retry_in_s=retry_in)
        if state == "DEAD":
            self._count(row["target"], "dead")
            nlog.error("notify.dead_lettered", error=error, status=status)
        elif state == "PENDING":
            self._count(row["target"], "retry")
            nlog.warning("notify.retry", error=error, status=status, retry_in=round(retry_in, 3))

    def _count(self, target: str, outcome: str) -> None:
        self.outcomes[(target, outcome)] += 1
        if self.on_outcome is not None:
            self.on_outcome(target, outcome)
