"""The live side of monitoring: counts batches into windows, flushes them, closes them, raises alerts.

Every server keeps, per (model, version, kind), the part of the open window it has counted since its
last flush (a `WindowAccumulator` for observations, an `OutcomeWindow` for outcomes). Counting a batch
is a few numpy passes on the event loop (histogram.py: bins cut at the reference's quantiles, exact,
~100-200 us per 1,000 x 20 batch); a batch that would take this server's part past the window's size is
split at the boundary, and the part that fills the window is sealed for the flush that closes it while
the rest starts the next window's part. A flush merges a part into the server's partial row of the
window in PostgreSQL, under the window's advisory lock (store/monitoring.py); the server keeps its own
last stored partial in memory, so a flush is BEGIN, lock, open window, one write, COMMIT.

Flushes run in one background task per key (`_drain`), never in a stream's path: a stream only waits
when MAX_SEALED sealed windows are still waiting for their close (the database is behind). They happen
when a part is sealed or reaches a quarter of the window, when a stream ends or is cut (everything
pending is stored before the LogSummary), and every `flush_interval` seconds. The flush that brings the
window to its size closes it in the same transaction, and the periodic round closes windows whose time
is up: under the lock the closer merges every server's partial (a vector add per feature), so the
verdict is the one a single server that saw everything would reach, judges it (~1 ms for 20 features),
stores one measurement per feature and marks the window closed; a server that comes second finds it
closed and does nothing.

A crossed window becomes an alert that enters the normal ingest path (`AlertIngestor.submit`): rules,
decisions, cooldowns and coalescing treat it like any client's alert. Its request_id names the model,
version, kind and window, so a close retried after a failure raises nothing twice.

Windows belong to one version: a batch without a version counts for the model's current version (read
from the registry, refreshed on NOTIFY and at most `model_ttl` seconds old), and the reference is that
version's profile, so after a promotion new rows fill new windows judged against the new profile.
"""

from __future__ import annotations

