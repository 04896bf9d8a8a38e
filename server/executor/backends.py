"""Where job functions run: a concurrent.futures.Executor-shaped seam with two backends.

`submit(fn, *args) -> concurrent.futures.Future`, `abort(future)` (stop a running call: needed for
CancelJob, timeouts and a shutdown that hands jobs back) and `shutdown()`.

- LocalBackend: one single-process ProcessPoolExecutor per slot. One process per pool means a job
  can be stopped by killing exactly the process that runs it, and a crash (a job killed by the OOM
  killer or `kill -9`) breaks only that slot's pool, which is rebuilt, instead of failing every job
  that shared a pool with it. Processes start through the `forkserver`: forking the server process
  itself is unsafe once gRPC's core threads run in it. Every worker watches a "lifeline" pipe from
  the server and exits when the server is gone, even after a SIGKILL (see _exit_with_server).
- DaskBackend: `distributed.Client(address).get_executor(pure=False)`; pure=False because two jobs
  with identical arguments must both run, never be deduplicated into one result. On connecting it sets
  the scheduler's allowed-failures to 0 (see DASK_ALLOWED_FAILURES).

Job functions must be top-level and picklable (see job_kinds.py).
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import multiprocessing.connection
import os
import signal
import threading
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Callable, Protocol

import structlog

log = structlog.get_logger(__name__)

# Imported once in the forkserver so each new worker process starts with them loaded: a rebuilt
# slot (after a kill) is ready in milliseconds instead of re-importing scikit-learn.
PRELOAD = ["numpy", "pandas", "sklearn", "sklearn.linear_model", "sklearn.ensemble", "sklearn.metrics", "skops.io",
           "closedloop.server.executor.job_kinds", "closedloop.server.executor.trainer"]


class WorkerLost(Exception):
    """The process (or Dask worker) running a job died; the job's attempt failed through no fault of its own."""


class Backend(Protocol):
    name: str
    slots: int

    def submit(self, fn: Callable[..., Any], /, *args: Any) -> concurrent.futures.Future: ...

    def abort(self, future: concurrent.futures.Future) -> None: ...

    def shutdown(self) -> None: ...


def is_worker_lost(exc: BaseException) -> bool:
    """Whether an exception from a future means the process running it died."""
    if isinstance(exc, (BrokenProcessPool, WorkerLost)):
        return True
    # distributed.scheduler.KilledWorker, without importing dask when it is not used.
    return type(exc).__name__ == "KilledWorker"


class LocalBackend:
    name = "local"

    def __init__(self, processes: int, *, preload: list[str] | None = None) -> None:
        if processes < 1:
            raise ValueError("the local backend needs at least one process")
        self.slots = processes
        self._context = multiprocessing.get_context("forkserver")
        self._context.set_forkserver_preload(PRELOAD if preload is None else preload)
        # Only this process holds the write end (pipe fds are not inherited across exec, the
        # forkserver gets an explicit list of fds, and the workers only the read end), so it closes
        # exactly when this process ends or shuts the backend down.
        self._lifeline, self._lifeline_w = self._context.Pipe(duplex=False)
        self._lock = threading.Lock()
        self._pools: list[concurrent.futures.ProcessPoolExecutor] = [self._new_pool() for _ in range(processes)]
        self._busy = [0] * processes
        self._where: dict[concurrent.futures.Future, int] = {}
        self._closed = False

    def _new_pool(self) -> concurrent.futures.ProcessPoolExecutor:
        return concurrent.futures.ProcessPoolExecutor(max_workers=1, mp_context=self._context,
                                                      initializer=_exit_with_server, initargs=(self._lifeline,))

    def submit(self, fn: Callable[..., Any], /, *args: Any) -> concurrent.futures.Future:
        with self._lock:
            if self._closed:
                raise RuntimeError("backend is shut down")
            slot = min(range(self.slots), key=self._busy.__getitem__)
            try:
                future = self._pools[slot].submit(fn, *args)
            except BrokenProcessPool:
                self._rebuild(slot)
                future = self._pools[slot].submit(fn, *args)
            self._busy[slot] += 1
            self._where[future] = slot
        future.add_done_callback(self._done)
        return future

    def _done(self, future: concurrent.futures.Future) -> None:
        with self._lock:
            slot = self._where.pop(future, None)
            if slot is None:
                return
            self._busy[slot] -= 1
            exc = None if future.cancelled() else future.exception()
            if isinstance(exc, BrokenProcessPool):
                self._rebuild(slot)

    def _rebuild(self, slot: int) -> None:
        # Called with the lock held. The broken pool's management thread has already failed its
        # futures; dropping it and starting a fresh one is all that is left to do.
        broken = self._pools[slot]
        if self._closed:
            return
        self._pools[slot] = self._new_pool()
        broken.shutdown(wait=False, cancel_futures=True)
        log.warning("retrain.pool_rebuilt", slot=slot)

    def pids(self) -> list[int]:
        """PIDs of the live worker processes (for tests and diagnostics)."""
        with self._lock:
            return [pid for pool in self._pools for pid in _pool_pids(pool)]

    def abort(self, future: concurrent.futures.Future) -> None:
        """Stop the call: cancel it if it has not started, else kill the process running it.

        Killing breaks only this slot's pool; the future fails with BrokenProcessPool and the pool is
        rebuilt by the done-callback.
        """
        if future.cancel():
            return
        with self._lock:
            slot = self._where.get(future)
            pids = _pool_pids(self._pools[slot]) if slot is not None else []
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def shutdown(self) -> None:
        with self._lock:
            self._closed = True
            pools = list(self._pools)
        for pool in pools:
            pids = _pool_pids(pool)
            pool.shutdown(wait=False, cancel_futures=True)
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        self._lifeline_w.close()  # a worker that escaped the kill above still ends
        self._lifeline.close()


