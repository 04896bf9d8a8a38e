"""Rows of retrain_jobs and model_versions as RetrainJob and ModelVersion messages, and the enum maps."""

from __future__ import annotations

from typing import Any, Mapping

from closedloop.v1 import common_pb2, retrain_pb2

from .convert import MODES as MODE_TO_PROTO
from .convert import timestamp

MODE_FROM_PROTO = {v: k for k, v in MODE_TO_PROTO.items()}
STATE_TO_PROTO = {name: retrain_pb2.JobState.Value(f"JOB_STATE_{name}")
                  for name in ("QUEUED", "RUNNING", "SUCCEEDED", "FAILED", "CANCELLED")}
STATE_FROM_PROTO = {v: k for k, v in STATE_TO_PROTO.items()}


def job_message(row: Mapping[str, Any], serving_version: int = 0) -> retrain_pb2.RetrainJob:
    """The job as a message; `serving_version` comes from store.jobs.serving_versions (0 until the
    job SUCCEEDED). The column new_version is the version the job trained: trained_version, and the
    deprecated new_version that says the same."""
    msg = retrain_pb2.RetrainJob(
        id=str(row["id"]), model_id=row["model_id"], mode=MODE_TO_PROTO[row["mode"]], priority=row["priority"],
        state=STATE_TO_PROTO[row["state"]], attempt=row["attempt"], max_attempts=row["max_attempts"],
        progress=row["progress"], progress_message=row["progress_message"],
        trigger=retrain_pb2.JobTrigger(
            alert_id=str(row["trigger_alert_id"] or ""), action_id=str(row["trigger_action_id"] or ""),
            rule=row["trigger_rule"] or "", manual=row["manual"],
        ),
        reason=row["reason"], metric=row["metric"] or "", promoted=row["promoted"],
        trained_version=row["new_version"], new_version=row["new_version"], serving_version=serving_version,
        error=row["error"], refit_fallback=row["refit_fallback"], coalesced_triggers=row["coalesced_triggers"],
    )
    if row["champion_metric"] is not None:
        msg.champion_metric = row["champion_metric"]
    if row["challenger_metric"] is not None:
        msg.challenger_metric = row["challenger_metric"]
    for name in ("create_time", "start_time", "end_time"):
        if row[name] is not None:
            getattr(msg, name).CopyFrom(timestamp(row[name]))
    return msg


def version_message(row: Mapping[str, Any]) -> retrain_pb2.ModelVersion:
    msg = retrain_pb2.ModelVersion(
        model_id=row["model_id"], version=row["version"], job_id=str(row["job_id"] or ""),
        mode=MODE_TO_PROTO.get(row["mode"], common_pb2.RETRAIN_MODE_UNSPECIFIED), metric=row["metric"],
        metric_value=row["metric_value"], promoted=row["promoted"], artifact_sha256=row["artifact_sha256"],
        data_window=row["data_window"], train_rows=row["train_rows"], holdout_rows=row["holdout_rows"],
        refit_fallback=row["refit_fallback"],
    )
    if row["champion_metric_value"] is not None:
        msg.champion_metric_value = row["champion_metric_value"]
    if row["create_time"] is not None:
        msg.create_time.CopyFrom(timestamp(row["create_time"]))
    return msg


def watch_key(row: Mapping[str, Any]) -> tuple:
    """What a watcher sees change: a new message is sent only when this differs."""
    return (row["state"], row["attempt"], round(row["progress"], 4), row["progress_message"], row["priority"],
            row["mode"], row["error"], row["coalesced_triggers"])
