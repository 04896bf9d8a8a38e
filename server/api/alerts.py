"""AlertService: validate, hand to the ingest path, map results to messages. No SQL here."""

from __future__ import annotations

import asyncio
import datetime as dt

import asyncpg
import grpc
import structlog

from closedloop.v1 import alert_pb2, alert_pb2_grpc

from ..errors import ClosedLoopError, FailedPrecondition, NotFound, Unavailable
from ..loop.ingest import AlertIngestor, IngestResult
from ..notify import events as notify_events
from ..store import alerts as alert_store
from . import convert, paging
from .auth import may_see, model_scopes, require_model
from .validation import (Violations, check_alert, check_id, check_model_id, check_page, check_request_id,
                         check_time)

log = structlog.get_logger(__name__)
UTC = dt.timezone.utc
# Requests in one BatchCreateAlerts: a bounded message and a bounded wait for its reply.
MAX_BATCH_REQUESTS = 1000
# Requests of one stream being written at once; bounds memory and lets gRPC flow control push back.
STREAM_WINDOW = 512
# Allowed workflow moves by UpdateAlertState.
TRANSITIONS = {
    "ACKNOWLEDGED": {"OPEN", "ACTIONED", "SUPPRESSED"},
    "RESOLVED": {"OPEN", "ACTIONED", "SUPPRESSED", "ACKNOWLEDGED"},
}


def _validated(request: alert_pb2.CreateAlertRequest, prefix: str = "") -> None:
    """Valid, and for a model the caller's token may write to (PermissionDenied otherwise)."""
    v = Violations(prefix)
    if not request.HasField("alert"):
        v.add("alert", "required")
    else:
        check_alert(v, request.alert)
    check_request_id(v, request.request_id)
    v.raise_if_any()
    require_model(request.alert.model_id, prefix + "alert.model_id")


def reply_message(result: IngestResult, sent: alert_pb2.Alert) -> alert_pb2.Alert:
    """The alert as stored; `sent`, the request's alert, is what a newly created one was stored from."""
    if result.created:
        return convert.created_alert_message(sent, result.alert, result.actions)
    return convert.alert_message(result.alert, result.actions)


def _batch_result(outcome: IngestResult | BaseException, sent: alert_pb2.Alert) -> alert_pb2.BatchCreateAlertsResult:
    """One item of a BatchCreateAlerts reply: the alert, or the status CreateAlert would have answered."""
    if isinstance(outcome, IngestResult):
        return alert_pb2.BatchCreateAlertsResult(alert=reply_message(outcome, sent))
    if isinstance(outcome, ClosedLoopError):
        return alert_pb2.BatchCreateAlertsResult(code=outcome.code.value[0], message=outcome.message)
    log.error("alert.batch_item_failed", exc_info=outcome)  # a bug: logged here, answered INTERNAL
    return alert_pb2.BatchCreateAlertsResult(code=grpc.StatusCode.INTERNAL.value[0],
                                             message="internal error; the server log has the details")