def _exit_with_server(lifeline: multiprocessing.connection.Connection) -> None:
    """Worker initializer: end this worker process when the server that owns its pool is gone.

    Without it, a SIGKILLed server leaves its pool running for ever. A pool worker learns of its
    parent's end only from its call queue, whose write end it holds itself, so it would wait on it
    for ever; and it holds the forkserver's "alive" pipe (every forkserver child does, to be able
    to start processes of its own), so the forkserver, which exits when that pipe closes, would wait
    with it, and so would the resource tracker, which exits when the last of them has closed its
    pipe. Nobody writes to the lifeline: it becomes readable (end of file) when its write end, held
    by the server alone, closes, which happens however the server ends.
    """
    threading.Thread(target=_wait_for_eof_then_exit, args=(lifeline,), name="server-lifeline", daemon=True).start()


def _wait_for_eof_then_exit(lifeline: multiprocessing.connection.Connection) -> None:
    try:
        lifeline.poll(None)
    except OSError:
        pass
    os._exit(1)  # the job's result has nowhere to go; its lease expires and another runner retries it


def _pool_pids(pool: concurrent.futures.ProcessPoolExecutor) -> list[int]:
    # ProcessPoolExecutor keeps its processes in `_processes` (pid -> Process) on every Python since
    # 3.2; Python 3.14 adds public terminate_workers(), which we do not have on 3.11.
    processes = getattr(pool, "_processes", None) or {}
    return [pid for pid, p in list(processes.items()) if p.is_alive()]


# `distributed.scheduler.allowed-failures`: how many workers may die running one task before the
# scheduler gives up on it with KilledWorker (Dask's default: 3, so a task is run up to 4 times).
# The runner owns retries: a lost worker counts as a failed attempt (max_attempts, backoff, the
# attempt number in the job row, a fresh lease for the next try). With Dask's own re-runs on top,
# a job that kills its worker (out of memory on a too large data window) would take down 4 workers
# per attempt, 12 in all, while the job row showed one attempt. 0 hands the first loss to the runner.
DASK_ALLOWED_FAILURES = 0


def _set_allowed_failures(dask_scheduler: Any, allowed: int) -> int:
    # Runs inside the scheduler (Client.run_on_scheduler): the setting is the scheduler's, read from
    # its own configuration at start, so a client-side dask.config.set would not reach it.
    previous = dask_scheduler.allowed_failures
    dask_scheduler.allowed_failures = allowed
    return previous


class DaskBackend:
    name = "dask"

    def __init__(self, address: str, slots: int) -> None:
        import distributed

        self.slots = max(1, slots)
        self._client = distributed.Client(address, set_as_default=False, timeout="15s")
        previous = self._client.run_on_scheduler(_set_allowed_failures, allowed=DASK_ALLOWED_FAILURES)
        if previous != DASK_ALLOWED_FAILURES:
            log.info("retrain.dask_allowed_failures", previous=previous, now=DASK_ALLOWED_FAILURES)
        self._executor = self._client.get_executor(pure=False)

    def submit(self, fn: Callable[..., Any], /, *args: Any) -> concurrent.futures.Future:
        return self._executor.submit(fn, *args)

    def abort(self, future: concurrent.futures.Future) -> None:
        # Dask cannot interrupt a running task; cancel it at the scheduler, and the task itself
        # stops at its next progress report, which the lease fencing refuses (job_kinds.Reporter).
        future.cancel()

    def shutdown(self) -> None:
        try:
            self._executor.shutdown(wait=False)
        finally:
            self._client.close()


def create_backend(settings: Any) -> Backend:
    """The backend named by settings.executor ("local" or "dask")."""
    workers = max(1, settings.workers)
    if settings.executor == "dask":
        return DaskBackend(settings.dask_scheduler, workers)
    return LocalBackend(workers)
