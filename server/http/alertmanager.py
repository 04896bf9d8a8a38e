"""POST /api/v1/alertmanager: Alertmanager's webhook (payload version 4) into the ingest path.

Each firing alert becomes a closedloop alert through the mapping of Settings.alertmanager_* (defaults
in brackets; README "Connecting Prometheus, Alertmanager and your pager"):
- model_id  <- label [model_id]                                   required
- type      <- label [type]; absent: the alertname in snake_case (ModelDrift -> model_drift)
- severity  <- label [severity]: low|info, medium|warning, high|error, critical|page; absent: medium
- metrics   <- annotation [value] as the metric named by label [metric] (absent: "<type>_score"),
               plus every annotation `metric_<name>` that holds a number, as metrics[<name>]
- labels    <- every other label, names lower-cased (alertname, instance, job, desk, ...)
- source = "alertmanager", observe_time = startsAt.
Alertmanager's fingerprint plus startsAt is the request_id, and it alone is the idempotency
fingerprint: a repeat (or a retry) of the same firing is the same alert even when its `value`
annotation moved, so it stores nothing twice. A resolved alert moves the stored one to RESOLVED.

The whole payload is mapped and validated (api/validation.py, as CreateAlert) before anything is
written: one unmappable alert answers 400 with a field violation per problem, `alerts[i].…`, and
stores nothing. Once valid, the alerts are written through the AlertIngestor like any CreateAlert;
if the database fails half-way, Alertmanager's retry completes the rest without duplicates.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import hashlib
import json
import math
import re
from dataclasses import dataclass

import structlog
from aiohttp import web

from closedloop.v1 import alert_pb2, common_pb2

from ..api import convert
from ..api.alerts import AlertServicer
from ..api.auth import require_model
from ..api.validation import Violations, check_alert, check_request_id, malformed
from ..errors import FieldViolation, InvalidArgument
from ..store import alerts as alert_store

log = structlog.get_logger(__name__)

SOURCE = "alertmanager"
SEVERITIES = {
    "low": common_pb2.SEVERITY_LOW, "info": common_pb2.SEVERITY_LOW,
    "medium": common_pb2.SEVERITY_MEDIUM, "warning": common_pb2.SEVERITY_MEDIUM,
    "high": common_pb2.SEVERITY_HIGH, "error": common_pb2.SEVERITY_HIGH,
    "critical": common_pb2.SEVERITY_CRITICAL, "page": common_pb2.SEVERITY_CRITICAL,
}
DEFAULT_SEVERITY = common_pb2.SEVERITY_MEDIUM
METRIC_ANNOTATION_PREFIX = "metric_"
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")
_NOT_KEY = re.compile(r"[^a-z0-9_.-]+")


@dataclass(frozen=True)
class Mapping:
    """Which labels and annotations carry what (Settings.alertmanager_*)."""

    model_label: str = "model_id"
    type_label: str = "type"
    severity_label: str = "severity"
    value_annotation: str = "value"
    metric_label: str = "metric"

    @classmethod
    def from_settings(cls, settings) -> "Mapping":
        return cls(settings.alertmanager_model_label, settings.alertmanager_type_label,
                   settings.alertmanager_severity_label, settings.alertmanager_value_annotation,
                   settings.alertmanager_metric_label)


@dataclass(frozen=True)
class Mapped:
    status: str  # "firing" or "resolved"
    fingerprint: str
    request: alert_pb2.CreateAlertRequest  # for resolved alerts only its request_id matters


def snake_case(name: str) -> str:
    return _NOT_KEY.sub("_", _CAMEL.sub("_", name).lower()).strip("_")[:64]


def _number(text, field: str, v: Violations) -> float | None:
    try:
        value = float(str(text).strip())
    except ValueError:
        v.add(field, f"must be a number, got {str(text)[:40]!r}")
        return None
    if not math.isfinite(value):
        v.add(field, f"must be a finite number, got {text}")
        return None
    return value


def map_alert(raw, index: int, mapping: Mapping) -> tuple[Mapped | None, list[FieldViolation]]:
    """One alert of the payload -> (the closedloop request, []) or (None, what is wrong with it)."""
    v = Violations(f"alerts[{index}].")
    if not isinstance(raw, dict):
        v.add("", "must be an object")
        return None, v.items
    status, fingerprint, starts = raw.get("status"), raw.get("fingerprint"), raw.get("startsAt")
    labels, annotations = raw.get("labels") or {}, raw.get("annotations") or {}
    if status not in ("firing", "resolved"):
        v.add("status", f"must be firing or resolved, got {status!r}")
    if not isinstance(fingerprint, str) or not fingerprint:
        v.add("fingerprint", "required")
    if not isinstance(labels, dict) or not isinstance(annotations, dict):
        v.add("labels", "labels and annotations must be objects")
        return None, v.items
    observe = alert_pb2.Alert().observe_time
    try:
        observe.FromJsonString(starts)
    except (TypeError, ValueError, AttributeError):
        v.add("startsAt", f"must be an RFC 3339 time, got {str(starts)[:40]!r}")
    request_id = f"am:{fingerprint}:{starts}"
    check_request_id(v, request_id, "fingerprint")
    if v.items:
        return None, v.items
    if status == "resolved":  # only its identity matters: it resolves what the firing one stored
        return Mapped(status, fingerprint, alert_pb2.CreateAlertRequest(request_id=request_id)), []

    alert = alert_pb2.Alert(source=SOURCE)
    alert.observe_time.CopyFrom(observe)
    model_id = labels.get(mapping.model_label)
    if not model_id:
        v.add(f"labels.{mapping.model_label}", "required: the label naming the model")
    alert.model_id = str(model_id or "")
    alert.type = str(labels.get(mapping.type_label) or snake_case(str(labels.get("alertname", ""))))
    severity = labels.get(mapping.severity_label)
    if severity is None:
        alert.severity = DEFAULT_SEVERITY
    elif str(severity).lower() in SEVERITIES:
        alert.severity = SEVERITIES[str(severity).lower()]
    else:
        v.add(f"labels.{mapping.severity_label}", f"unknown severity {str(severity)[:40]!r}; "
              f"one of {', '.join(SEVERITIES)}")
    if mapping.value_annotation in annotations:
        key = str(labels.get(mapping.metric_label) or f"{alert.type}_score")
        value = _number(annotations[mapping.value_annotation], f"annotations.{mapping.value_annotation}", v)
        if value is not None:
            alert.metrics[key] = value
    for name, text in annotations.items():
        if name.startswith(METRIC_ANNOTATION_PREFIX):
            value = _number(text, f"annotations.{name}", v)
            if value is not None:
                alert.metrics[name[len(METRIC_ANNOTATION_PREFIX):]] = value
    used = {mapping.model_label, mapping.type_label, mapping.severity_label, mapping.metric_label}
    for name, value in labels.items():
        if name not in used:
            alert.labels[str(name).lower()] = str(value)
    request = alert_pb2.CreateAlertRequest(alert=alert, request_id=request_id)
    if not v.items:  # then CreateAlert's own validation (key formats, sizes), fields under alerts[i].alert.
        check_alert(v, alert)
        # and what no RPC accepts (NUL, non-finite numbers), which gRPC's interceptor checks for every request
        v.items += malformed(request, v.prefix)
    return (None if v.items else Mapped(status, fingerprint, request)), v.items


def map_payload(payload, mapping: Mapping) -> list[Mapped]:
    """Every alert of a webhook payload, or InvalidArgument naming every problem of every alert."""
    if not isinstance(payload, dict):
        raise InvalidArgument(FieldViolation("body", "must be a JSON object (Alertmanager webhook payload)"))
    version = payload.get("version")
    if version is not None and str(version) != "4":
        raise InvalidArgument(FieldViolation("version", f"payload version 4 is understood, got {version!r}"))
    alerts = payload.get("alerts")
    if not isinstance(alerts, list):
        raise InvalidArgument(FieldViolation("alerts", "required: a list"))
    mapped, problems = [], []
    for index, raw in enumerate(alerts):
        item, wrong = map_alert(raw, index, mapping)
        problems += wrong
        if item is not None:
            mapped.append(item)
    if problems:
        raise InvalidArgument(problems, f"{len({p.field.split('.')[0] for p in problems})} of {len(alerts)} "
                                        "alert(s) cannot be mapped; nothing was stored: "
                                        + "; ".join(f"{p.field}: {p.description}" for p in problems))
    return mapped


class Receiver:
    def __init__(self, settings, pool, ingestor) -> None:
        self.mapping = Mapping.from_settings(settings)
        self.pool = pool
        self.ingestor = ingestor
        self.alerts = AlertServicer(pool, ingestor)

    async def handle(self, request: web.Request) -> web.Response:
        try:
            payload = json.loads(await request.text())
        except ValueError as exc:
            raise InvalidArgument(FieldViolation("body", f"not JSON: {exc}")) from None
        try:
            mapped = map_payload(payload, self.mapping)
        except InvalidArgument as exc:
            log.warning("alertmanager.rejected", receiver=str(payload.get("receiver", ""))[:100]
                        if isinstance(payload, dict) else "", error=exc.message[:2000])
            raise
        for m in mapped:  # a desk's token writes only its models: refused whole, before anything is stored
            require_model(m.request.alert.model_id)
        firing = [m for m in mapped if m.status == "firing"]
        resolved = [m for m in mapped if m.status == "resolved"]
        outcomes = await self._store(firing) + await self._resolve(resolved)
        log.info("alertmanager.received", firing=len(firing), resolved=len(resolved))
        return web.json_response({"alerts": outcomes})

    async def _store(self, firing: list[Mapped]) -> list[dict]:
        received = dt.datetime.now(dt.timezone.utc)
        news = [dataclasses.replace(convert.new_alert(m.request, received),
                                    request_hash=hashlib.sha256(m.request.request_id.encode()).digest())
                for m in firing]
        results = await asyncio.gather(*(self.ingestor.submit(n, received) for n in news), return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result  # Alertmanager retries the whole payload; what was stored is found again
        return [{"fingerprint": m.fingerprint, "status": "firing", "alert_id": str(r.alert["id"]),
                 "outcome": "created" if r.created else "duplicate", "state": r.alert["state"],
                 "actions": [{"rule": a["rule"], "decision": a["decision"]} for a in r.actions]}
                for m, r in zip(firing, results)]

    async def _resolve(self, resolved: list[Mapped]) -> list[dict]:
        if not resolved:
            return []
        async with self.pool.acquire() as conn:
            stored = await alert_store.alerts_by_request_ids(conn, [m.request.request_id for m in resolved])
        outcomes = []
        for m in resolved:
            row = stored.get(m.request.request_id)
            if row is None:  # never received while firing (closedloop was down): nothing to resolve
                outcomes.append({"fingerprint": m.fingerprint, "status": "resolved", "outcome": "unknown"})
                continue
            await self.alerts.UpdateAlertState(alert_pb2.UpdateAlertStateRequest(
                id=str(row["id"]), state=alert_pb2.ALERT_STATE_RESOLVED), None)
            outcomes.append({"fingerprint": m.fingerprint, "status": "resolved", "alert_id": str(row["id"]),
                             "outcome": "resolved", "state": "RESOLVED"})
        return outcomes

