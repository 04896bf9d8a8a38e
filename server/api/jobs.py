"""RetrainService, jobs and versions part: SubmitRetrain, GetJob, ListJobs, CancelJob, WatchJob,
RollbackModel, ListModelVersions (RetrainServicer delegates them here). Validation here; SQL in
store/queue.py and store/; messages in convert_jobs.py.
"""

from __future__ import annotations

import asyncio

import structlog

import asyncpg

from closedloop.v1 import common_pb2, retrain_pb2

from ..config import Settings
from ..db.pool import transaction
from ..errors import FailedPrecondition, NotFound
from ..store import jobs as job_store
from ..store import models as model_store
from ..store import queue
from ..store import versions as version_store
from . import convert, paging
from .auth import may_see, model_scopes, require_model
from .convert_jobs import MODE_FROM_PROTO, STATE_FROM_PROTO, job_message, version_message, watch_key
from .validation import MAX_REASON_BYTES, Violations, check_id, check_model_id, check_page, check_request_id

log = structlog.get_logger(__name__)

# How often WatchJob looks at the job; progress changes at most a few times a second.
WATCH_INTERVAL_S = 0.25


async def job_messages(conn: asyncpg.Connection, rows: list) -> list[retrain_pb2.RetrainJob]:
    """Job rows as messages, with the version serving after each SUCCEEDED job (one query, and none
    when no row has SUCCEEDED)."""
    serving = await job_store.serving_versions(conn, rows)
    return [job_message(r, serving.get(r["id"], 0)) for r in rows]


