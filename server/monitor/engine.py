"""The live side of monitoring: counts batches into windows, flushes them, closes them, raises alerts.

Every server keeps, per (model, version, kind), the part of the open window it has counted since its
last flush (a `WindowAccumulator` for observations, an `OutcomeWindow` for outcomes). A flush merges that
part into the server's partial row of the window in PostgreSQL, under the window's advisory lock
(store/monitoring.py). Flushes happen when a stream ends or is cut (so everything a server counted is
stored), when this server's part would fill the window or reaches a quarter of it or FLUSH_ROWS rows (in
the background; a stream waits only if the previous flush is still running), and every `flush_interval`
seconds. Counting a batch on the event loop is O(columns) numpy work (moments, missing counts, a float32
copy of each column: states.py); the KLL sketches, ~40 ns a value and GIL-bound, are built when a flush
serializes the part, in a worker process of the engine's own (`_Worker`), so the event loop keeps
receiving while they are built and a second core does the sketching; a closing observation window is
judged there too (reading ~20,000 quantiles and CDF points from the sketches is GIL-bound as well). The
flush that brings the window to its size closes it in the same transaction, and the periodic round
closes windows whose time is up: under the lock the closer merges every server's partial, so the verdict
is the one a single server that saw everything would reach, stores one measurement per feature and
marks the window closed; a server that comes second finds it closed and does nothing.

A crossed window becomes an alert that enters the normal ingest path (`AlertIngestor.submit`): rules,
decisions, cooldowns and coalescing treat it like any client's alert. Its request_id names the model,
version, kind and window, so a close retried after a failure raises nothing twice.

Windows belong to one version: a batch without a version counts for the model's current version (read
from the registry, refreshed on NOTIFY and at most `model_ttl` seconds old), and the reference is that
version's profile, so after a promotion new rows fill new windows judged against the new profile.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import datetime as dt
import hashlib
import multiprocessing
import time
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field

import asyncpg
import structlog

from closedloop.dsl.schema import LEVELS

from ..errors import FailedPrecondition, FieldViolation, InvalidArgument
from ..store import monitoring as store
from ..store.alerts import NewAlert
from .detectors import FeatureVerdict, judge_window
from .outcomes import OutcomeWindow
from .profile import ReferenceProfile
from .spec import MonitoringSpec
from .window import WindowAccumulator

log = structlog.get_logger(__name__)

SOURCE = "closedloop.monitor"
OBSERVATIONS, OUTCOMES = "OBSERVATIONS", "OUTCOMES"
# Drift alert severity by drift_score (the largest normalised effect among drifted features).
DRIFT_SEVERITY = ((0.5, LEVELS["high"]), (0.25, LEVELS["medium"]))
MAX_LABEL_BYTES = 1024
_PROFILE_CACHE = 256
# A server's unflushed part of an observation window is flushed (its sketches built) once it has this many
# rows, even when a quarter window is more: raw values wait in memory (4 bytes each per numeric feature)
# only this long. Well below states.MAX_BUFFERED, so the event loop does not fold sketches itself unless
# many streams of one model add their batches while a flush is being stored.
FLUSH_ROWS = 4_096


@dataclass(frozen=True)
class Target:
    """A model version being monitored: what a batch for it is counted and judged with."""

    model_id: str
    version: int
    spec: MonitoringSpec
    profile: ReferenceProfile

    def row_limit(self, kind: str) -> int | None:
        return self.spec.window_rows if kind == OBSERVATIONS else self.spec.outcome_window_rows


@dataclass
class _Pending:
    """This server's rows of one (model, version, kind) since its last flush."""

    target: Target
    state: WindowAccumulator | OutcomeWindow
    first: dt.datetime | None = None
    last: dt.datetime | None = None
    flushed_rows: int = 0  # the open window's rows over all servers, as of our last flush

    def observed(self, first: dt.datetime, last: dt.datetime) -> None:
        self.first = first if self.first is None else min(self.first, first)
        self.last = last if self.last is None else max(self.last, last)


@dataclass
class _Model:
    expires: float
    current_version: int
    spec: MonitoringSpec
    versions: set[int] = field(default_factory=set)


