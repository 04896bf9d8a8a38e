"""The client's methods, shared by Client and AsyncClient.

Each method builds its request and hands it to `self._invoke(service, method, request)`, which the
blocking client runs at once and the async client returns as an awaitable; so there is one
definition of every call. Enum arguments accept the enum value or its short name ("high", "full").

A method that acts on one resource takes its identifier first, named for the resource
(`get_alert(alert_id)`, `get_job(job_id)`, `get_model(model_id)`), positionally or by that keyword;
the request message carries it in the field the resource uses for its own id (`id`, `model_id`).
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any, Mapping

from google.protobuf import json_format
from google.protobuf.timestamp_pb2 import Timestamp

from .v1 import alert_pb2, common_pb2, monitor_pb2, notify_pb2, retrain_pb2, rules_pb2


def enum_value(enum, value: Any, prefix: str) -> int:
    """`high`, `HIGH`, `SEVERITY_HIGH` or 3 -> 3."""
    if value is None:
        return 0
    if isinstance(value, int):
        return value
    name = str(value).upper()
    if not name.startswith(prefix):
        name = prefix + name
    try:
        return enum.Value(name)
    except ValueError:
        choices = ", ".join(n.removeprefix(prefix).lower() for n in enum.keys() if not n.endswith("UNSPECIFIED"))
        raise ValueError(f"unknown {prefix.rstrip('_').lower()} {value!r}; one of {choices}") from None


def timestamp(value: dt.datetime | Timestamp | None) -> Timestamp | None:
    if value is None or isinstance(value, Timestamp):
        return value
    ts = Timestamp()
    ts.FromDatetime(value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc))
    return ts


def new_request_id() -> str:
    return uuid.uuid4().hex


def alert_request(model_id: str, type: str, severity: Any, *, metrics: Mapping[str, float] | None = None,
                  labels: Mapping[str, str] | None = None, source: str = "", observe_time: dt.datetime | None = None,
                  request_id: str | None = None) -> alert_pb2.CreateAlertRequest:
    """A CreateAlertRequest with a fresh request_id unless one is given."""
    return alert_pb2.CreateAlertRequest(
        alert=alert_pb2.Alert(model_id=model_id, type=type, severity=enum_value(common_pb2.Severity, severity, "SEVERITY_"),
                              metrics=dict(metrics or {}), labels=dict(labels or {}), source=source,
                              observe_time=timestamp(observe_time)),
        request_id=request_id or new_request_id())


class CallsMixin:
    """Every RPC of closedloop.v1 as a method; subclasses provide `_invoke` and `_stream`."""

    # --- alerts -------------------------------------------------------------------------------
    def create_alert(self, model_id: str, type: str, severity: Any, *, metrics: Mapping[str, float] | None = None,
                     labels: Mapping[str, str] | None = None, source: str = "",
                     observe_time: dt.datetime | None = None, request_id: str | None = None):
        """Send one alert; returns the stored Alert with the loop's decisions in `.actions`."""
        request = alert_request(model_id, type, severity, metrics=metrics, labels=labels, source=source,
                                observe_time=observe_time, request_id=request_id)
        return self._invoke("AlertService", "CreateAlert", request)

    def batch_create_alerts(self, alerts):
        """Send up to 1000 alerts in one call. `alerts`: CreateAlertRequest messages, or mappings of
        create_alert's arguments ({"model_id": ..., "type": ..., "severity": ..., "metrics": ...}).
        Returns a BatchCreateAlertsResponse: per alert, in order, `.alert` when `.code` is 0, else
        the code and message of that alert's own error (retry those; each keeps its request_id)."""
        requests = [a if isinstance(a, alert_pb2.CreateAlertRequest) else alert_request(**a) for a in alerts]
        return self._invoke("AlertService", "BatchCreateAlerts",
                            alert_pb2.BatchCreateAlertsRequest(requests=requests))

    def get_alert(self, alert_id: str):
        return self._invoke("AlertService", "GetAlert", alert_pb2.GetAlertRequest(id=str(alert_id)))

    def list_alerts(self, *, model_id: str = "", type: str = "", state: Any = None, start_time=None,
                    end_time=None, page_size: int = 0, page_token: str = ""):
        """One page; pass the response's next_page_token for the next."""
        request = alert_pb2.ListAlertsRequest(
            model_id=model_id, type=type, state=enum_value(alert_pb2.AlertState, state, "ALERT_STATE_"),
            start_time=timestamp(start_time), end_time=timestamp(end_time), page_size=page_size,
            page_token=page_token)
        return self._invoke("AlertService", "ListAlerts", request)

    def update_alert_state(self, alert_id: str, state: Any):
        request = alert_pb2.UpdateAlertStateRequest(
            id=str(alert_id), state=enum_value(alert_pb2.AlertState, state, "ALERT_STATE_"))
        return self._invoke("AlertService", "UpdateAlertState", request)

    # --- rules --------------------------------------------------------------------------------
    def validate_rules(self, source: str, filename: str = ""):
        return self._invoke("RuleService", "ValidateRules",
                            rules_pb2.ValidateRulesRequest(source=source, filename=filename))

    def apply_rules(self, source: str, filename: str = "", *, dry_run: bool = False):
        return self._invoke("RuleService", "ApplyRules",
                            rules_pb2.ApplyRulesRequest(source=source, filename=filename, dry_run=dry_run))

    def get_rule_set(self, version: int = 0):
        return self._invoke("RuleService", "GetRuleSet", rules_pb2.GetRuleSetRequest(version=version))

    def evaluate_rules(self, alert: alert_pb2.Alert, source: str = "", filename: str = ""):
        return self._invoke("RuleService", "EvaluateRules",
                            rules_pb2.EvaluateRulesRequest(alert=alert, source=source, filename=filename))

    def backtest_rules(self, source: str, start_time: dt.datetime, end_time: dt.datetime, filename: str = ""):
        return self._invoke("RuleService", "BacktestRules", rules_pb2.BacktestRulesRequest(
            source=source, filename=filename, start_time=timestamp(start_time), end_time=timestamp(end_time)))

    # --- models and jobs ----------------------------------------------------------------------
    def register_model(self, model: retrain_pb2.Model | Mapping[str, Any]):
        """Register or update a model; accepts a Model message or its JSON-shaped dict."""
        if not isinstance(model, retrain_pb2.Model):
            model = json_format.ParseDict(dict(model), retrain_pb2.Model())
        return self._invoke("RetrainService", "RegisterModel", retrain_pb2.RegisterModelRequest(model=model))

    def get_model(self, model_id: str):
        return self._invoke("RetrainService", "GetModel", retrain_pb2.GetModelRequest(model_id=model_id))

    def list_models(self, *, page_size: int = 0, page_token: str = ""):
        return self._invoke("RetrainService", "ListModels",
                            retrain_pb2.ListModelsRequest(page_size=page_size, page_token=page_token))

    def rollback_model(self, model_id: str, version: int = 0, reason: str = ""):
        return self._invoke("RetrainService", "RollbackModel",
                            retrain_pb2.RollbackModelRequest(model_id=model_id, version=version, reason=reason))

    def list_model_versions(self, model_id: str):
        return self._invoke("RetrainService", "ListModelVersions",
                            retrain_pb2.ListModelVersionsRequest(model_id=model_id))

    def submit_retrain(self, model_id: str, *, mode: Any = "full", priority: Any = "medium", reason: str = "",
                       request_id: str | None = None):
        request = retrain_pb2.SubmitRetrainRequest(
            model_id=model_id, mode=enum_value(common_pb2.RetrainMode, mode, "RETRAIN_MODE_"),
            priority=enum_value(common_pb2.Priority, priority, "PRIORITY_"), reason=reason,
            request_id=request_id or new_request_id())
        return self._invoke("RetrainService", "SubmitRetrain", request)

    def get_job(self, job_id: str):
        return self._invoke("RetrainService", "GetJob", retrain_pb2.GetJobRequest(id=str(job_id)))

    def list_jobs(self, *, model_id: str = "", state: Any = None, page_size: int = 0, page_token: str = ""):
        request = retrain_pb2.ListJobsRequest(
            model_id=model_id, state=enum_value(retrain_pb2.JobState, state, "JOB_STATE_"),
            page_size=page_size, page_token=page_token)
        return self._invoke("RetrainService", "ListJobs", request)

    def cancel_job(self, job_id: str):
        return self._invoke("RetrainService", "CancelJob", retrain_pb2.CancelJobRequest(id=str(job_id)))

    @staticmethod
    def _watch_job_request(job_id: str) -> retrain_pb2.WatchJobRequest:
        """WatchJob's request; the two clients stream it each in their own way."""
        return retrain_pb2.WatchJobRequest(id=str(job_id))

    def feedback_report(self, *, model_id: str = "", rule: str = "", start_time=None, end_time=None):
        return self._invoke("RetrainService", "GetFeedbackReport", retrain_pb2.GetFeedbackReportRequest(
            model_id=model_id, rule=rule, start_time=timestamp(start_time), end_time=timestamp(end_time)))

    def list_audit_records(self, *, start_time=None, page_size: int = 0, page_token: str = ""):
        """One page of the audit trail, newest first (operator token without model scopes)."""
        return self._invoke("RetrainService", "ListAuditRecords", retrain_pb2.ListAuditRecordsRequest(
            start_time=timestamp(start_time), page_size=page_size, page_token=page_token))

    # --- notifications ------------------------------------------------------------------------
    def list_notifications(self, *, state: Any = None, page_size: int = 0, page_token: str = ""):
        """The outbox, newest first; `state` e.g. "DEAD" for the dead letters."""
        request = notify_pb2.ListNotificationsRequest(
            state=enum_value(notify_pb2.NotificationState, state, "NOTIFICATION_STATE_"),
            page_size=page_size, page_token=page_token)
        return self._invoke("NotificationService", "ListNotifications", request)

    def retry_notification(self, notification_id: str):
        """Send a notification again from its first attempt."""
        return self._invoke("NotificationService", "RetryNotification",
                            notify_pb2.RetryNotificationRequest(id=str(notification_id)))

    # --- monitoring ---------------------------------------------------------------------------
    def log_observations(self, batches, *, timeout: float | None = None):
        """Stream observation batches (ObservationBatch messages, e.g. from `observation_batch`);
        returns the LogSummary once the server has stored them all. Not retried: a stream is not
        idempotent as a whole (a cut stream keeps the batches the server had counted)."""
        return self._invoke("MonitorService", "LogObservations", _messages(batches), timeout)

    def log_outcomes(self, batches, *, timeout: float | None = None):
        """Stream OutcomeBatch messages (e.g. from `outcome_batch`); returns the LogSummary."""
        return self._invoke("MonitorService", "LogOutcomes", _messages(batches), timeout)

    def drift_report(self, model_id: str, *, version: int = 0, window_count: int = 0):
        return self._invoke("MonitorService", "GetDriftReport", monitor_pb2.GetDriftReportRequest(
            model_id=model_id, version=version, window_count=window_count))

    def list_drift_windows(self, model_id: str, *, version: int = 0, kind: Any = None, page_size: int = 0,
                           page_token: str = ""):
        return self._invoke("MonitorService", "ListDriftWindows", monitor_pb2.ListDriftWindowsRequest(
            model_id=model_id, version=version, kind=enum_value(monitor_pb2.WindowKind, kind, "WINDOW_KIND_"),
            page_size=page_size, page_token=page_token))