class JobHandlers:
    def __init__(self, pool: asyncpg.Pool, settings: Settings | None) -> None:
        self.pool = pool
        self.settings = settings  # None: the queue's defaults for attempts and timeout

    async def SubmitRetrain(self, request, context):
        v = Violations()
        check_model_id(v, request.model_id)
        if request.mode not in (common_pb2.RETRAIN_MODE_UNSPECIFIED, *MODE_FROM_PROTO):
            v.add("mode", "must be RETRAIN_MODE_FULL or RETRAIN_MODE_INCREMENTAL")
        if not 0 <= request.priority <= common_pb2.PRIORITY_CRITICAL:
            v.add("priority", "must be PRIORITY_LOW..PRIORITY_CRITICAL")
        if len(request.reason.encode()) > MAX_REASON_BYTES:
            v.add("reason", f"at most {MAX_REASON_BYTES} bytes")
        check_request_id(v, request.request_id)
        v.raise_if_any()
        require_model(request.model_id)
        mode = MODE_FROM_PROTO.get(request.mode, "FULL")
        priority = request.priority or common_pb2.PRIORITY_MEDIUM
        async with transaction(self.pool) as conn:
            if not await job_store.model_exists(conn, request.model_id):
                raise NotFound(f"model {request.model_id!r} is not registered")
            job, created = await queue.enqueue(
                conn, model_id=request.model_id, mode=mode, priority=priority,
                reason=request.reason or "manual retrain", manual=True, request_id=request.request_id or None,
                max_attempts=self.settings.job_max_attempts if self.settings is not None else None,
            )
            # A repeated request_id returns its job, which may have ended meanwhile.
            (message,) = await job_messages(conn, [job])
        log.info("retrain.job_submitted", job_id=job["id"], model_id=job["model_id"], created=created,
                 mode=job["mode"], priority=job["priority"])
        return message

    async def GetJob(self, request, context):
        job_id = self._job_id(request.id)
        async with self.pool.acquire() as conn:
            row = await queue.get(conn, job_id)
            if row is None or not may_see(row["model_id"]):  # out of scope looks like absent
                raise NotFound(f"job {request.id} does not exist")
            (message,) = await job_messages(conn, [row])
        return message

    async def ListJobs(self, request, context):
        v = Violations()
        if request.model_id:
            check_model_id(v, request.model_id)
        if request.state and request.state not in STATE_FROM_PROTO:
            v.add("state", "unknown job state")
        limit = check_page(v, request.page_size, request.page_token)
        v.raise_if_any()
        if request.model_id:
            require_model(request.model_id)
        filters = {"model_id": request.model_id, "state": request.state}
        cursor = paging.decode(request.page_token, filters, {"id": paging.bigint})
        before = cursor["id"] if cursor is not None else None
        async with self.pool.acquire() as conn:
            rows = await queue.list_jobs(conn, model_id=request.model_id or None,
                                         state=STATE_FROM_PROTO.get(request.state), before_id=before,
                                         limit=limit + 1, scopes=model_scopes())
            page = rows[:limit]
            messages = await job_messages(conn, page)
        token = paging.encode({"id": page[-1]["id"]}, filters) if len(rows) > limit else ""
        return retrain_pb2.ListJobsResponse(jobs=messages, next_page_token=token)

    async def CancelJob(self, request, context):
        job_id = self._job_id(request.id)
        async with transaction(self.pool) as conn:
            existing = await queue.get(conn, job_id)
            if existing is None or not may_see(existing["model_id"]):  # out of scope looks like absent
                raise NotFound(f"job {request.id} does not exist")
            row = await queue.request_cancel(conn, job_id)
            if row is None:
                existing = await queue.get(conn, job_id)  # the state it ended in meanwhile
                raise FailedPrecondition(f"job {request.id} has already ended ({existing['state']})")
            if row["state"] == "CANCELLED":
                await job_store.record_feedback(conn, row)
        log.info("retrain.job_cancel_requested", job_id=job_id, state=row["state"])
        return job_message(row)

    async def WatchJob(self, request, context):
        job_id = self._job_id(request.id)
        last = None
        while True:
            async with self.pool.acquire() as conn:
                row = await queue.get(conn, job_id)
                if row is None or not may_see(row["model_id"]):  # out of scope looks like absent
                    raise NotFound(f"job {request.id} does not exist")
                key = watch_key(row)
                message = (await job_messages(conn, [row]))[0] if key != last else None
            if message is not None:
                last = key
                yield message
            if row["state"] in queue.TERMINAL_STATES:
                return
            await asyncio.sleep(WATCH_INTERVAL_S)

    async def RollbackModel(self, request, context):
        v = Violations()
        check_model_id(v, request.model_id)
        if request.version < 0:
            v.add("version", "must be >= 0 (0: the version before the current one)")
        if len(request.reason.encode()) > MAX_REASON_BYTES:
            v.add("reason", f"at most {MAX_REASON_BYTES} bytes")
        v.raise_if_any()
        require_model(request.model_id)
        async with transaction(self.pool) as conn:
            if not await job_store.model_exists(conn, request.model_id):
                raise NotFound(f"model {request.model_id!r} is not registered")
            if request.version and await version_store.get_version(conn, request.model_id, request.version) is None:
                raise NotFound(f"model {request.model_id!r} has no version {request.version}")
            try:
                change = await version_store.rollback(conn, request.model_id, to_version=request.version or None,
                                                      reason=request.reason)
            except ValueError as exc:
                raise FailedPrecondition(str(exc)) from None
            if change is None:
                raise FailedPrecondition(f"model {request.model_id!r} has no earlier version to return to")
            row = await model_store.get_model(conn, request.model_id)
        facts = getattr(self, "facts", None)
        if facts is not None:
            facts.invalidate(request.model_id)
        log.info("retrain.model_rolled_back", model_id=request.model_id, from_version=change["from_version"],
                 to_version=change["to_version"])
        return convert.model_message(row)

    async def ListModelVersions(self, request, context):
        v = Violations()
        check_model_id(v, request.model_id)
        v.raise_if_any()
        require_model(request.model_id)
        async with self.pool.acquire() as conn:
            if not await job_store.model_exists(conn, request.model_id):
                raise NotFound(f"model {request.model_id!r} is not registered")
            rows = await version_store.list_versions(conn, request.model_id)
        return retrain_pb2.ListModelVersionsResponse(versions=[version_message(r) for r in rows])

    @staticmethod
    def _job_id(value: str) -> int:
        v = Violations()
        job_id = check_id(v, value, "id")
        v.raise_if_any()
        return job_id
