"""What a job does: how the runner turns a claimed row into a backend call, and records its result.

The runner is generic (claim, lease, run, fence, retry); a `Work` supplies the two ends:
- `prepare(conn, job)` -> (function, payload): read what the attempt needs, in the server;
- `record(conn, job, result)` -> fields for queue.complete: write what it produced, inside the
  transaction that completes the job, after the lease was verified, so only the attempt that still
  holds the job leaves anything behind.

TrainingWork is the real one. NoopWork and ProbeWork run estimator-free functions through exactly the
same queue/backend path: the benchmark measures the queue's overhead with them, and the reliability
tests count executions with them.
"""

from __future__ import annotations

import asyncio
import json
import pathlib
from typing import Any, Callable, Protocol

import asyncpg
import structlog

from ..store import jobs as job_store
from ..store import versions as version_store
from . import artifacts, tasks
from .tasks import PermanentJobError

log = structlog.get_logger("closedloop.executor")


class Work(Protocol):
    name: str
    # False: record() writes nothing (it gets conn=None) and the runner completes the job and its
    # feedback row in one statement instead of a locked transaction.
    transactional: bool

    async def prepare(self, conn: asyncpg.Connection, job: asyncpg.Record) -> tuple[Callable[[dict], dict], dict]: ...

    async def record(self, conn: asyncpg.Connection, job: asyncpg.Record, result: dict) -> dict: ...


def _attempt_payload(job: asyncpg.Record, database_url: str | None) -> dict:
    return {"job_id": job["id"], "attempt": job["attempt"], "token": str(job["lease_token"]),
            "database_url": database_url}


class TrainingWork:
    """Retrain the job's model with the built-in scikit-learn trainer; version and promote."""

    name = "train"
    transactional = True

    def __init__(self, data_dir: str | pathlib.Path, database_url: str | None) -> None:
        self.data_dir = pathlib.Path(data_dir)
        self.database_url = database_url

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
            margin=spec.promotion_margin, champion=champion,
            epoch=await version_store.latest_version_number(conn, job["model_id"]),
        )
        return tasks.train, payload

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
            "challenger_metric": result["challenger_metric"], "promoted": promote, "new_version": version,
            "refit_fallback": result["refit_fallback"], "message": f"{message}; {notes}" if notes else message,
        }


def _promotion_reason(result: dict) -> str:
    if result["champion_metric"] is None:
        return f"first version ({result['metric']} {result['challenger_metric']:.4g})"
    return (f"{result['metric']} {result['champion_metric']:.4g} -> {result['challenger_metric']:.4g}"
            f" on {result['holdout_rows']} holdout rows")


class NoopWork:
    """Runs tasks.noop for every job: the queue's own cost, nothing else."""

    name = "noop"
    transactional = False

    async def prepare(self, conn: asyncpg.Connection, job: asyncpg.Record) -> tuple[Callable[[dict], dict], dict]:
        return tasks.noop, {"job_id": job["id"]}

    async def record(self, conn: asyncpg.Connection, job: asyncpg.Record, result: dict) -> dict:
        return {"message": "no-op"}


class ProbeWork:
    """Runs tasks.probe, configured per job by a JSON object in the job's reason (tests only)."""

    name = "probe"
    transactional = False

    def __init__(self, database_url: str | None, defaults: dict[str, Any] | None = None) -> None:
        self.database_url = database_url
        self.defaults = dict(defaults or {})

    async def prepare(self, conn: asyncpg.Connection, job: asyncpg.Record) -> tuple[Callable[[dict], dict], dict]:
        options = dict(self.defaults)
        if job["reason"].startswith("{"):
            options.update(json.loads(job["reason"]))
        payload = _attempt_payload(job, self.database_url)
        payload["options"] = options
        return tasks.probe, payload

    async def record(self, conn: asyncpg.Connection, job: asyncpg.Record, result: dict) -> dict:
        return {"message": f"probe ran in pid {result.get('pid')}"}


def work_by_name(name: str, *, data_dir: str | pathlib.Path, database_url: str | None) -> Work:
    if name == "train":
        return TrainingWork(data_dir, database_url)
    if name == "noop":
        return NoopWork()
    if name == "probe":
        return ProbeWork(database_url)
    raise ValueError(f"unknown work {name!r}: train, noop or probe")