import asyncio
import collections
import datetime as dt
import hashlib
import time
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
# Sealed parts (each fills a window) waiting for their closing flush before a stream waits too.
MAX_SEALED = 2


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
    sealed: bool = False  # fills the window: its flush closes it
    generation: int = 0  # how many parts of this key were sealed before this one's window

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
        self._sealed: dict[tuple[str, int, str], collections.deque[_Pending]] = {}
        self._stored: dict[tuple[str, int, str], tuple[int, object]] = {}  # (window id, our stored partial)
        self._locks: dict[tuple[str, int, str], asyncio.Lock] = {}
        self._flushing: dict[tuple[str, int, str], asyncio.Task] = {}
        self._progress: dict[tuple[str, int, str], asyncio.Event] = {}
        # Keys whose windows had other servers' rows, and keys whose flushes so far found only ours.
        self._shared: set[tuple[str, int, str]] = set()
        self._solo: set[tuple[str, int, str]] = set()
        self._models: dict[str, _Model] = {}
        self._profiles: dict[tuple[str, int], ReferenceProfile] = {}
        self._task: asyncio.Task | None = None
        self.rows_counted = 0  # rows of every batch this server counted (for metrics and tests)

    async def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="monitor-flush")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        await asyncio.gather(*self._flushing.values(), return_exceptions=True)
        await self.flush(self._keys())

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
        batch = pending.state.check(values, predictions)  # the whole batch, before anything is counted
        at = 0
        while at < batch.rows:
            pending = self._pending_for(key, target)
            limit = pending.target.row_limit(kind)
            room = batch.rows - at if limit is None else limit - pending.flushed_rows - pending.state.rows
            at += pending.state.count(batch, at, at + max(room, 0))
            pending.observed(first, last)
            if limit is not None and pending.flushed_rows + pending.state.rows >= limit:
                self._seal(key)  # this part fills the window: the rest of the batch starts the next one
        self.rows_counted += batch.rows
        if self._sealed.get(key) or self._part_due(key, self._pending[key]):
            self._drain_soon(key)
        while (len(self._sealed.get(key, ())) >= MAX_SEALED
               or (key in self._shared and self._part_due(key, self._pending[key]))):
            # Back-pressure, only when closes fall behind or when other servers count this window too
            # (a part then stays within a quarter window and a batch per stream, which bounds how far
            # the window can overshoot its size: the flush that fills it carries at most that).
            progress = self._progress.setdefault(key, asyncio.Event())
            progress.clear()
            self._drain_soon(key)
            await progress.wait()
        return batch.rows

    def _pending_for(self, key: tuple[str, int, str], target: Target) -> _Pending:
        """This server's part of the open window. A window keeps the spec it started with (its bins
        must not change under it); a changed spec applies from the next window this server starts."""
        pending = self._pending.get(key)
        if pending is None or (pending.state.rows == 0 and pending.flushed_rows == 0
                               and pending.target.spec != target.spec):
            pending = self._pending[key] = _Pending(target, self._fresh(key, target),
                                                    generation=0 if pending is None else pending.generation)
        return pending

    @staticmethod
    def _fresh(key: tuple[str, int, str], target: Target) -> WindowAccumulator | OutcomeWindow:
        if key[2] == OUTCOMES:
            return OutcomeWindow(target.model_id, target.version)
        spec = target.spec
        return WindowAccumulator.for_profile(target.model_id, target.version, target.profile, spec.features,
                                             spec.window_bins, spec.psi_bins)

    def _seal(self, key: tuple[str, int, str]) -> None:
        """Set the pending part aside for the flush that closes its window; the next part starts empty."""
        pending = self._pending.pop(key)
        pending.sealed = True
        self._sealed.setdefault(key, collections.deque()).append(pending)
        self._pending[key] = _Pending(pending.target, pending.state.fresh(), generation=pending.generation + 1)

    def _part_due(self, key: tuple[str, int, str], pending: _Pending) -> bool:
        """Whether this server's part of the window should be stored before it fills the window: at a
        quarter of it, unless every flush so far found only this server's rows (then the part waits for
        the boundary, the stream's end or the periodic flush: one flush per window)."""
        limit = pending.target.row_limit(key[2])
        return limit is not None and key not in self._solo and pending.state.rows >= max(1, limit // 4)

    def _keys(self) -> list[tuple[str, int, str]]:
        return list({*self._pending, *(k for k, parts in self._sealed.items() if parts)})

    # -- flushing and closing --------------------------------------------------------------------------

    def _drain_soon(self, key: tuple[str, int, str]) -> None:
        running = self._flushing.get(key)
        if running is None or running.done():
            task = asyncio.create_task(self._drain(key, everything=False), name=f"monitor-flush-{key[0]}")
            task.add_done_callback(_log_failure)
            self._flushing[key] = task

    async def flush(self, keys) -> None:
        """Store everything this server has pending for `keys` (a window filled by it is closed)."""
        for key in keys:
            await self._drain(key, everything=True)

    async def _drain(self, key: tuple[str, int, str], *, everything: bool) -> None:
        """Flush the sealed parts of `key` in order, then the pending part when it is due (or always, for
        `everything`); one flush at a time per key, while the streams keep counting."""
        async with self._locks.setdefault(key, asyncio.Lock()):
            while True:
                sealed = self._sealed.get(key)
                if sealed:
                    part = sealed.popleft()
                else:
                    pending = self._pending.get(key)
                    due = (pending is not None and pending.state.rows > 0
                           and (everything or self._part_due(key, pending)))
                    if not due:
                        return
                    part = self._pending.pop(key)
                    # The streams go on counting into a new part of the same window, which already has
                    # this part's rows.
                    self._pending[key] = _Pending(part.target, part.state.fresh(), generation=part.generation,
                                                  flushed_rows=part.flushed_rows + part.state.rows)
                try:
                    total = await self._flush_part(key, part)
                except BaseException:
                    self._restore(key, part)  # nothing counted is dropped: the next flush tries again
                    raise
                finally:
                    self._progress.setdefault(key, asyncio.Event()).set()  # a waiting stream looks again
                pending = self._pending.get(key)
                if pending is not None and pending.generation == part.generation:
                    pending.flushed_rows = total  # all servers' rows, as stored (0: this flush closed it)

    async def _flush_part(self, key: tuple[str, int, str], part: _Pending) -> int:
        """Store `part` into this server's partial of the open window (closing it when full); returns the
        window's rows over all servers afterwards (0 when this flush closed it)."""
        target = part.target
        limit = target.row_limit(key[2])
        async with self.pool.acquire() as conn:
            async with store.window_transaction(conn, *key):
                window = await store.open_window(conn, *key, target.spec.window_seconds)
                stored = self._stored.get(key)
                merged = part.state.fresh()
                if stored is not None and stored[0] == window["id"]:
                    merged.merge(stored[1])
                elif window["rows"]:  # (a window without rows has no partial of ours to read)
                    existing = await store.read_partial(conn, window["id"], self.server_id)
                    if existing is not None:
                        merged.merge_bytes(existing)
                merged.merge(part.state)
                window = await store.write_partial(
                    conn, window["id"], self.server_id, total_rows=merged.rows, added_rows=part.state.rows,
                    state=merged.to_bytes(), first_observe=part.first, last_observe=part.last)
                total = window["rows"]
                if total > merged.rows:  # other servers count this key too (remembered from then on)
                    self._shared.add(key)
                    self._solo.discard(key)
                elif key not in self._shared:
                    self._solo.add(key)
                closes = limit is not None and total >= limit
                if closes:
                    # Closed in the transaction that filled it: no other flush can land in between.
                    await self._close_locked(conn, target, window, own=merged)
        # Remembered only once committed: the next flush of this window merges into it without a read.
        self._stored[key] = (-1, None) if closes else (window["id"], merged)
        return 0 if closes else total

    def _restore(self, key: tuple[str, int, str], part: _Pending) -> None:
        if part.sealed:
            self._sealed.setdefault(key, collections.deque()).appendleft(part)
            return
        newer = self._pending.get(key)
        if newer is not None:
            part.state.merge(newer.state)
            if newer.first is not None:
                part.observed(newer.first, newer.last)
        self._pending[key] = part

    async def close(self, model_id: str, version: int, kind: str, *, window_id: int) -> bool:
        """Close a window whose time is up, if it is still open; returns whether this call closed it."""
        target = await self.target(model_id, version)
        async with self.pool.acquire() as conn:
            async with store.window_transaction(conn, model_id, version, kind):
                window = await store.get_window(conn, window_id)
                if window is None or window["state"] != "OPEN":
                    return False  # another server closed it
                await self._close_locked(conn, target, window)
                return True

    async def _close_locked(self, conn: asyncpg.Connection, target: Target, window, own=None) -> None:
        """Merge every partial (`own`: this server's, already at hand), judge, store the measurements,
        raise the alert; the window lock is held and the window is OPEN."""
        states = await store.partial_states(conn, window["id"], None if own is None else self.server_id)
        judged, verdict, measurements, alert = _judge(target, window["kind"], window, states, own)
        alert_id = None
        if alert is not None:
            # Raised before the close commits: if the commit fails, the next close finds this alert by
            # its request_id instead of raising a second one.
            alert_id = (await self.ingestor.submit(alert)).alert["id"]
        await store.insert_measurements(conn, window, measurements)
        await store.close_window(conn, window["id"], judged=judged, verdict=verdict, alert_id=alert_id)
        log.info("monitor.window_closed", model_id=target.model_id, version=target.version, kind=window["kind"],
                 window=window["seq"], rows=window["rows"], judged=judged, alert_id=alert_id)

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
                await self.flush(self._keys())
                await self.close_due()
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - a failed round must not end the flushing
                log.exception("monitor.flush_failed")


def _log_failure(task: asyncio.Task) -> None:
    # A failed background flush keeps its rows pending (see _drain); the next flush retries.
    if not task.cancelled() and task.exception() is not None:
        log.warning("monitor.flush_failed", error=repr(task.exception()))


# -- judging a closing window (pure) ------------------------------------------------------------------

def _merge_all(kind: str, target: Target, states: list[bytes], own=None) -> WindowAccumulator | OutcomeWindow:
    merged = MonitorEngine._fresh((target.model_id, target.version, kind), target)
    if own is not None:
        merged.merge(own)
    for data in states:
        merged.merge_bytes(data)
    return merged


def _judge(target: Target, kind: str, window, states: list[bytes], own=None):
    """(judged, verdict document, measurement tuples, NewAlert or None) for a closing window."""
    try:
        merged = _merge_all(kind, target, states, own)
    except ValueError as exc:  # a partial counted over other bins: the spec changed while it was open
        return False, {"note": f"not judged: {exc}"}, [], None
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