class MonitorEngine:
    def __init__(self, pool: asyncpg.Pool, ingestor, server_id: str, *, flush_interval: float = 1.0,
                 model_ttl: float = 1.0) -> None:
        self.pool = pool
        self.ingestor = ingestor  # loop.ingest.AlertIngestor: submit(NewAlert) -> IngestResult
        self.server_id = server_id
        self.flush_interval = flush_interval
        self.model_ttl = model_ttl
        self._pending: dict[tuple[str, int, str], _Pending] = {}
        self._locks: dict[tuple[str, int, str], asyncio.Lock] = {}
        self._flushing: dict[tuple[str, int, str], asyncio.Task] = {}
        self._models: dict[str, _Model] = {}
        self._profiles: dict[tuple[str, int], ReferenceProfile] = {}
        self._task: asyncio.Task | None = None
        self._worker = _Worker()
        self.rows_counted = 0  # rows of every batch this server counted (for metrics and tests)

    async def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="monitor-flush")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        await asyncio.gather(*self._flushing.values(), return_exceptions=True)
        try:
            await self.flush(list(self._pending))
        finally:
            self._worker.shutdown()

    def invalidate(self, model_id: str | None = None) -> None:
        """Forget a model's current version and spec (all models for None); profiles never change."""
        if model_id is None:
            self._models.clear()
        else:
            self._models.pop(model_id, None)

    # -- resolving a batch's model version ---------------------------------------------------------

    async def target(self, model_id: str, version: int = 0) -> Target:
        """The version a batch counts for; InvalidArgument for an unknown model or version,
        FailedPrecondition when the version has no reference profile yet."""
        model = self._models.get(model_id)
        if model is None or model.expires < time.monotonic() or (version and version not in model.versions
                                                                    and version != model.current_version):
            model = await self._load_model(model_id, version)
        version = version or model.current_version
        if not version:
            raise FailedPrecondition(f"model {model_id!r} has no trained version yet: nothing to compare with")
        profile = self._profiles.get((model_id, version))
        if profile is None:
            async with self.pool.acquire() as conn:
                data = await store.get_profile(conn, model_id, version)
            if data is None:
                raise FailedPrecondition(f"version {version} of {model_id!r} has no reference profile; build one "
                                         f"with `closedloop models profile {model_id} --version {version}`")
            profile = await asyncio.to_thread(ReferenceProfile.from_bytes, data)
            if len(self._profiles) >= _PROFILE_CACHE:
                self._profiles.pop(next(iter(self._profiles)))
            self._profiles[(model_id, version)] = profile
        return Target(model_id, version, model.spec, profile)

    async def _load_model(self, model_id: str, version: int) -> _Model:
        async with self.pool.acquire() as conn:
            row = await store.monitored_model(conn, model_id)
            if row is None:
                raise InvalidArgument(FieldViolation("model_id", f"model {model_id!r} is not registered"))
            if version and not await store.version_exists(conn, model_id, version):
                raise InvalidArgument(FieldViolation("version", f"model {model_id!r} has no version {version}"))
        model = _Model(time.monotonic() + self.model_ttl, row["current_version"], MonitoringSpec.from_dict(row["spec"]))
        old = self._models.get(model_id)
        model.versions = (old.versions if old else set()) | {version} - {0}
        self._models[model_id] = model
        return model

    # -- counting ------------------------------------------------------------------------------------

    async def log_observations(self, target: Target, columns: dict, predictions, first: dt.datetime,
                               last: dt.datetime) -> int:
        """Count one checked batch (all of it or, on InvalidArgument, none of it); returns its rows."""
        return await self._count(target, OBSERVATIONS, columns, predictions, first, last)

    async def log_outcomes(self, target: Target, outcomes, predictions, first: dt.datetime,
                           last: dt.datetime) -> int:
        return await self._count(target, OUTCOMES, outcomes, predictions, first, last)

    async def _count(self, target: Target, kind: str, values, predictions, first: dt.datetime,
                     last: dt.datetime) -> int:
        key = (target.model_id, target.version, kind)
        pending = self._pending_for(key, target)
        rows = pending.state.update(values, predictions)
        self.rows_counted += rows
        pending.observed(first, last)
        await self._flush_if_full(key, pending)
        return rows

    def _pending_for(self, key: tuple[str, int, str], target: Target) -> _Pending:
        pending = self._pending.get(key)
        if pending is None:
            pending = self._pending[key] = _Pending(target, self._fresh(key, target))
        return pending

    @staticmethod
    def _fresh(key: tuple[str, int, str], target: Target) -> WindowAccumulator | OutcomeWindow:
        if key[2] == OUTCOMES:
            return OutcomeWindow(target.model_id, target.version)
        return WindowAccumulator.for_profile(target.model_id, target.version, target.profile,
                                             target.spec.features, target.spec.window_sketch_k)

    async def _flush_if_full(self, key: tuple[str, int, str], pending: _Pending) -> None:
        """Hand this server's rows to a background flush once they would fill the window or reach a
        part: a quarter of it (observations: or FLUSH_ROWS, which bounds the raw values held). The rows
        are taken at once (later batches start a new pending part), so a window closes with at most a
        part plus one batch per concurrent stream more than its size (the streams that wait for the
        previous flush each add a batch first), and exactly at its size when one stream's batches
        divide it."""
        limit = pending.target.row_limit(key[2])
        parts = [max(1, limit // 4)] if limit is not None else []
        if key[2] == OBSERVATIONS:
            parts.append(FLUSH_ROWS)
        if not parts:
            return
        fills = limit is not None and pending.flushed_rows + pending.state.rows >= limit
        if fills or pending.state.rows >= min(parts):
            running = self._flushing.get(key)
            if running is not None and not running.done():
                # Back-pressure: the stream waits for the previous flush rather than piling up rows.
                await asyncio.wait([running])
            taken = self._pending.pop(key, None)
            if taken is not None:
                task = asyncio.create_task(self._flush_one(key, taken), name=f"monitor-flush-{key[0]}")
                task.add_done_callback(_log_failure)
                self._flushing[key] = task

    # -- flushing and closing --------------------------------------------------------------------------

    async def flush(self, keys) -> None:
        """Store this server's pending rows of `keys`; the flush that fills a window closes it."""
        for key in keys:
            running = self._flushing.get(key)
            if running is not None and not running.done():
                await asyncio.wait([running])
            await self._flush_one(key)

    async def _flush_one(self, key: tuple[str, int, str], pending: _Pending | None = None) -> None:
        """Flush `pending` (default: whatever is pending for `key` when the lock is ours)."""
        async with self._locks.setdefault(key, asyncio.Lock()):
            if pending is None:
                pending = self._pending.pop(key, None)
            if pending is None or pending.state.rows == 0:
                return
            target = pending.target
            limit = target.row_limit(key[2])
            try:
                async with self.pool.acquire() as conn:
                    async with store.window_transaction(conn, *key):
                        window = await store.open_window(conn, *key, target.spec.window_seconds)
                        existing = await store.read_partial(conn, window["id"], self.server_id)
                        merged, rows = await self._worker.run(key[2], _merged_bytes, existing, pending.state)
                        total = await store.write_partial(
                            conn, window["id"], self.server_id, total_rows=rows, added_rows=pending.state.rows,
                            state=merged, first_observe=pending.first, last_observe=pending.last)
                        if limit is not None and total >= limit:
                            # Closed in the transaction that filled it: no other flush can land in between.
                            await self._close_locked(conn, target, window["id"])
                            total = 0
            except BaseException:
                self._restore(key, pending)  # nothing counted is dropped: the next flush tries again
                raise
            if key in self._pending:
                self._pending[key].flushed_rows = total
            else:
                self._pending[key] = _Pending(target, self._fresh(key, target), flushed_rows=total)

    def _restore(self, key: tuple[str, int, str], pending: _Pending) -> None:
        newer = self._pending.get(key)
        if newer is not None:
            pending.state.merge(newer.state)
            if newer.first is not None:
                pending.observed(newer.first, newer.last)
        self._pending[key] = pending

    async def close(self, model_id: str, version: int, kind: str, *, window_id: int) -> bool:
        """Close a window whose time is up, if it is still open; returns whether this call closed it."""
        target = await self.target(model_id, version)
        async with self.pool.acquire() as conn:
            async with store.window_transaction(conn, model_id, version, kind):
                return await self._close_locked(conn, target, window_id)

    async def _close_locked(self, conn: asyncpg.Connection, target: Target, window_id: int) -> bool:
        """Merge every partial, judge, store the measurements, raise the alert; the window lock is held."""
        window = await store.get_window(conn, window_id)
        if window is None or window["state"] != "OPEN":
            return False  # another server closed it
        states = await store.partial_states(conn, window_id)
        judged, verdict, measurements, alert = await self._worker.run(window["kind"], _judge, target, window["kind"],
                                                                      dict(window.items()), states)
        alert_id = None
        if alert is not None:
            # Raised before the close commits: if the commit fails, the next close finds this alert by
            # its request_id instead of raising a second one.
            alert_id = (await self.ingestor.submit(alert)).alert["id"]
        await store.insert_measurements(conn, window, measurements)
        await store.close_window(conn, window_id, judged=judged, verdict=verdict, alert_id=alert_id)
        log.info("monitor.window_closed", model_id=target.model_id, version=target.version, kind=window["kind"],
                 window=window["seq"], rows=window["rows"], judged=judged, alert_id=alert_id)
        return True

    async def close_due(self) -> int:
        """Close the windows whose time is up (any server's); returns how many this call closed."""
        async with self.pool.acquire() as conn:
            due = await store.due_windows(conn)
        closed = 0
        for row in due:
            try:
                closed += await self.close(row["model_id"], row["version"], row["kind"], window_id=row["id"])
            except (InvalidArgument, FailedPrecondition) as exc:  # model removed, profile gone: keep sweeping
                log.warning("monitor.close_failed", window_id=row["id"], error=str(exc))
        return closed

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.flush_interval)
            try:
                await self.flush(list(self._pending))
                await self.close_due()
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - a failed round must not end the flushing
                log.exception("monitor.flush_failed")


class _Worker:
    """The engine's worker process, for the GIL-bound work on observation windows: merging a part into the
    stored partial and serializing it (which builds the part's sketches from its buffered values), and
    judging a closing window. Measured: datasketches holds the GIL, so a thread would not free the event
    loop. One process, started on first use (spawn, as executor/training_spec.py explains: forking a
    process with gRPC's threads is unsafe). Outcome windows have no sketches and stay in a thread. The
    work is pure, so when the worker has died (killed, out of memory) it is replaced and the work run
    once more; if that fails too, the flush or close fails and is retried later (rows stay pending, the
    window stays open)."""

    def __init__(self) -> None:
        self._pool: concurrent.futures.ProcessPoolExecutor | None = None

    async def run(self, kind: str, fn, *args):
        if kind != OBSERVATIONS:
            return await asyncio.to_thread(fn, *args)
        for attempt in (1, 2):
            if self._pool is None:
                self._pool = concurrent.futures.ProcessPoolExecutor(
                    max_workers=1, mp_context=multiprocessing.get_context("spawn"))
            pool = self._pool
            try:
                return await asyncio.get_running_loop().run_in_executor(pool, fn, *args)
            except BrokenProcessPool:
                if self._pool is pool:
                    self._pool = None
                pool.shutdown(wait=False)
                if attempt == 2:
                    raise
                log.warning("monitor.worker_replaced")

    def shutdown(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None


def _log_failure(task: asyncio.Task) -> None:
    # A failed background flush keeps its rows pending (see _flush_one); the next flush retries.
    if not task.cancelled() and task.exception() is not None:
        log.warning("monitor.flush_failed", error=repr(task.exception()))


# -- pure helpers, run in a thread or the worker process -----------------------------------------------

def _merged_bytes(existing: bytes | None, delta: WindowAccumulator | OutcomeWindow) -> tuple[bytes, int]:
    if existing is None:
        return delta.to_bytes(), delta.rows
    base = type(delta).from_bytes(existing)
    base.merge(delta)
    return base.to_bytes(), base.rows


def _merge_all(kind: str, target: Target, states: list[bytes]) -> WindowAccumulator | OutcomeWindow:
    cls = OutcomeWindow if kind == OUTCOMES else WindowAccumulator
    merged = None
    for data in states:
        part = cls.from_bytes(data)
        if merged is None:
            merged = part
        else:
            merged.merge(part)
    return merged if merged is not None else MonitorEngine._fresh((target.model_id, target.version, kind), target)


def _judge(target: Target, kind: str, window, states: list[bytes]):
    """(judged, verdict document, measurement tuples, NewAlert or None) for a closing window."""
    merged = _merge_all(kind, target, states)
    spec = target.spec
    minimum = spec.min_rows if kind == OBSERVATIONS else spec.outcome_min_rows
    if merged.rows < minimum:
        return False, {"note": f"{merged.rows} rows, fewer than min_rows ({minimum}): not judged"}, [], None
    if kind == OUTCOMES:
        return _judge_outcomes(target, window, merged)
    verdict = judge_window(target.profile, merged, spec)
    document = {"drift_score": verdict.drift_score, "drifted_share": verdict.drifted_share, "alert": verdict.alert,
                "drifted_features": list(verdict.drifted_features),
                "prediction": _feature_doc(verdict.prediction) if verdict.prediction else None}
    measurements = [(v.feature, v.method, v.statistic, v.p_value, v.threshold, v.drifted, v.effect,
                     v.reference_rows, v.window_rows) for v in verdict.features]
    alert = None
    if verdict.alert:
        severity = next((level for bound, level in DRIFT_SEVERITY if verdict.drift_score >= bound), LEVELS["low"])
        labels = {"drifted_features": _fit_label(verdict.alert_labels()["drifted_features"])}
        alert = _alert(window, "drift", severity, verdict.alert_metrics(), labels)
    return True, document, measurements, alert


def _judge_outcomes(target: Target, window, merged: OutcomeWindow):
    profile = target.profile
    if profile.metric is None or profile.holdout_metric is None:
        return False, {"note": "the reference profile has no holdout metric: not judged"}, [], None
    try:
        verdict = merged.judge(profile.metric, profile.holdout_metric, target.spec)
    except ValueError as exc:  # e.g. roc_auc over outcomes of one class
        return False, {"note": f"not judged: {exc}"}, [], None
    document = {"performance": {"metric": verdict.metric, "value": verdict.value, "holdout": verdict.holdout,
                                "drop": verdict.drop, "severity": verdict.severity}}
    alert = None
    if verdict.severity is not None:
        alert = _alert(window, "performance", LEVELS[verdict.severity.lower()], verdict.alert_metrics(),
                       {"metric": verdict.metric})
    return True, document, [], alert


def _feature_doc(v: FeatureVerdict) -> dict:
    return {"feature": v.feature, "method": v.method, "statistic": v.statistic, "p_value": v.p_value,
            "threshold": v.threshold, "drifted": v.drifted, "effect": v.effect, "reference_rows": v.reference_rows,
            "window_rows": v.window_rows}


def _fit_label(value: str) -> str:
    if len(value.encode()) <= MAX_LABEL_BYTES:
        return value
    return value.encode()[: MAX_LABEL_BYTES - 4].decode(errors="ignore").rpartition(",")[0] + ",..."


def _alert(window, alert_type: str, severity: int, metrics: dict, labels: dict) -> NewAlert:
    request_id = f"monitor:{window['model_id']}:v{window['version']}:{window['kind'].lower()}:{window['seq']}"
    return NewAlert(
        request_id=request_id,
        # One fingerprint per window: a close retried after a failure finds its alert, not a conflict.
        request_hash=hashlib.sha256(f"{SOURCE}\0{request_id}".encode()).digest(),
        model_id=window["model_id"], alert_type=alert_type, severity=severity,
        metrics={k: float(v) for k, v in metrics.items()},
        labels={**labels, "version": str(window["version"]), "window": str(window["seq"])},
        source=SOURCE, observe_time=window["last_observe_time"] or dt.datetime.now(dt.timezone.utc))