class AlertServicer(alert_pb2_grpc.AlertServiceServicer):
    def __init__(self, pool: asyncpg.Pool, ingestor: AlertIngestor) -> None:
        self.pool = pool
        self.ingestor = ingestor

    async def CreateAlert(self, request, context):
        return reply_message(await self.ingest(request), request.alert)

    async def ingest(self, request: alert_pb2.CreateAlertRequest) -> IngestResult:
        """CreateAlert without its reply message (the HTTP side renders its own JSON)."""
        _validated(request)
        received = dt.datetime.now(UTC)
        return await self.ingestor.submit(convert.new_alert(request, received), received)

    async def StreamAlerts(self, request_iterator, context):
        # A reader task feeds a bounded window of pending writes; replies go out in request order.
        window: asyncio.Queue = asyncio.Queue(maxsize=STREAM_WINDOW)

        async def read() -> None:
            index = 0
            try:
                async for request in request_iterator:
                    _validated(request, prefix=f"requests[{index}].")
                    received = dt.datetime.now(UTC)
                    pending = await self.ingestor.submit_later(convert.new_alert(request, received), received)
                    await window.put((pending, request.alert))
                    index += 1
            except ClosedLoopError as exc:  # bad input, here or in the interceptor's check of the stream
                await window.put(exc)
            finally:
                await window.put(None)

        reader = asyncio.create_task(read())
        try:
            while True:
                item = await window.get()
                if item is None:
                    break
                if isinstance(item, Exception):
                    raise item
                pending, sent = item
                yield reply_message(await pending, sent)
        finally:
            reader.cancel()
            # Writes already submitted still commit; wait so none is abandoned half-way.
            pending = []
            while not window.empty():
                item = window.get_nowait()
                if isinstance(item, tuple):
                    pending.append(item[0])
            if pending:
                await asyncio.gather(*pending, return_exceptions=True)

    async def BatchCreateAlerts(self, request, context):
        v = Violations()
        if not request.requests:
            v.add("requests", "at least one request")
        elif len(request.requests) > MAX_BATCH_REQUESTS:
            v.add("requests", f"at most {MAX_BATCH_REQUESTS} requests, got {len(request.requests)}")
        v.raise_if_any()
        for index, item in enumerate(request.requests):  # all valid before anything is written
            _validated(item, prefix=f"requests[{index}].")
        received = dt.datetime.now(UTC)
        # Queued in order without a task per item; the group commit writes them in few batches.
        futures = [await self.ingestor.submit_later(convert.new_alert(item, received), received)
                   for item in request.requests]
        await asyncio.wait(futures, timeout=self.ingestor.wait_timeout)
        outcomes = []
        for future in futures:
            if not future.done():  # behind a hung batch, like CreateAlert: retrying by request_id is safe
                future.add_done_callback(lambda f: f.cancelled() or f.exception())  # nobody awaits it now
                outcomes.append(Unavailable(f"the database did not answer within {self.ingestor.wait_timeout:g} s"))
            else:
                outcomes.append(future.exception() or future.result())
        return alert_pb2.BatchCreateAlertsResponse(
            results=[_batch_result(o, item.alert) for o, item in zip(outcomes, request.requests)])

    async def GetAlert(self, request, context):
        v = Violations()
        alert_id = check_id(v, request.id, "id")
        v.raise_if_any()
        async with self.pool.acquire() as conn:
            row = await alert_store.get_alert(conn, alert_id)
            if row is None or not may_see(row["model_id"]):  # out of scope looks like absent
                raise NotFound(f"alert {request.id} not found")
            actions = await alert_store.actions_for(conn, [alert_id])
        return convert.alert_message(row, actions.get(alert_id, []))

    async def ListAlerts(self, request, context):
        v = Violations()
        limit = check_page(v, request.page_size, request.page_token)
        if request.model_id:
            check_model_id(v, request.model_id)
        if request.state and request.state not in convert.ALERT_STATE_NAMES:
            v.add("state", f"unknown value {request.state}")
        for name in ("start_time", "end_time"):
            if request.HasField(name):
                check_time(v, getattr(request, name), name)
        v.raise_if_any()
        if request.model_id:
            require_model(request.model_id)
        filters = {"model_id": request.model_id, "type": request.type, "state": request.state,
                   "start": request.start_time.ToJsonString() if request.HasField("start_time") else "",
                   "end": request.end_time.ToJsonString() if request.HasField("end_time") else ""}
        cursor = paging.decode(request.page_token, filters, {"t": paging.timestamp, "id": paging.bigint})
        after = (cursor["t"], cursor["id"]) if cursor is not None else None
        async with self.pool.acquire() as conn:
            rows = await alert_store.list_alerts(
                conn, model_id=request.model_id or None, alert_type=request.type or None,
                state=convert.ALERT_STATE_NAMES.get(request.state) if request.state else None,
                start=convert.from_timestamp(request.start_time) if request.HasField("start_time") else None,
                end=convert.from_timestamp(request.end_time) if request.HasField("end_time") else None,
                after=after, limit=limit + 1, scopes=model_scopes(),
            )
            page = rows[:limit]
            actions = await alert_store.actions_for(conn, [r["id"] for r in page])
        token = ""
        if len(rows) > limit:
            last = page[-1]
            token = paging.encode({"t": last["observe_time"].isoformat(), "id": last["id"]}, filters)
        return alert_pb2.ListAlertsResponse(
            alerts=[convert.alert_message(r, actions.get(r["id"], [])) for r in page], next_page_token=token)

    async def UpdateAlertState(self, request, context):
        v = Violations()
        alert_id = check_id(v, request.id, "id")
        target = convert.ALERT_STATE_NAMES.get(request.state)
        if target not in TRANSITIONS:
            v.add("state", "must be ALERT_STATE_ACKNOWLEDGED or ALERT_STATE_RESOLVED")
        v.raise_if_any()
        async with self.pool.acquire() as conn:
            async with conn.transaction():
                row = await alert_store.lock_alert(conn, alert_id)
                if row is None or not may_see(row["model_id"]):  # out of scope looks like absent
                    raise NotFound(f"alert {request.id} not found")
                if row["state"] == target:
                    updated = row  # idempotent: acknowledging twice is not an error
                elif row["state"] not in TRANSITIONS[target]:
                    raise FailedPrecondition(f"alert {request.id} is {row['state']}; cannot move it to {target}")
                else:
                    updated = await alert_store.update_state(conn, alert_id, target)
                    if target == "RESOLVED":  # in the same transaction: resolved means its pages resolve
                        await notify_events.record_alert_resolved(conn, updated)
            actions = await alert_store.actions_for(conn, [alert_id])
        return convert.alert_message(updated, actions.get(alert_id, []))
