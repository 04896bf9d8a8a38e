"""In-process Prometheus metrics: what this process measured, served by the HTTP side's /metrics.

A leaf module (layer 0) so that the loop, the executor and the API record with one line each and
without importing http/. Everything lives in REGISTRY, a registry of our own: prometheus_client's
global one would also export the library's process/platform collectors and anything another import
registers, which the dashboards and the metric-name test must not depend on.

Counters and histograms are per process (each replica exports its own; Prometheus sums them). The
database truths every replica shares (queue depth, table sizes) are read at scrape time by
http/metrics_page.py from store/stats.py, not counted here.
"""

from __future__ import annotations

import inspect
import time
from typing import Any, Iterable

from prometheus_client import CollectorRegistry, Counter, Histogram

REGISTRY = CollectorRegistry(auto_describe=True)

# Latency buckets from 1 ms to 10 s: CreateAlert sits in the low milliseconds, a slow database in seconds.
_FAST = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# Job queue waits and run times: seconds to hours.
_SLOW = (0.1, 0.5, 1, 5, 15, 60, 300, 900, 1800, 3600, 7200, 21600)

ALERTS_INGESTED = Counter(
    "closedloop_alerts_ingested", "Alerts handed to the ingest path, by alert type and outcome "
    "(created, duplicate: a request_id seen before, rejected: an error answered for that alert).",
    ["type", "outcome"], registry=REGISTRY)
DECISIONS = Counter(
    "closedloop_decisions", "Decisions the loop wrote (closed_loop_actions rows), by rule and decision "
    "(QUEUED, COALESCED, SKIPPED_COOLDOWN, RECORDED, ...).", ["rule", "decision"], registry=REGISTRY)
DECISION_SECONDS = Histogram(
    "closedloop_decision_batch_seconds", "Time to evaluate and commit one group-commit batch of alerts "
    "(rules, decision transaction, jobs).", buckets=_FAST, registry=REGISTRY)
RPC_SECONDS = Histogram(
    "closedloop_rpc_duration_seconds", "Server-side latency of unary RPCs (CreateAlert among them), "
    "by method, errors included.", ["method"], buckets=_FAST, registry=REGISTRY)
DECISION_CONFLICTS = Counter(
    "closedloop_decision_conflicts", "Decision batches whose optimistic write found the models' state "
    "changed since it was read (another replica, a finished job, a manual retrain) and were decided "
    "again under the decision locks.", registry=REGISTRY)
JOBS_FINISHED = Counter(
    "closedloop_jobs_finished", "Job attempts that ended, by outcome (succeeded, failed: no attempts "
    "left, retry: failed and requeued, cancelled, released: handed back at shutdown).",
    ["outcome"], registry=REGISTRY)
QUEUE_WAIT_SECONDS = Histogram(
    "closedloop_job_queue_wait_seconds", "From a job becoming runnable to a worker claiming it.",
    buckets=_SLOW, registry=REGISTRY)
JOB_RUN_SECONDS = Histogram(
    "closedloop_job_run_seconds", "From claim to a recorded success.", buckets=_SLOW, registry=REGISTRY)
PROMOTIONS = Counter(
    "closedloop_promotions", "Retrains whose challenger was promoted.", registry=REGISTRY)
ROLLBACKS = Counter(
    "closedloop_rollbacks", "Rollbacks to the previous version decided by a rule.", registry=REGISTRY)
NOTIFICATIONS = Counter(
    "closedloop_notifications", "Notification delivery attempts, by target name and outcome "
    "(delivered, retry, dead_letter).", ["target", "outcome"], registry=REGISTRY)
HTTP_REQUESTS = Counter(
    "closedloop_http_requests", "Requests to the HTTP side, by route and status code.",
    ["route", "code"], registry=REGISTRY)


class LabelledChildren:
    """A metric's children by label values, looked up in a dict: `labels()` validates the values and
    takes a lock on every call, a cost per alert on the ingest path. The children are the metric's own
    (the same objects `labels()` returns), so the exposition is unchanged."""

    def __init__(self, metric) -> None:
        self.metric = metric
        self._children: dict[tuple[str, ...], Any] = {}

    def __call__(self, *values: str):
        child = self._children.get(values)
        if child is None:
            child = self._children[values] = self.metric.labels(*values)
        return child


ingested = LabelledChildren(ALERTS_INGESTED)
decisions = LabelledChildren(DECISIONS)
http_requests = LabelledChildren(HTTP_REQUESTS)


def record_ingest_batch(alert_types: Iterable[str], results: Iterable[Any], seconds: float) -> None:
    """One group-commit batch: `results` holds, per alert, an IngestResult or the exception answered."""
    DECISION_SECONDS.observe(seconds)
    for alert_type, result in zip(alert_types, results):
        if isinstance(result, BaseException):
            ingested(alert_type, "rejected").inc()
            continue
        if not result.created:
            ingested(alert_type, "duplicate").inc()
            continue
        ingested(alert_type, "created").inc()
        for action in result.actions:
            decisions(action["rule"], action["decision"]).inc()
            if action["decision"] == "ROLLED_BACK":
                ROLLBACKS.inc()


def record_job_claimed(job: Any) -> None:
    """A claimed job row: its wait is the database's claim time minus when it became runnable."""
    QUEUE_WAIT_SECONDS.observe(max(0.0, (job["update_time"] - job["run_after"]).total_seconds()))


def record_job_finished(outcome: str, run_s: float | None = None, promoted: bool = False) -> None:
    JOBS_FINISHED.labels(outcome).inc()
    if run_s is not None:
        JOB_RUN_SECONDS.observe(run_s)
    if promoted:
        PROMOTIONS.inc()


def timed_rpc(handler, method: str, kind: str):
    """A unary-unary `handler` wrapped to observe RPC_SECONDS; streaming handlers (`kind` is grpc's
    handler attribute name) are returned unchanged: their duration is a stream's lifetime, not a latency."""
    if kind != "unary_unary" or not inspect.iscoroutinefunction(handler):
        return handler
    histogram = RPC_SECONDS.labels(method)

    async def call(request, context):
        started = time.perf_counter()
        try:
            return await handler(request, context)
        finally:
            histogram.observe(time.perf_counter() - started)
    return call
