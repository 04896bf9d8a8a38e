"""Conversions between stored rows and v1 messages (alerts, actions, models, rule sets)."""

from __future__ import annotations

import datetime as dt
import hashlib
from typing import Any, Mapping

from google.protobuf import json_format
from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from closedloop.v1 import alert_pb2, common_pb2, retrain_pb2, rules_pb2

from ..store.alerts import NewAlert

UTC = dt.timezone.utc
ALERT_STATES = {name.removeprefix("ALERT_STATE_"): value
                for name, value in alert_pb2.AlertState.items() if value}
ALERT_STATE_NAMES = {v: k for k, v in ALERT_STATES.items()}
ACTION_STATES = {name.removeprefix("ACTION_STATE_"): value
                 for name, value in alert_pb2.ActionState.items() if value}
ACTION_KINDS = {name.removeprefix("ACTION_KIND_"): value for name, value in alert_pb2.ActionKind.items() if value}
MODES = {"FULL": common_pb2.RETRAIN_MODE_FULL, "INCREMENTAL": common_pb2.RETRAIN_MODE_INCREMENTAL}


_EPOCH = dt.datetime(1970, 1, 1, tzinfo=UTC)


def timestamp(value: dt.datetime | None) -> Timestamp | None:
    # Integer arithmetic on the timedelta: exact to the microsecond, and several times faster than
    # Timestamp.FromDatetime on the ingest path (three timestamps per reply).
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    delta = value - _EPOCH
    return Timestamp(seconds=delta.days * 86400 + delta.seconds, nanos=delta.microseconds * 1000)


