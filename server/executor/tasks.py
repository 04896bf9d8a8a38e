"""The functions a backend runs, in a worker process (local pool) or on a Dask worker.

Top-level and picklable: the backends pickle them by reference. Each takes one plain-dict payload and
returns a plain dict; exceptions travel back pickled.

`Reporter` is the attempt's line back to the queue: progress and the process id go straight into
PostgreSQL, fenced by the attempt's lease token. When the fence refuses (the lease was lost or the
job is being cancelled) the attempt stops at its next report instead of finishing work nobody will
keep. That works the same on both backends, because a Dask worker may be on another host.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time


class JobAbandoned(Exception):
    """The attempt no longer holds its job (lease lost, or cancellation requested)."""


class PermanentJobError(Exception):
    """Retrying cannot help (a bad training spec, an unusable data source): FAILED at once."""


class Reporter:
    """Progress of one attempt, written to retrain_jobs by the process that runs it."""

    def __init__(self, database_url: str | None, job_id: int, token: str) -> None:
        self.database_url = database_url
        self.job_id = job_id
        self.token = token
        self._loop: asyncio.AbstractEventLoop | None = None
        self._conn = None
        self._sent_pid = False

    def __call__(self, progress: float, message: str) -> None:
        if not self.database_url:
            return
        from . import queue

        if self._loop is None:
            import asyncpg

            self._loop = asyncio.new_event_loop()
            self._conn = self._loop.run_until_complete(asyncpg.connect(self.database_url, timeout=10))
        pid = host = None
        if not self._sent_pid:
            pid, host = os.getpid(), socket.gethostname()
        owned = self._loop.run_until_complete(
            queue.report_progress(self._conn, self.job_id, self.token, progress, message, pid, host)
        )
        self._sent_pid = True
        if not owned:
            raise JobAbandoned(f"job {self.job_id} is no longer held by this attempt")

    def close(self) -> None:
        if self._loop is not None:
            try:
                self._loop.run_until_complete(self._conn.close(timeout=5))
            except Exception:  # noqa: BLE001 - closing a connection we are dropping anyway
                pass
            self._loop.close()
            self._loop = None


def noop(payload: dict) -> dict:
    """Does nothing: measures the queue's own overhead (bench) and its exactly-once-ness (tests).

    `started` (wall clock) lets the benchmark measure enqueue -> start across processes.
    """
    return {"job_id": payload.get("job_id"), "started": time.time()}


def probe(payload: dict) -> dict:
    """A job kind for tests of the queue itself: records each run, may sleep or fail.

    payload: job_id, attempt, token, database_url, and from the job's reason (JSON):
    log (a file that gets one "job_id attempt pid" line per run), sleep (seconds, in 0.05 s steps
    with a progress report each, so a cancelled or lost attempt stops), fail (an error message).
    """
    options = payload.get("options") or {}
    if options.get("log"):
        # O_APPEND writes of one short line are atomic, so concurrent runners can share the file.
        with open(options["log"], "a", encoding="utf-8") as fh:
            fh.write(f"{payload['job_id']} {payload['attempt']} {os.getpid()}\n")
    report = Reporter(payload.get("database_url"), payload["job_id"], payload["token"])
    try:
        if options.get("report", True):
            report(0.1, "probing")
        deadline = time.monotonic() + float(options.get("sleep", 0))
        while time.monotonic() < deadline:
            time.sleep(0.05)
            if options.get("report", True):
                report(0.5, "sleeping")
        if options.get("fail"):
            if options.get("permanent"):
                raise PermanentJobError(str(options["fail"]))
            raise RuntimeError(str(options["fail"]))
    finally:
        report.close()
    return {"job_id": payload["job_id"], "pid": os.getpid()}


def train(payload: dict) -> dict:
    """One retraining attempt of the built-in scikit-learn trainer (see trainer.py)."""
    from .trainer import run_training

    report = Reporter(payload.get("database_url"), payload["job_id"], payload["token"])
    try:
        return run_training(payload, report)
    finally:
        report.close()


def warm_up() -> int:
    """Submitted once per slot at start so the first real job does not pay for process start."""
    return os.getpid()
