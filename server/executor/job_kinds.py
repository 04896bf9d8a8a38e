"""The job kinds: what a retrain_jobs row makes the executor do, from both ends.

The runner (runner.py) is generic: claim, lease, run, fence, retry. A `JobKind` supplies the rest:
- `prepare(conn, job)` -> (function, payload), in the server: read what the attempt needs;
- the function, run by a backend in a worker process (local pool) or on a Dask worker: top-level
  and picklable (the backends pickle it by reference), one plain-dict payload in, a plain dict out;
  exceptions travel back pickled;
- `record(conn, job, result)` -> fields for store.queue.complete, in the server: write what the
  attempt produced, inside the transaction that completes the job, after the lease was verified,
  so only the attempt that still holds the job leaves anything behind.

TrainingKind is the real one (the function is `train`, around trainer.run_training). NoopKind and
ProbeKind run estimator-free functions through exactly the same path as a retrain (claim, prepare
on a pool connection, backend, completion in a transaction that locks the row and checks the
lease): the benchmark measures the queue's overhead with them, and the reliability tests count
executions with them, so both measure the code a real retrain runs.

`Reporter` is an attempt's line back to the queue: progress and the process id go straight into
PostgreSQL, fenced by the attempt's lease token. When the fence refuses (the lease was lost or the
job is being cancelled) the attempt stops at its next report instead of finishing work nobody will
keep. That works the same on both backends, because a Dask worker may be on another host.
"""

from __future__ import annotations

import asyncio
import json
import os
import pathlib
import socket
import time
from typing import Any, Callable, Protocol

import asyncpg
import structlog

from ..store import jobs as job_store
from ..store import monitoring as monitoring_store
from ..store import queue
from ..store import versions as version_store
from . import artifacts
from .errors import JobAbandoned, PermanentJobError
from .source_config import DataSources

log = structlog.get_logger("closedloop.executor")


# -- in the worker process ---------------------------------------------------------------------------

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
        if self._loop is None:
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
    from .trainer import run_training  # the training stack loads in worker processes only

    report = Reporter(payload.get("database_url"), payload["job_id"], payload["token"])
    try:
        return run_training(payload, report)
    finally:
        report.close()


def warm_up() -> int:
    """Submitted once per slot at start so the first real job does not pay for process start."""
    return os.getpid()


# -- in the server ----------------------------------------------------------------------------------

class JobKind(Protocol):
    name: str

    async def prepare(self, conn: asyncpg.Connection, job: asyncpg.Record) -> tuple[Callable[[dict], dict], dict]: ...

    async def record(self, conn: asyncpg.Connection, job: asyncpg.Record, result: dict) -> dict: ...


def _attempt_payload(job: asyncpg.Record, database_url: str | None) -> dict:
    return {"job_id": job["id"], "attempt": job["attempt"], "token": str(job["lease_token"]),
            "database_url": database_url}