def from_timestamp(ts: Timestamp) -> dt.datetime:
    """Every time a request carries enters here. Times are stored to the microsecond (timestamptz),
    so the nanoseconds below a microsecond are dropped: truncated toward the past (nanos is never
    negative), as common.proto promises."""
    return _EPOCH + dt.timedelta(seconds=ts.seconds, microseconds=ts.nanos // 1000)


def duration(seconds: float | None) -> Duration | None:
    if seconds is None:
        return None
    d = Duration()
    d.FromNanoseconds(int(round(seconds * 1e9)))
    return d


OUTPUT_ONLY = ("id", "create_time", "state", "actions", "rule_set_version", "update_time")


def request_fingerprint(alert: alert_pb2.Alert) -> bytes:
    """What idempotency compares: the client-settable fields, serialised deterministically."""
    if (alert.id or alert.state or alert.rule_set_version or len(alert.actions)
            or alert.HasField("create_time") or alert.HasField("update_time")):
        copy = alert_pb2.Alert()
        copy.CopyFrom(alert)
        for f in OUTPUT_ONLY:
            copy.ClearField(f)
        alert = copy
    return hashlib.sha256(alert.SerializeToString(deterministic=True)).digest()


def new_alert(request: alert_pb2.CreateAlertRequest, received: dt.datetime) -> NewAlert:
    a = request.alert
    observe = from_timestamp(a.observe_time) if a.HasField("observe_time") else received
    return NewAlert(
        request_id=request.request_id or None, request_hash=request_fingerprint(a), model_id=a.model_id,
        alert_type=a.type, severity=a.severity, metrics=dict(a.metrics), labels=dict(a.labels),
        source=a.source, observe_time=observe,
    )


def action_message(row: Mapping[str, Any]) -> alert_pb2.Action:
    msg = alert_pb2.Action(
        id=str(row["id"]), alert_id=str(row["alert_id"]), rule=row["rule"], kind=ACTION_KINDS[row["kind"]],
        mode=MODES.get(row["mode"], 0), priority=row["priority"] or 0, state=ACTION_STATES[row["decision"]],
        job_id=str(row["job_id"]) if row["job_id"] is not None else "", reason=row["reason"],
        model_id=row["model_id"], rule_set_version=row["rule_set_version"],
        create_time=timestamp(row["create_time"]),
    )
    if row["cooldown_until"] is not None:
        msg.cooldown_until.CopyFrom(timestamp(row["cooldown_until"]))
    return msg


def alert_message(row: Mapping[str, Any], actions: list[Mapping[str, Any]] = ()) -> alert_pb2.Alert:
    return alert_pb2.Alert(
        id=str(row["id"]), model_id=row["model_id"], type=row["alert_type"], severity=row["severity"],
        metrics=row["metrics"], labels=row["labels"], source=row["source"],
        observe_time=timestamp(row["observe_time"]), create_time=timestamp(row["create_time"]),
        update_time=timestamp(row["update_time"]), state=ALERT_STATES[row["state"]],
        rule_set_version=row["rule_set_version"], actions=[action_message(a) for a in actions],
    )


def created_alert_message(sent: alert_pb2.Alert, alert: Mapping[str, Any],
                          actions: list[Mapping[str, Any]] = ()) -> alert_pb2.Alert:
    """The reply for an alert just stored from the message `sent`: equal to alert_message() of the
    stored row, built by copying what the client sent (stored as sent) and setting what the server
    decided. Several times cheaper than building the maps again, on the hottest path there is."""
    msg = alert_pb2.Alert()
    msg.CopyFrom(sent)
    if len(msg.actions):
        msg.ClearField("actions")  # output only: ignored when sent
    msg.id = str(alert["id"])
    msg.state = ALERT_STATES[alert["state"]]
    msg.rule_set_version = alert["rule_set_version"]
    msg.observe_time.CopyFrom(timestamp(alert["observe_time"]))  # as stored: to the microsecond
    created = timestamp(alert["create_time"])
    msg.create_time.CopyFrom(created)
    msg.update_time.CopyFrom(created)  # a new alert has not been updated
    if actions:
        msg.actions.extend(action_message(a) for a in actions)
    return msg


def model_message(row: Mapping[str, Any]) -> retrain_pb2.Model:
    msg = retrain_pb2.Model(
        model_id=row["model_id"], enabled=row["enabled"], current_version=row["current_version"],
        max_retrains_per_day=row["max_retrains_per_day"] or 0,
        create_time=timestamp(row["create_time"]), update_time=timestamp(row["update_time"]),
    )
    json_format.ParseDict(row["training"], msg.training)
    if row["cooldown_override_s"] is not None:
        msg.cooldown_override.CopyFrom(duration(row["cooldown_override_s"]))
    if row["current_version_time"] is not None:
        msg.current_version_time.CopyFrom(timestamp(row["current_version_time"]))
    return msg


def training_json(spec: retrain_pb2.TrainingSpec) -> dict:
    return json_format.MessageToDict(spec, preserving_proto_field_name=True)


def diagnostic_message(d, source: str | None = None) -> rules_pb2.Diagnostic:
    level = rules_pb2.Diagnostic.LEVEL_ERROR if d.severity == "error" else rules_pb2.Diagnostic.LEVEL_WARNING
    return rules_pb2.Diagnostic(
        level=level, message=d.message, filename=d.filename, line=d.line, column=d.column,
        end_line=d.end_line, end_column=d.end_column, rendered=d.render(source) if source is not None else "",
    )


def rule_action_message(spec) -> rules_pb2.RuleAction:
    msg = rules_pb2.RuleAction(
        kind=ACTION_KINDS[spec.kind.upper()], mode=MODES.get((spec.mode or "").upper(), 0),
        priority=spec.priority or 0, cooldown_per_model=bool(spec.cooldown_per_model), target=spec.target or "",
    )
    if spec.cooldown_seconds:
        msg.cooldown.CopyFrom(duration(spec.cooldown_seconds))
    return msg


def rule_message(info) -> rules_pb2.Rule:
    return rules_pb2.Rule(
        name=info.name, title=info.title or "", condition=info.condition,
        actions=[rule_action_message(a) for a in info.actions],
        alert_types=list(info.alert_types or ()), line=info.line,
    )