def _messages(batches):
    """A list is sent as an iterator; iterators and async iterators go through as they are."""
    return iter(batches) if isinstance(batches, (list, tuple)) else batches


def observation_batch(model_id: str, columns: Mapping[str, Any], *, predictions=None, prediction_ids=None,
                      version: int = 0, observe_time: dt.datetime | None = None) -> "monitor_pb2.ObservationBatch":
    """One columnar batch: `columns` maps a feature to its values (numbers, NaN/None = missing; or
    strings, None = missing), all of one length."""
    batch = monitor_pb2.ObservationBatch(model_id=model_id, version=version, feature_names=list(columns),
                                         observe_time=timestamp(observe_time))
    for values in columns.values():
        column = batch.columns.add()
        values = values.tolist() if hasattr(values, "tolist") else list(values)
        if any(isinstance(v, str) for v in values):
            column.categories.values.extend("" if v is None else str(v) for v in values)
        else:
            column.numbers.values.extend(float("nan") if v is None else v for v in values)
    if predictions is not None:
        batch.predictions.extend(predictions.tolist() if hasattr(predictions, "tolist") else predictions)
    if prediction_ids is not None:
        batch.prediction_ids.extend(str(i) for i in prediction_ids)
    return batch


def outcome_batch(model_id: str, outcomes, predictions, *, version: int = 0,
                  observe_time: dt.datetime | None = None) -> "monitor_pb2.OutcomeBatch":
    return monitor_pb2.OutcomeBatch(
        model_id=model_id, version=version, observe_time=timestamp(observe_time),
        outcomes=outcomes.tolist() if hasattr(outcomes, "tolist") else list(outcomes),
        predictions=predictions.tolist() if hasattr(predictions, "tolist") else list(predictions))
