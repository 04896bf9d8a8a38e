"""Conversions for monitoring: MonitoringSpec messages <-> the monitor's spec, stored windows -> messages."""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

from google.protobuf.duration_pb2 import Duration

from closedloop.v1 import common_pb2, monitor_pb2

from ..errors import FieldViolation, InvalidArgument
from ..monitor.spec import MonitoringSpec
from .convert import timestamp

KINDS = {"OBSERVATIONS": monitor_pb2.WINDOW_KIND_OBSERVATIONS, "OUTCOMES": monitor_pb2.WINDOW_KIND_OUTCOMES}
KIND_NAMES = {v: k for k, v in KINDS.items()}
STATES = {"OPEN": monitor_pb2.WINDOW_STATE_OPEN, "CLOSED": monitor_pb2.WINDOW_STATE_CLOSED}
SEVERITY_NAMES = {common_pb2.SEVERITY_LOW: "LOW", common_pb2.SEVERITY_MEDIUM: "MEDIUM",
                  common_pb2.SEVERITY_HIGH: "HIGH", common_pb2.SEVERITY_CRITICAL: "CRITICAL"}
SEVERITIES = {v: k for k, v in SEVERITY_NAMES.items()}
_OPTIONAL = ("min_rows", "alpha", "large_sample_rows", "wasserstein_threshold", "psi_threshold", "psi_bins",
             "js_threshold", "drift_share", "sketch_k", "outcome_window_rows")


def spec_from_message(msg: monitor_pb2.MonitoringSpec, field: str = "model.monitoring") -> MonitoringSpec:
    """The monitor's spec, defaults filled in; InvalidArgument naming `field`.<name> for bad values."""
    values: dict[str, Any] = {}
    bad: list[FieldViolation] = []
    if msg.HasField("window_rows"):
        values["window_rows"] = msg.window_rows or None
    if msg.HasField("window_duration"):
        seconds = msg.window_duration.ToNanoseconds() / 1e9
        if seconds < 0:
            bad.append(FieldViolation(f"{field}.window_duration", "must not be negative"))
        values["window_seconds"] = seconds or None
    for name in _OPTIONAL:
        if msg.HasField(name):
            values[name] = getattr(msg, name)
    if msg.features:
        values["features"] = tuple(msg.features)
    if msg.numeric_method:
        values["numeric_method"] = msg.numeric_method
    if msg.categorical_method:
        values["categorical_method"] = msg.categorical_method
    if msg.performance_severity:
        ladder = []
        for i, t in enumerate(msg.performance_severity):
            if t.severity not in SEVERITY_NAMES:
                bad.append(FieldViolation(f"{field}.performance_severity[{i}].severity", "required (LOW..CRITICAL)"))
            ladder.append((SEVERITY_NAMES.get(t.severity, "?"), t.drop))
        values["performance_severity"] = tuple(ladder)
    if bad:
        raise InvalidArgument(bad)
    try:
        return MonitoringSpec(**values).validate()
    except InvalidArgument as exc:
        prefix = field.rpartition(".")[0]
        raise InvalidArgument([dataclasses.replace(v, field=f"{prefix}.{v.field}" if prefix else v.field)
                               for v in exc.violations]) from None


def spec_message(spec: MonitoringSpec) -> monitor_pb2.MonitoringSpec:
    msg = monitor_pb2.MonitoringSpec(
        window_rows=spec.window_rows or 0, features=list(spec.features), numeric_method=spec.numeric_method,
        categorical_method=spec.categorical_method,
        performance_severity=[monitor_pb2.SeverityThreshold(severity=SEVERITIES[n], drop=d)
                              for n, d in spec.performance_severity])
    for name in _OPTIONAL:
        setattr(msg, name, getattr(spec, name))
    duration = Duration()
    duration.FromNanoseconds(int(round((spec.window_seconds or 0) * 1e9)))
    msg.window_duration.CopyFrom(duration)
    return msg


def feature_message(m: Mapping[str, Any]) -> monitor_pb2.FeatureDrift:
    msg = monitor_pb2.FeatureDrift(
        feature=m["feature"], method=m["method"], statistic=m["statistic"], threshold=m["threshold"],
        drifted=m["drifted"], effect=m["effect"], reference_rows=m["reference_rows"], window_rows=m["window_rows"])
    if m.get("p_value") is not None:
        msg.p_value = m["p_value"]
    return msg


def window_message(row: Mapping[str, Any], measurements: list[Mapping[str, Any]] = ()) -> monitor_pb2.DriftWindow:
    verdict = row["verdict"] or {}
    msg = monitor_pb2.DriftWindow(
        model_id=row["model_id"], version=row["version"], kind=KINDS[row["kind"]], sequence=row["seq"],
        state=STATES[row["state"]], rows=row["rows"], start_time=timestamp(row["start_time"]),
        close_time=timestamp(row["close_time"]), first_observe_time=timestamp(row["first_observe_time"]),
        last_observe_time=timestamp(row["last_observe_time"]), judged=row["judged"], note=verdict.get("note", ""),
        drift_score=verdict.get("drift_score", 0.0), drifted_share=verdict.get("drifted_share", 0.0),
        features=[feature_message(dict(m)) for m in measurements],
        alert_id=str(row["alert_id"]) if row["alert_id"] is not None else "")
    if verdict.get("prediction"):
        msg.prediction.CopyFrom(feature_message(verdict["prediction"]))
    performance = verdict.get("performance")
    if performance:
        msg.performance.CopyFrom(monitor_pb2.PerformanceResult(
            metric=performance["metric"], value=performance["value"], holdout_value=performance["holdout"],
            drop=performance["drop"], severity=SEVERITIES.get(performance.get("severity"), 0)))
    return msg