class TrainingKind:
    """Retrain the job's model with the built-in scikit-learn trainer; version and promote."""

    name = "train"

    def __init__(self, data_dir: str | pathlib.Path, database_url: str | None,
                 sources: DataSources | None = None) -> None:
        self.data_dir = pathlib.Path(data_dir)
        self.database_url = database_url
        # What specs may read (the operator's configuration); none configured: synthetic data only.
        self.sources = sources or DataSources()

    async def prepare(self, conn: asyncpg.Connection, job: asyncpg.Record) -> tuple[Callable[[dict], dict], dict]:
        spec = await job_store.load_model_spec(conn, job["model_id"])
        if spec is None:
            raise PermanentJobError(f"model {job['model_id']!r} is not registered")
        champion = None
        current = await version_store.current_version_row(conn, job["model_id"])
        if current is not None:
            data = await asyncio.to_thread(artifacts.read, current["artifact_path"], current["artifact_sha256"])
            champion = {"version": current["version"], "artifact": data, "sha256": current["artifact_sha256"],
                        "data_end": current["data_end"]}
        payload = _attempt_payload(job, self.database_url)
        payload.update(
            model_id=job["model_id"], mode=job["mode"], spec=spec.training, metric=spec.metric,
            margin=spec.promotion_margin, champion=champion, sources=self.sources.only_for(spec.training),
            # PostgreSQL reports the session's role to every client: a SQL source must not share it.
            service_role=conn.get_settings().session_authorization,
            epoch=await version_store.latest_version_number(conn, job["model_id"]),
        )
        return train, payload

    async def record(self, conn: asyncpg.Connection, job: asyncpg.Record, result: dict) -> dict:
        model_id = job["model_id"]
        model = await version_store.lock_model(conn, model_id)
        if model is None:
            raise PermanentJobError(f"model {model_id!r} was removed while it trained")
        version = await version_store.latest_version_number(conn, model_id) + 1
        # Promotion was judged against the champion the attempt started from; if a rollback changed
        # the current version meanwhile, that judgement no longer holds.
        promote = bool(result["promote"]) and model["current_version"] == result["champion_version"]
        path, sha = await asyncio.to_thread(artifacts.save, self.data_dir, model_id, version, result["artifact"])
        if sha != result["sha256"]:
            raise RuntimeError("artifact digest changed between the worker and the server")
        await version_store.insert_version(
            conn, model_id=model_id, version=version, job_id=job["id"], mode=job["mode"], metric=result["metric"],
            metric_value=result["challenger_metric"], champion_metric_value=result["champion_metric"],
            promoted=promote, artifact_path=str(path), artifact_sha256=sha, data_window=result["data_window"],
            data_end=result["data_end"], train_rows=result["train_rows"], holdout_rows=result["holdout_rows"],
            refit_fallback=result["refit_fallback"],
        )
        if result.get("profile") is not None:
            await store_profile(conn, model_id, version, result["profile"], origin="trainer")
        if promote:
            await version_store.set_current(conn, model_id, to_version=version, kind="PROMOTION", job_id=job["id"],
                                            reason=_promotion_reason(result))
            log.info("retrain.model_promoted", job_id=job["id"], model_id=model_id, version=version,
                     from_version=model["current_version"], metric=result["metric"],
                     champion=result["champion_metric"], challenger=result["challenger_metric"])
        notes = "; ".join(result.get("notes") or [])
        message = (f"promoted version {version}" if promote else f"kept version {model['current_version']}")
        return {
            "metric": result["metric"], "champion_metric": result["champion_metric"],
            "challenger_metric": result["challenger_metric"], "improvement": result["improvement"],
            "promoted": promote, "new_version": version,
            "refit_fallback": result["refit_fallback"], "message": f"{message}; {notes}" if notes else message,
        }


async def store_profile(conn: asyncpg.Connection, model_id: str, version: int, profile: bytes, origin: str) -> None:
    """Store a version's reference profile with a readable summary (decoded here, in the server)."""
    from ..monitor.profile import ReferenceProfile  # numpy and datasketches: only once a profile exists

    summary = await asyncio.to_thread(lambda: ReferenceProfile.from_bytes(profile).summary())
    await monitoring_store.put_profile(conn, model_id, version, profile, summary, origin)


def _promotion_reason(result: dict) -> str:
    if result["champion_metric"] is None:
        return f"first version ({result['metric']} {result['challenger_metric']:.4g})"
    return (f"{result['metric']} {result['champion_metric']:.4g} -> {result['challenger_metric']:.4g}"
            f" on {result['holdout_rows']} holdout rows")


class NoopKind:
    """Runs `noop` for every job: the queue's own cost, nothing else."""

    name = "noop"

    async def prepare(self, conn: asyncpg.Connection, job: asyncpg.Record) -> tuple[Callable[[dict], dict], dict]:
        return noop, {"job_id": job["id"]}

    async def record(self, conn: asyncpg.Connection, job: asyncpg.Record, result: dict) -> dict:
        return {"message": "no-op"}


class ProbeKind:
    """Runs `probe`, configured per job by a JSON object in the job's reason (tests only)."""

    name = "probe"

    def __init__(self, database_url: str | None, defaults: dict[str, Any] | None = None) -> None:
        self.database_url = database_url
        self.defaults = dict(defaults or {})

    async def prepare(self, conn: asyncpg.Connection, job: asyncpg.Record) -> tuple[Callable[[dict], dict], dict]:
        options = dict(self.defaults)
        if job["reason"].startswith("{"):
            options.update(json.loads(job["reason"]))
        payload = _attempt_payload(job, self.database_url)
        payload["options"] = options
        return probe, payload

    async def record(self, conn: asyncpg.Connection, job: asyncpg.Record, result: dict) -> dict:
        return {"message": f"probe ran in pid {result.get('pid')}"}


def kind_by_name(name: str, *, data_dir: str | pathlib.Path, database_url: str | None,
                 sources: DataSources | None = None) -> JobKind:
    if name == "train":
        return TrainingKind(data_dir, database_url, sources)
    if name == "noop":
        return NoopKind()
    if name == "probe":
        return ProbeKind(database_url)
    raise ValueError(f"unknown job kind {name!r}: train, noop or probe")
