"""The audit trail, API side: which RPCs are operator actions, what of a request is recorded, and
RetrainService.ListAuditRecords (RetrainServicer delegates it here). SQL in store/audit.py.

The interceptor (interceptors.py) wraps each audited method: after the call, whatever its outcome
(refused for a role, a scope or bad input included), `Auditor.record` appends one row with the
caller's token name. Calls without a valid token are not recorded (an anonymous client could
otherwise fill the table); the server log has them.
"""

from __future__ import annotations

import hashlib
import json
import re

import asyncpg
import structlog
from google.protobuf import json_format

from closedloop.v1 import retrain_pb2

from ..db.pool import mask_password
from ..store import audit as audit_store
from . import paging
from .auth import caller_name
from .convert import from_timestamp, timestamp
from .validation import Violations, check_page

log = structlog.get_logger(__name__)

_SERVICE = "/closedloop.v1."
AUDITED_METHODS = frozenset(_SERVICE + m for m in (
    "RetrainService/RegisterModel", "RuleService/ApplyRules", "RetrainService/RollbackModel",
    "RetrainService/SubmitRetrain", "RetrainService/CancelJob", "AlertService/UpdateAlertState"))

# What of a request is kept: secrets never; long strings (a rule set's source) shortened to a head
# and a digest that still identifies them; the whole record capped.
SECRET_KEY = re.compile(r"(?i)(dsn|password|passwd|secret|token|credential|api_?key)")
REDACTED = "[redacted]"
MAX_STRING_CHARS = 512
MAX_REQUEST_CHARS = 8192
MAX_MESSAGE_CHARS = 1000


def _clean(value):
    if isinstance(value, dict):
        return {k: REDACTED if SECRET_KEY.search(k) else _clean(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    if isinstance(value, str):
        value = mask_password(value)  # a URL with a password in any string
        if len(value) > MAX_STRING_CHARS:
            digest = hashlib.sha256(value.encode()).hexdigest()[:16]
            value = f"{value[:MAX_STRING_CHARS]}... [{len(value)} chars, sha256 {digest}]"
    return value


def request_record(request) -> dict:
    """The request as the audit trail keeps it: JSON, secrets redacted, size-capped. None: the bytes
    did not parse as the method's request (the call was refused before the handler ran)."""
    if request is None:
        return {"undecodable": True}
    try:
        data = _clean(json_format.MessageToDict(request, preserving_proto_field_name=True))
    except json_format.Error as exc:
        # Out-of-range well-known types (a Duration past 10,000 years) have no JSON form; the call
        # is refused all the same, and the trail keeps that it came and why it could not be shown.
        return {"unrepresentable": type(exc).__name__}
    text = json.dumps(data, separators=(",", ":"))
    if len(text) > MAX_REQUEST_CHARS:
        return {"truncated": True, "chars": len(text), "head": text[:MAX_REQUEST_CHARS]}
    return data


class Auditor:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def record(self, method: str, request, code: str, message: str) -> None:
        row = dict(token_name=caller_name(), method=method.removeprefix(_SERVICE), request=request_record(request),
                   code=code, message=message[:MAX_MESSAGE_CHARS])
        try:
            async with self.pool.acquire() as conn:
                await audit_store.append(conn, **row)
        except Exception:  # noqa: BLE001 - the call's own outcome stands; the log keeps the record
            log.exception("audit.write_failed", **row)


class AuditHandlers:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def ListAuditRecords(self, request, context):
        v = Violations()
        limit = check_page(v, request.page_size, request.page_token)
        v.raise_if_any()
        since = from_timestamp(request.start_time) if request.HasField("start_time") else None
        filters = {"start": request.start_time.ToJsonString() if since else ""}
        cursor = paging.decode(request.page_token, filters, {"id": paging.bigint})
        before = cursor["id"] if cursor is not None else None
        async with self.pool.acquire() as conn:
            rows = await audit_store.list_records(conn, since=since, before_id=before, limit=limit + 1)
        page = rows[:limit]
        token = paging.encode({"id": page[-1]["id"]}, filters) if len(rows) > limit else ""
        return retrain_pb2.ListAuditRecordsResponse(records=[_record_message(r) for r in page],
                                                    next_page_token=token)


def _record_message(row) -> retrain_pb2.AuditRecord:
    record = retrain_pb2.AuditRecord(id=str(row["id"]), time=timestamp(row["time"]), token_name=row["token_name"],
                                     method=row["method"], code=row["code"], message=row["message"])
    record.request.update(row["request"])
    return record
