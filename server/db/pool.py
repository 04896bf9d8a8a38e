"""asyncpg pool creation with start-up retries, bounded waits, and the one place driver errors become ours.

A hung database (a frozen host, a stopped postmaster, a silent network) must not hold a call for the
client's whole deadline: with `wait_timeout` set, acquiring a connection, every command and giving the
connection back each wait at most that long, and a connection whose command timed out is dropped
rather than waited for. The timeout surfaces as asyncio.TimeoutError, which `database_error` maps to
UNAVAILABLE, so the client retries (elsewhere, or later).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from typing import AsyncIterator

import asyncpg
import structlog

from ..errors import AlreadyExists, ClosedLoopError, FailedPrecondition, StartupError, Unavailable

log = structlog.get_logger(__name__)

# Errors that mean "the database is not reachable right now", as opposed to a bad query.
CONNECTION_ERRORS = (
    OSError,
    ConnectionError,
    asyncio.TimeoutError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.ConnectionDoesNotExistError,
    asyncpg.exceptions.InterfaceError,
    asyncpg.exceptions.TooManyConnectionsError,
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.PostgresConnectionError,
)


def mask_password(url: str) -> str:
    """postgresql://user:secret@host/db -> postgresql://user:***@host/db"""
    return re.sub(r"(://[^:/@]+:)[^@]*@", r"\1***@", url)


async def _init_connection(conn: asyncpg.Connection) -> None:
    # jsonb columns come and go as Python objects.
    import json

    await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


async def _reset_connection(conn: asyncpg.Connection) -> None:
    # asyncpg's default reset runs "SELECT pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL"
    # on every release: a round trip per batch on the ingest path. We keep no session state on pool
    # connections (LISTEN uses its own connection; the migration lock is released explicitly), so
    # only an unfinished transaction needs undoing.
    if conn.is_in_transaction():
        await conn.execute("ROLLBACK")


class DatabaseUnreachable(ConnectionError):
    """The pool refuses to wait: the database is known not to answer (see BoundedPool.unreachable)."""


class BoundedPool(asyncpg.Pool):
    """A pool whose acquire() waits at most `wait_timeout` seconds unless told otherwise.

    asyncpg applies an acquire's timeout to the matching release too, so giving a connection back is
    bounded as well. A connection still cancelling a timed-out command is terminated on release:
    waiting for the cancel would need the database that just failed to answer. While `unreachable`
    is set (by whoever watches the database, db/listener.py) acquire fails at once instead of
    spending the caller's time on a database known to be down."""

    def __init__(self, *args, wait_timeout: float | None = None, **kwargs) -> None:
        self.wait_timeout = wait_timeout
        self.unreachable = False
        super().__init__(*args, **kwargs)

    def acquire(self, *, timeout: float | None = None):
        return super().acquire(timeout=self.wait_timeout if timeout is None else timeout)

    async def _acquire(self, timeout):
        if self.unreachable:
            raise DatabaseUnreachable("the database does not answer (health probe)")
        return await super()._acquire(timeout)

    async def release(self, connection, *, timeout: float | None = None) -> None:
        raw = connection._con  # None once released
        if self.wait_timeout is not None and raw is not None and raw._protocol._is_cancelling():
            # Terminating hands the connection's slot back to the pool (asyncpg's close hook).
            connection._detach()
            raw.terminate()
            return
        await super().release(connection, timeout=timeout)


async def create_pool(url: str, *, min_size: int = 2, max_size: int = 16, connect_timeout: float = 15.0,
                      command_timeout: float | None = 60.0, wait_timeout: float | None = None) -> asyncpg.Pool:
    """Connect, retrying with backoff for up to `connect_timeout` seconds; StartupError after that.

    `wait_timeout` bounds every later wait on the database (see the module docstring); it also
    replaces `command_timeout` when given."""
    deadline = time.monotonic() + connect_timeout
    delay = 0.1
    last: Exception | None = None
    while True:
        try:
            return await BoundedPool(
                url, min_size=min_size, max_size=max_size, max_queries=50000, max_inactive_connection_lifetime=300.0,
                setup=None, init=_init_connection, reset=_reset_connection, loop=None,
                connection_class=asyncpg.Connection, record_class=asyncpg.Record,
                command_timeout=wait_timeout if wait_timeout is not None else command_timeout,
                timeout=min(5.0, connect_timeout) if wait_timeout is None else min(wait_timeout, connect_timeout),
                wait_timeout=wait_timeout,
            )
        except (*CONNECTION_ERRORS, asyncpg.exceptions.InvalidCatalogNameError,
                asyncpg.exceptions.InvalidPasswordError) as exc:
            last = exc
            remaining = deadline - time.monotonic()
            if remaining <= 0 or isinstance(exc, (asyncpg.exceptions.InvalidCatalogNameError,
                                                  asyncpg.exceptions.InvalidPasswordError)):
                break
            log.warning("db.connect_retry", url=mask_password(url), error=str(exc) or type(exc).__name__,
                        retry_in=round(delay, 2))
            await asyncio.sleep(min(delay, remaining))
            delay = min(delay * 2, 2.0)
    reason = str(last) or type(last).__name__
    raise StartupError(f"cannot connect to the database at {mask_password(url)}: {reason}")


def database_error(exc: BaseException) -> ClosedLoopError | None:
    """Our error for a driver error nobody handled (UNAVAILABLE etc.), or None when `exc` is not one
    we can name. The server interceptor calls this once for every RPC, so handlers need not."""
    if isinstance(exc, CONNECTION_ERRORS):
        return Unavailable(f"database unavailable: {exc or type(exc).__name__}")
    if isinstance(exc, asyncpg.exceptions.UniqueViolationError):
        return AlreadyExists(f"already exists: {exc.detail or exc}")
    if isinstance(exc, asyncpg.exceptions.ForeignKeyViolationError):
        return FailedPrecondition(f"refers to something that does not exist: {exc.detail or exc}")
    return None


@contextlib.asynccontextmanager
async def transaction(pool: asyncpg.Pool) -> AsyncIterator[asyncpg.Connection]:
    """A connection inside a transaction."""
    async with pool.acquire() as conn:
        async with conn.transaction():
            yield conn


@contextlib.asynccontextmanager
async def command_connection(database_url: str | None, data_dir, connect_timeout: float
                             ) -> AsyncIterator[asyncpg.Connection]:
    """One connection for a CLI command that runs without a server: to `database_url`, or to the
    embedded PostgreSQL in `data_dir`, started for the command and stopped after it."""
    from .embedded import EmbeddedPostgres

    embedded = None
    if database_url is None:
        embedded = EmbeddedPostgres(data_dir)
        database_url = await embedded.start()
    try:
        pool = await create_pool(database_url, min_size=1, max_size=1, connect_timeout=connect_timeout)
        try:
            async with pool.acquire() as conn:
                yield conn
        finally:
            await pool.close()
    finally:
        if embedded is not None:
            await embedded.stop()
