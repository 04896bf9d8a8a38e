"""The LISTEN connection: receives other replicas' NOTIFYs and tells whether the database answers.

A LISTEN lives on one session, so it has a connection of its own, and that connection can die (the
database restarted, the network was cut) or hang (a frozen host). `DatabaseWatch` keeps it alive:
every `interval` seconds it runs a trivial query bounded by `timeout`; when that fails, or the server
closes the connection, it reports the database unreachable, drops the connection and reconnects with
backoff. NOTIFYs sent while nobody listened are lost, so after every reconnect `on_reconnect` runs to
re-read whatever they could have carried; only then is the database reported reachable again.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Awaitable, Callable, Mapping

import asyncpg
import structlog

from .pool import mask_password

log = structlog.get_logger(__name__)

MAX_BACKOFF_S = 5.0


class DatabaseWatch:
    def __init__(self, url: str, channels: Mapping[str, Callable[[str], None]], *,
                 on_reconnect: Callable[[], Awaitable[None]], on_reachable: Callable[[bool], Awaitable[None]],
                 interval: float = 1.0, timeout: float = 5.0) -> None:
        self.url = url
        self.channels = dict(channels)
        self.on_reconnect = on_reconnect
        self.on_reachable = on_reachable
        self.interval = interval
        self.timeout = timeout
        self.reachable = True
        self.reconnects = 0  # successful reconnects since start (for logs and tests)
        self._conn: asyncpg.Connection | None = None
        self._lost = asyncio.Event()
        self._task: asyncio.Task | None = None

    async def start(self) -> None:
        """Connect once (the pool just did, so the database is there) and start watching."""
        self._conn = await self._connect()
        self._task = asyncio.create_task(self._run(), name="database-watch")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        if self._conn is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._conn.close(), self.timeout)
            self._conn.terminate()
            self._conn = None

    async def _connect(self) -> asyncpg.Connection:
        conn = await asyncpg.connect(self.url, timeout=self.timeout, command_timeout=self.timeout)
        try:
            conn.add_termination_listener(self._on_terminated)
            for channel, handler in self.channels.items():
                await conn.add_listener(channel, lambda _c, _pid, _ch, payload, handler=handler: handler(payload))
        except BaseException:
            conn.terminate()
            raise
        return conn

    def _on_terminated(self, conn: asyncpg.Connection) -> None:
        if conn is self._conn:  # not the one we dropped ourselves
            self._lost.set()

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._lost.wait(), self.interval)
            if not self._lost.is_set():
                try:
                    await self._conn.fetchval("SELECT 1", timeout=self.timeout)
                    continue
                except Exception as exc:  # noqa: BLE001 - whatever the reason, the database did not answer
                    log.warning("db.unreachable", error=str(exc) or type(exc).__name__)
            else:
                log.warning("db.listen_connection_lost")
            await self._report(False)
            old, self._conn = self._conn, None
            if old is not None:
                old.terminate()
            await self._reconnect()
            await self._report(True)

    async def _reconnect(self) -> None:
        delay = 0.1
        while True:
            self._lost.clear()
            try:
                self._conn = await self._connect()
                await self.on_reconnect()
            except Exception as exc:  # noqa: BLE001 - keep trying; the operator sees the warnings
                log.warning("db.reconnect_failed", url=mask_password(self.url), error=str(exc) or type(exc).__name__,
                            retry_in=round(delay, 2))
                if self._conn is not None:
                    old, self._conn = self._conn, None
                    old.terminate()
                await asyncio.sleep(delay)
                delay = min(delay * 2, MAX_BACKOFF_S)
                continue
            self.reconnects += 1
            log.info("db.listen_reconnected", reconnects=self.reconnects)
            return

    async def _report(self, reachable: bool) -> None:
        if reachable != self.reachable:
            self.reachable = reachable
            await self.on_reachable(reachable)
