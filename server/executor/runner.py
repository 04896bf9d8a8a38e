"""JobRunner: the worker side of the queue, inside the server's event loop.

One dispatcher claims as many jobs as there are free slots (one statement, SKIP LOCKED) and starts a
task per job; each task prepares the attempt, submits it to the backend, waits for it (or for an
abort: cancel, lost lease, timeout, shutdown) and records the outcome fenced by the lease token.
Around them:
- LISTEN on the jobs channel wakes the dispatcher at once; it also polls (and sleeps exactly until
  the next retry is due), so a lost notification only costs latency;
- a heartbeat renews every held lease in one statement and learns of cancellations and lost leases;
  the cancel channel makes CancelJob reach the running job without waiting for the next beat;
- a rescuer requeues (or fails) jobs whose lease expired because their worker or server died.

Everything the runner writes goes through store/queue.py; what a job does is a `JobKind` (job_kinds.py).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import secrets
import socket
import time
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import structlog

from .. import metrics
from ..db.pool import CONNECTION_ERRORS, transaction
from ..notify import events as notify_events
from ..store import jobs as job_store
from ..store import queue
from .backends import Backend, create_backend, is_worker_lost
from .errors import JobAbandoned, PermanentJobError
from .job_kinds import JobKind, TrainingKind, warm_up
from .source_config import DataSources

log = structlog.get_logger("closedloop.executor")

# What a loop of the runner survives and retries: the database unreachable, or a statement of it
# failing (a timeout, a conflict); either way the next round tries again.
DB_ERRORS = (*CONNECTION_ERRORS, asyncpg.PostgresError)


@dataclass
class _Running:
    job: asyncpg.Record
    token: str
    abort: asyncio.Event = field(default_factory=asyncio.Event)
    abort_reason: str | None = None
    future: concurrent.futures.Future | None = None
    claimed_at: float = field(default_factory=time.monotonic)

    @property
    def id(self) -> int:
        return self.job["id"]

    def request_abort(self, reason: str) -> None:
        if self.abort_reason is None:
            self.abort_reason = reason
            self.abort.set()


class _OwnConnection:
    """A connection of the runner's own, outside the shared pool, for its hottest loop (claims): no
    acquire/reset round trip per use. Reconnects after an error."""

    def __init__(self, database_url: str) -> None:
        self.database_url = database_url
        self._conn: asyncpg.Connection | None = None

    async def get(self) -> asyncpg.Connection:
        if self._conn is None or self._conn.is_closed():
            self._conn = await asyncpg.connect(self.database_url, timeout=10, command_timeout=60)
        return self._conn

    def drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None and not conn.is_closed():
            conn.terminate()

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                await conn.close(timeout=5)
            except DB_ERRORS:
                conn.terminate()


class JobRunner:
    def __init__(self, settings: Any, pool: asyncpg.Pool, database_url: str, *, kind: JobKind | None = None,
                 backend: Backend | None = None, slots: int | None = None, worker_id: str | None = None,
                 retry_base_s: float = 2.0, retry_cap_s: float = 300.0, poll_interval_s: float = 2.0,
                 warm_up: bool = True) -> None:
        self.settings = settings
        self.pool = pool
        self.database_url = database_url
        self.kind: JobKind = kind or TrainingKind(settings.data_dir, database_url,
                                                  DataSources.from_settings(settings))
        self._backend = backend
        self._owns_backend = backend is None
        self.slots = slots or (backend.slots if backend is not None else max(1, settings.workers))
        self.worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(2)}"
        self.lease_s = float(settings.job_lease)
        self.retry_base_s = retry_base_s
        self.retry_cap_s = retry_cap_s
        self.poll_interval_s = poll_interval_s
        # At most 3 s: the heartbeat is also how a cancellation arrives when its NOTIFY was lost.
        self.heartbeat_s = max(0.05, min(self.lease_s / 3, 3.0))
        self.rescue_s = max(0.1, min(self.lease_s / 2, 10.0))
        self._warm_up = warm_up
        self._running: dict[int, _Running] = {}
        self._job_tasks: set[asyncio.Task] = set()
        self._wake = asyncio.Event()
        self._stopping = False
        self._loops: list[asyncio.Task] = []
        self._listener: asyncpg.Connection | None = None
        self._claim_conn = _OwnConnection(database_url)
        self.log = log.bind(worker=self.worker_id)

    @property
    def backend(self) -> Backend:
        assert self._backend is not None, "JobRunner.start() first"
        return self._backend

    @property
    def running_job_ids(self) -> list[int]:
        return sorted(self._running)

    # -- lifecycle ---------------------------------------------------------------------------------

    async def start(self) -> None:
        if self._backend is None:
            self._backend = await asyncio.to_thread(create_backend, self.settings)
        if self._warm_up:
            # Start the worker processes now rather than under the first job; in the background,
            # so a server does not wait a few seconds for scikit-learn to import before it serves.
            for _ in range(self.slots):
                self._backend.submit(warm_up).add_done_callback(self._warmed_up)
        await self._listen()
        loop = asyncio.get_running_loop()
        self._loops = [loop.create_task(self._dispatch(), name="retrain-dispatch"),
                       loop.create_task(self._heartbeat(), name="retrain-heartbeat"),
                       loop.create_task(self._rescue(), name="retrain-rescue")]
        self.log.info("retrain.runner_started", backend=self._backend.name, slots=self.slots,
                      kind=self.kind.name, lease_s=self.lease_s)

    def _warmed_up(self, future: concurrent.futures.Future) -> None:
        if not future.cancelled() and future.exception() is not None:
            self.log.warning("retrain.warm_up_failed", error=repr(future.exception()))

    async def stop(self, grace_s: float = 0.0) -> None:
        """Stop claiming; after `grace_s`, hand the jobs still running back to the queue."""
        if self._stopping:
            return
        self._stopping = True
        self._wake.set()
        if self._loops:
            await asyncio.wait([self._loops[0]], timeout=10)  # the dispatcher finishes a claim in flight
        if self._job_tasks and grace_s > 0:
            await asyncio.wait(list(self._job_tasks), timeout=grace_s)
        for entry in list(self._running.values()):
            entry.request_abort("shutdown")
        if self._job_tasks:
            await asyncio.wait(list(self._job_tasks), timeout=30)
        for task in self._loops:
            task.cancel()
        await asyncio.gather(*self._loops, return_exceptions=True)
        if self._listener is not None:
            await self._close_listener()
        await self._claim_conn.close()
        if self._backend is not None and self._owns_backend:
            await asyncio.to_thread(self._backend.shutdown)
        self.log.info("retrain.runner_stopped")

    # -- notifications -----------------------------------------------------------------------------

    async def _listen(self) -> None:
        try:
            conn = await asyncpg.connect(self.database_url, timeout=10)
            await conn.add_listener(queue.JOBS_CHANNEL, self._on_jobs)
            await conn.add_listener(queue.CANCEL_CHANNEL, self._on_cancel)
            self._listener = conn
        except DB_ERRORS as exc:
            # Polling still finds every job; a notification only makes it faster.
            self.log.warning("retrain.listen_failed", error=str(exc) or type(exc).__name__)
            self._listener = None

    async def _close_listener(self) -> None:
        conn, self._listener = self._listener, None
        try:
            await conn.close(timeout=5)
        except DB_ERRORS:
            conn.terminate()

    def _on_jobs(self, *_: Any) -> None:
        self._wake.set()

    def _on_cancel(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        try:
            entry = self._running.get(int(payload))
        except ValueError:
            return
        if entry is not None:
            entry.request_abort("cancel")

    # -- dispatch ----------------------------------------------------------------------------------

    async def _dispatch(self) -> None:
        failures = 0
        while not self._stopping:
            self._wake.clear()
            free = self.slots - len(self._running)
            timeout = self.poll_interval_s
            if free > 0:
                try:
                    conn = await self._claim_conn.get()
                    jobs = await queue.claim(conn, worker=self.worker_id, lease_s=self.lease_s, limit=free)
                    if not jobs:
                        due = await queue.next_run_after(conn)
                        if due is not None:
                            timeout = min(timeout, due + 0.005)
                    failures = 0
                except DB_ERRORS as exc:
                    # A claim whose answer was lost may have committed: those jobs come back
                    # through the rescuer when their lease expires.
                    self._claim_conn.drop()
                    failures += 1
                    self.log.warning("retrain.claim_failed", error=str(exc) or type(exc).__name__)
                    await asyncio.sleep(min(0.1 * 2 ** failures, self.poll_interval_s))
                    continue
                for job in jobs:
                    self._start_job(job)
                if jobs:
                    continue  # more may be waiting; with the slots full now, the next round waits
            try:
                await asyncio.wait_for(self._wake.wait(), timeout)
            except asyncio.TimeoutError:
                pass

    def _start_job(self, job: asyncpg.Record) -> None:
        entry = _Running(job, str(job["lease_token"]))
        metrics.record_job_claimed(job)
        self._running[job["id"]] = entry
        task = asyncio.get_running_loop().create_task(self._run(entry), name=f"retrain-job-{job['id']}")
        self._job_tasks.add(task)
        task.add_done_callback(self._job_tasks.discard)

    # -- one attempt -------------------------------------------------------------------------------

    async def _run(self, entry: _Running) -> None:
        job = entry.job
        jlog = self.log.bind(job_id=job["id"], model_id=job["model_id"], attempt=job["attempt"])
        jlog.info("retrain.job_claimed", mode=job["mode"], priority=job["priority"])
        try:
            try:
                async with self.pool.acquire() as conn:
                    fn, payload = await self.kind.prepare(conn, job)
                entry.future = self.backend.submit(fn, payload)
            except Exception as exc:  # noqa: BLE001 - every failure of an attempt is recorded on the job
                await self._fail(entry, exc, jlog)
                return
            jlog.info("retrain.job_started", backend=self.backend.name, mode=job["mode"])
            outcome = await self._wait(entry)
            if isinstance(outcome, str):
                await self._aborted(entry, outcome, jlog)
            elif isinstance(outcome, BaseException):
                await self._fail(entry, outcome, jlog)
            else:
                await self._complete(entry, outcome, jlog)
        except Exception as exc:  # noqa: BLE001 - a bug here must not kill the dispatcher's slot
            jlog.exception("retrain.job_error", error=str(exc))
            try:
                await self._fail(entry, exc, jlog)
            except Exception:  # noqa: BLE001 - the lease will expire and the rescuer retries
                pass
        finally:
            self._running.pop(job["id"], None)
            self._wake.set()

    async def _wait(self, entry: _Running) -> Any:
        """The attempt's result, its exception, or the abort reason (a str)."""
        result = asyncio.wrap_future(entry.future)
        aborted = asyncio.ensure_future(entry.abort.wait())
        timeout = entry.job["timeout_s"] or float(self.settings.job_timeout)
        try:
            done, _ = await asyncio.wait({result, aborted}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            aborted.cancel()
        if result in done:
            # A finished attempt wins over an abort that raced it: _complete re-checks the fence
            # and a requested cancellation under the row lock anyway.
            exc = result.exception() if not result.cancelled() else concurrent.futures.CancelledError()
            if exc is None:
                return result.result()
            if isinstance(exc, JobAbandoned):
                return await self._why_abandoned(entry)
            return exc
        reason = entry.abort_reason or "timeout"
        # Stop the call (kill its process on the local backend); ignore what it may still raise.
        result.add_done_callback(lambda f: f.cancelled() or f.exception())
        self.backend.abort(entry.future)
        if reason == "timeout":
            return TimeoutError(f"attempt timed out after {timeout:g} s")
        return reason

    async def _why_abandoned(self, entry: _Running) -> str:
        """The attempt stopped itself because the fence refused its report: cancel, or lease lost."""
        try:
            async with self.pool.acquire() as conn:
                row = await queue.get(conn, entry.id)
        except DB_ERRORS:
            return "lease_lost"
        if row is not None and row["state"] == "RUNNING" and str(row["lease_token"]) == entry.token \
                and row["cancel_requested"]:
            return "cancel"
        return "lease_lost"

    async def _complete(self, entry: _Running, result: dict, jlog: Any) -> None:
        """The one completion path of every job kind: lock the row, check the lease and a requested
        cancellation, let the kind record its result, complete, write the feedback row; one transaction."""
        try:
            async with transaction(self.pool) as conn:
                owned = await queue.lock_owned(conn, entry.id, entry.token)
                if owned is None:
                    jlog.warning("retrain.completion_fenced", reason="lease lost before completion")
                    return
                if owned["cancel_requested"]:
                    row = await queue.finish_cancelled(conn, entry.id, entry.token)
                    await job_store.record_feedback(conn, row)
                    jlog.info("retrain.job_cancelled", when="finished as cancellation arrived")
                    return
                fields = await self.kind.record(conn, owned, result)
                row = await queue.complete(conn, entry.id, entry.token, **fields)
                await job_store.record_feedback(conn, row)
                await notify_events.record_job_outcome(conn, self.settings.notify, row)
        except Exception as exc:  # noqa: BLE001 - recording failed: the attempt failed
            await self._fail(entry, exc, jlog)
            return
        metrics.record_job_finished("succeeded", time.monotonic() - entry.claimed_at, bool(row["promoted"]))
        jlog.info("retrain.job_succeeded", promoted=row["promoted"], new_version=row["new_version"],
                  metric=row["metric"], champion=row["champion_metric"], challenger=row["challenger_metric"],
                  run_s=round(time.monotonic() - entry.claimed_at, 3))

    async def _fail(self, entry: _Running, exc: BaseException, jlog: Any) -> None:
        lost = is_worker_lost(exc)
        retryable = not isinstance(exc, PermanentJobError)
        error = f"attempt {entry.job['attempt']}: " + (
            f"worker process died ({type(exc).__name__})" if lost else f"{type(exc).__name__}: {exc}")
        if lost:
            jlog.warning("retrain.worker_lost", error=str(exc))
        async with transaction(self.pool) as conn:
            row = await queue.fail(conn, entry.id, entry.token, error, retry_base_s=self.retry_base_s,
                                   retry_cap_s=self.retry_cap_s, retryable=retryable)
            if row is None:
                jlog.warning("retrain.completion_fenced", reason="lease lost before failure was recorded")
                return
            if row["state"] == "FAILED":
                await job_store.record_feedback(conn, row)
                await notify_events.record_job_outcome(conn, self.settings.notify, row)
        metrics.record_job_finished("failed" if row["state"] == "FAILED" else "retry")
        if row["state"] == "FAILED":
            jlog.error("retrain.job_failed", error=error, attempts=row["attempt"], retryable=retryable)
        else:
            jlog.warning("retrain.job_retry", error=error, retry_in=round(row["retry_in_s"], 3),
                         next_attempt=row["attempt"] + 1)

    async def _aborted(self, entry: _Running, reason: str, jlog: Any) -> None:
        if reason == "lease_lost":
            jlog.warning("retrain.job_lease_lost")
            return
        async with transaction(self.pool) as conn:
            if reason == "cancel":
                row = await queue.finish_cancelled(conn, entry.id, entry.token)
                if row is not None:
                    await job_store.record_feedback(conn, row)
            else:  # shutdown
                row = await queue.release(conn, entry.id, entry.token)
        if row is None:
            jlog.warning("retrain.completion_fenced", reason=f"lease lost before {reason} was recorded")
        elif reason == "cancel":
            metrics.record_job_finished("cancelled")
            jlog.info("retrain.job_cancelled")
        else:
            metrics.record_job_finished("released")
            jlog.info("retrain.job_released")

    # -- leases ------------------------------------------------------------------------------------

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_s)
            held = [(e.id, e.token) for e in self._running.values() if e.abort_reason is None]
            if not held:
                continue
            try:
                async with self.pool.acquire() as conn:
                    alive = await queue.heartbeat(conn, held, self.lease_s)
            except DB_ERRORS as exc:
                self.log.warning("retrain.heartbeat_failed", error=str(exc) or type(exc).__name__)
                continue
            for job_id, token in held:
                entry = self._running.get(job_id)
                if entry is None or entry.token != token:
                    continue
                if job_id not in alive:
                    # Finished between the snapshot and the update, or really lost: only the latter
                    # is still waiting on its future.
                    if entry.future is not None and not entry.future.done():
                        entry.request_abort("lease_lost")
                elif alive[job_id]:
                    entry.request_abort("cancel")

    async def _rescue(self) -> None:
        while True:
            await asyncio.sleep(self.rescue_s)
            if self._listener is None or self._listener.is_closed():
                self._listener = None
                await self._listen()
            try:
                async with transaction(self.pool) as conn:
                    rows = await queue.rescue_expired(conn)
                    for row in rows:
                        if row["state"] != "QUEUED":
                            await job_store.record_feedback(conn, row)
                            await notify_events.record_job_outcome(conn, self.settings.notify, row)
            except Exception as exc:  # noqa: BLE001 - the next round retries
                self.log.warning("retrain.rescue_failed", error=str(exc) or type(exc).__name__)
                continue
            for row in rows:
                self.log.warning("retrain.job_rescued", job_id=row["id"], model_id=row["model_id"],
                                 state=row["state"], attempt=row["attempt"], error=row["error"])
