"""Alert ingest: the decision transaction, fed by a group commit (group_commit.py).

Each request is validated by the servicer, then handed to `AlertIngestor.submit()`, which resolves
once the alert, its decisions and its job are committed. The group commit hands whatever requests
are waiting to `AlertIngestor._write_batch`, which evaluates the rules outside any transaction and
writes the batch (the writer's connection is what the next batch waits for, so round trips count):

- when no rule matched any alert of the batch (the common case): one INSERT, committing on its own;
- otherwise, optimistically, in two round trips: read the state of the models rules want to act on
  (cooldowns, active job, budget) without any lock and decide every alert in arrival order; then one
  autocommitted statement (closedloop_write_decided, migration 0015) takes those models' decision
  locks, checks that their state is still the one decided on, and writes the alerts with their final
  state, the new jobs, the triggers folded into active jobs and the actions. No lock is held while
  Python decides. When the state changed in between (another replica decided, a worker finished a
  job, a manual SubmitRetrain), that statement writes nothing and the batch goes the locked way;
- the locked way, for such a batch and for batches with a rollback or a `notify TARGET` action: one
  transaction of five round trips whatever the batch holds: BEGIN with the decision locks → read the
  state and decide → one statement inserting the alerts, the new jobs and the triggers folded into
  active jobs → one inserting the actions and linking each new job to its action → COMMIT; plus the
  outbox rows of `notify TARGET` actions (notify/events.py). It settles every disagreement between
  the state it read and the database itself (a job that ended or appeared meanwhile).

All of it commits or none of it does, so a decision is never half-written. That is also what lets a
failed batch be written again without the request that failed it (see `_write_batch`).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from dataclasses import dataclass, field

import asyncpg
import structlog

from closedloop.dsl import RuleMatch
from closedloop.dsl.facts import alert_facts

from .. import metrics
from ..db.pool import CONNECTION_ERRORS
from ..config import NotifySettings
from ..errors import AlreadyExists, ClosedLoopError, FieldViolation, InternalError, InvalidArgument, Unavailable
from ..notify import events as notify_events
from ..store import alerts as alert_store
from ..store import clock
from ..store import models as model_store
from ..store import queue as job_queue
from .decide import AlertDecision, Decider, ModelState
from .group_commit import GroupCommit
from .model_cache import ModelFactsCache
from .rule_engine import RuleEngine
from .stage_timings import StageTimings

log = structlog.get_logger(__name__)


class RequestIdRace(Exception):
    """A request_id of the batch is stored already; the batch is decided again knowing it."""


RETRYABLE = (asyncpg.exceptions.DeadlockDetectedError, asyncpg.exceptions.SerializationError, RequestIdRace)


@dataclass(frozen=True)
class IngestResult:
    alert: asyncpg.Record | dict
    actions: list
    created: bool


@dataclass
class _Pending:
    new: alert_store.NewAlert
    received: dt.datetime  # the reference time of the alert's facts
    matches: list[RuleMatch] = field(default_factory=list)


class AlertIngestor:
    """The decision transaction behind a `GroupCommit`: evaluates a batch's rules, then writes its
    alerts, decisions and jobs in one transaction."""

    def __init__(self, pool: asyncpg.Pool, rules: RuleEngine, facts: ModelFactsCache, *,
                 max_batch: int = 512, writers: int = 2, max_pending: int = 8192, linger: float = 0.002,
                 job_max_attempts: int | None = None, job_timeout_s: float | None = None,
                 wait_timeout: float | None = None, notify: NotifySettings | None = None) -> None:
        self.pool = pool
        self.wait_timeout = wait_timeout  # the longest submit() waits for its batch (--db-timeout)
        self.notify = notify or NotifySettings()
        self.job_max_attempts = job_max_attempts
        self.job_timeout_s = job_timeout_s
        self.rules = rules
        self.facts = facts
        self.timings = StageTimings()  # where requests spend their time, stage by stage
        self._batcher: GroupCommit[_Pending, IngestResult] = GroupCommit(
            self._write_batch, max_batch=max_batch, writers=writers, max_pending=max_pending, linger=linger,
            name="alert-batcher", timings=self.timings, deadline=wait_timeout)

    @property
    def batches_committed(self) -> int:
        """Committed batches, for the metrics endpoint and to show group commit at work."""
        return self._batcher.batches_committed

    async def start(self) -> None:
        await self._batcher.start()

    async def stop(self) -> None:
        """Finish what was submitted, then stop."""
        await self._batcher.stop()

    async def submit(self, new: alert_store.NewAlert, received: dt.datetime | None = None) -> IngestResult:
        """Queue an alert and wait until it is committed (or failed). Behind a hung batch an alert
        answers UNAVAILABLE after `wait_timeout` seconds (the group commit's deadline); its batch may
        still commit it, so the retry, by request_id, is safe."""
        return await (await self.submit_later(new, received))

    async def submit_later(self, new: alert_store.NewAlert, received: dt.datetime | None = None) -> asyncio.Future:
        """Queue an alert once there is room; returns the future of its result without waiting for it.

        `received`: when the server received the alert (default: now), the reference time of its
        facts (see closedloop.dsl.facts.alert_facts). Streams use this to keep many writes in flight
        in order without a task per message.
        """
        return await self._batcher.submit_later(_Pending(new, received or dt.datetime.now(dt.timezone.utc)))

    async def _write_batch(self, batch: list[_Pending]) -> list:
        """The write function of the group commit: one result (or exception) per request.

        One request's problem never becomes its neighbours': a batch that fails for any reason but an
        unreachable database is split in halves and each half written again, down to the request
        that fails, which alone gets the error. A failed attempt left nothing behind (both write
        paths are atomic), and the halves keep arrival order. One bad request in a batch of n costs
        about 2·log2(n) extra writes.
        """
        try:
            return await self._write(batch)
        except Unavailable:
            raise  # the database is unreachable: every request of the batch is answered UNAVAILABLE
        except Exception as exc:  # noqa: BLE001 - isolated below, then mapped by _request_error
            if len(batch) == 1:
                return [_request_error(exc)]
            log.warning("alert.batch_split", size=len(batch), error=type(exc).__name__)
            half = len(batch) // 2
            return [*await self._write_batch(batch[:half]), *await self._write_batch(batch[half:])]

    async def _write(self, batch: list[_Pending]) -> list:
        """Evaluate and write a batch, retrying lock conflicts; raises when the batch as a whole failed."""
        started = time.perf_counter()
        try:
            active = self.rules.active
            await self._evaluate(batch, active)
            self.timings.add("evaluate", time.perf_counter() - started)
            version = active.version if active else 0
            for attempt in range(4):
                try:
                    results = await self._transaction(batch, version)
                    break
                except RETRYABLE as exc:
                    if attempt == 3:
                        raise
                    log.warning("alert.batch_retry", error=type(exc).__name__, size=len(batch))
                    await asyncio.sleep(0.005 * (attempt + 1))
        except CONNECTION_ERRORS as exc:
            raise Unavailable(f"database unavailable: {exc or type(exc).__name__}") from exc
        rolled_back = {p.new.model_id for p in batch if any(s.kind == "rollback" for m in p.matches for s in m.actions)}
        for model_id in rolled_back:
            self.facts.invalidate(model_id)
        log.debug("alert.batch_committed", size=len(batch), ms=round((time.perf_counter() - started) * 1000, 2))
        metrics.record_ingest_batch([p.new.alert_type for p in batch], results, time.perf_counter() - started)
        return results

    async def _evaluate(self, batch: list[_Pending], active) -> None:
        """Rule matches per alert, outside the transaction (pure Python on cached facts)."""
        if active is None:
            return
        models = await self.facts.entries({p.new.model_id for p in batch})
        for p in batch:
            a = p.new
            alert = alert_facts(type=a.alert_type, model_id=a.model_id, severity=a.severity, metrics=a.metrics,
                                labels=a.labels, source=a.source, observe_time=a.observe_time, received=p.received)
            entry = models.get(a.model_id)
            p.matches = active.ruleset.match(alert, entry.facts_at(p.received) if entry is not None else None)

    async def _transaction(self, batch: list[_Pending], version: int, *, look_up_first: bool = False) -> list:
        """Write a batch; returns per request an IngestResult or the exception for that request.

        Decisions are taken before the alerts are inserted, so each alert is written once with its
        final state (an UPDATE afterwards would rewrite every index entry of the row). Repeated
        request_ids are rare, so the insert is optimistic: when ON CONFLICT skipped a row, a batch
        with decisions is rolled back and decided again knowing which requests are repeats.
        """
        try:
            async with self.pool.acquire() as conn:
                fresh = await self._new_requests(conn, batch) if look_up_first else _first_occurrences(batch)
                results: list = [None] * len(batch)
                if not any(batch[i].matches for i in fresh):
                    # The common case: no rule matched. One INSERT, which commits on its own, is the
                    # whole write: one round trip instead of BEGIN/INSERT/COMMIT. Skipped rows are
                    # repeats, answered from what is stored.
                    began = time.perf_counter()
                    rows = await alert_store.insert_alerts(conn, [batch[i].new for i in fresh], version,
                                                           ["OPEN"] * len(fresh))
                    self.timings.add("commit", time.perf_counter() - began)
                    for i, row in _pair_inserted(batch, fresh, rows).items():
                        results[i] = self._result(batch[i], row, "OPEN", [], version)
                else:
                    acting = _acting_models(batch, fresh)
                    events = None
                    if _optimistic_fits(batch, fresh):
                        began = time.perf_counter()
                        try:
                            events = await self._decide_and_write_optimistic(conn, batch, fresh, acting, version,
                                                                             results)
                        except alert_store.DecisionConflict:
                            # Something changed between the read and the write: nothing was written.
                            self.timings.add("conflict", time.perf_counter() - began)
                            metrics.DECISION_CONFLICTS.inc()
                        except alert_store.RequestIdTaken:
                            raise RequestIdRace() from None
                    if events is None:
                        events = await self._decide_and_write_locked(conn, batch, fresh, acting, version, results)
                    for event, fields in events:  # logged once committed, so the log never claims more
                        log.info(event, **fields)
                duplicates = [i for i in range(len(batch)) if results[i] is None]
                if duplicates:
                    await self._resolve_duplicates(conn, batch, duplicates, results)
                return results
        except RequestIdRace:
            if look_up_first:
                raise  # a replica stored it between our look-up and our insert: the caller retries
        return await self._transaction(batch, version, look_up_first=True)

    async def _decide_and_write_optimistic(self, conn, batch: list[_Pending], fresh: list[int], acting: list[str],
                                           version: int, results: list) -> list[tuple[str, dict]]:
        """Decide on a state read without locks, then write in one autocommitted statement that takes
        the locks and writes only if the state is unchanged (alert_store.write_decided): two round
        trips instead of five, and no lock held while Python decides. Raises DecisionConflict (or
        RequestIdTaken) having written nothing; `results` is filled only on success."""
        began = time.perf_counter()
        longest = _longest_cooldown(batch, fresh)
        states, now, fingerprint = await self._load_states(conn, acting, longest)
        read = time.perf_counter()
        decisions = _decide(batch, fresh, states, now)
        plan = _JobPlan.of(batch, fresh, decisions)
        actions = plan.actions(fresh, decisions)
        decided = time.perf_counter()
        written = await alert_store.write_decided(
            conn, [batch[i].new for i in fresh], version, [decisions[i].alert_state for i in fresh], plan.new_jobs,
            plan.joined_jobs, actions, lock_keys=model_store.decision_lock_keys(acting), models=acting,
            cooldown_s=longest, fingerprint=fingerprint, max_attempts=self.job_max_attempts,
            timeout_s=self.job_timeout_s, jobs_channel=job_queue.JOBS_CHANNEL)
        self.timings.add("state_read", read - began)
        self.timings.add("decide_write", time.perf_counter() - decided)
        # The reply's actions are what was written: only ids, times and new jobs' ids come back.
        by_alert: dict[int, list] = {}
        for row, a in zip(written.actions, actions):
            i, model_id = fresh[a.alert], batch[fresh[a.alert]].new.model_id
            job_id = a.job_id if a.new_job is None else written.jobs[a.new_job]
            by_alert.setdefault(i, []).append({
                "id": row["id"], "create_time": row["create_time"], "alert_id": written.alerts[a.alert]["id"],
                "model_id": model_id, "rule": a.rule, "rule_set_version": version, "kind": a.kind, "mode": a.mode,
                "priority": a.priority, "decision": a.decision, "job_id": job_id, "cooldown_until": a.cooldown_until,
                "reason": a.reason if a.reason is not None else _joined_reason(job_id, model_id)})
        for i, row in zip(fresh, written.alerts):
            results[i] = self._result(batch[i], {"id": row["id"], "request_id": row["request_id"],
                                                 "create_time": row["create_time"]},
                                      decisions[i].alert_state, by_alert.get(i, []), version)
        jobs = {fresh[pos]: job_id for pos, job_id in written.jobs.items()}
        events = []
        for i, job_id in jobs.items():
            r = decisions[i].retrain
            events.append(("loop.retrain_queued", dict(model_id=batch[i].new.model_id, job_id=job_id,
                                                       alert_id=written.alerts[plan.index[i]]["id"], mode=r.mode,
                                                       priority=r.priority, rules=list(r.rules))))
        return events

    async def _decide_and_write_locked(self, conn, batch: list[_Pending], fresh: list[int], acting: list[str],
                                       version: int, results: list) -> list[tuple[str, dict]]:
        """The decision transaction: BEGIN with the decision locks, the state read, the writes,
        COMMIT. It settles every disagreement between the state read and the database itself."""
        began = time.perf_counter()
        async with model_store.decision_transaction(conn, acting):
            locked = time.perf_counter()
            events = await self._decide_and_write(conn, batch, fresh, acting, version, results)
            written = time.perf_counter()
        self.timings.add("lock_wait", locked - began)
        self.timings.add("statements", written - locked)
        self.timings.add("commit", time.perf_counter() - written)
        return events

    @staticmethod
    async def _new_requests(conn, batch: list[_Pending]) -> list[int]:
        """Positions of the requests to write: not a request_id already stored or earlier in the batch."""
        request_ids = [p.new.request_id for p in batch if p.new.request_id is not None]
        stored = await alert_store.existing_request_ids(conn, request_ids) if request_ids else set()
        return [i for i in _first_occurrences(batch) if batch[i].new.request_id not in stored]

    @staticmethod
    def _result(pending: _Pending, row, state: str, actions: list, version: int) -> IngestResult:
        alert = {**dict(row), **_alert_fields(pending.new), "state": state, "rule_set_version": version,
                 "update_time": row["create_time"]}
        return IngestResult(alert, actions, True)

    @staticmethod
    async def _load_states(conn, acting: list[str],
                           cooldown_s: float) -> tuple[dict[str, ModelState], dt.datetime, str]:
        """What decisions need about the models rules want to act on, with the state's fingerprint
        (see model_store.decision_state); `cooldown_s`: the longest cooldown among the batch's
        matched actions."""
        if not acting:
            # Only `record` and `notify` matched: the decider reads no state and no clock for those,
            # so the batch saves the round trip of reading them.
            return {}, dt.datetime.now(dt.timezone.utc), _NO_STATE
        states: dict[str, ModelState] = {}
        locked = await model_store.decision_state(conn, acting, cooldown_s)
        now = locked[0]["now"] if locked else await clock.db_now(conn)
        for r in locked:
            states[r["model_id"]] = ModelState(
                registered=True, enabled=r["enabled"], cooldown_override_s=r["cooldown_override_s"],
                max_retrains_per_day=r["max_retrains_per_day"], current_version=r["current_version"],
                last_queued_by_rule=dict(zip(r["queued_rules"] or (), r["queued_times"] or ())),
                last_automated=r["last_automated"], automated_today=r["automated_today"],
                active_job=r["active_job"])
        return states, now, locked[0]["fingerprint"] if locked else _NO_STATE

    async def _decide_and_write(self, conn, batch, fresh: list[int], acting: list[str], version: int,
                                results: list) -> list[tuple[str, dict]]:
        """Decide and write a batch with matches; returns the log events to emit after the commit.

        After the locks, a fixed number of round trips whatever the batch holds (the writer's
        connection is what the next batch waits for): the state read, one statement for the alerts
        and jobs, one for the actions and trigger links, one for the outbox rows when a rule
        notifies. Only a rollback, or the database disagreeing with the snapshot, adds any.
        """
        states, now, _ = await self._load_states(conn, acting, _longest_cooldown(batch, fresh))
        decisions = _decide(batch, fresh, states, now)
        events: list[tuple[str, dict]] = []
        row_of, job_of, new_jobs = await self._write_alerts_and_jobs(conn, batch, fresh, decisions, states, version,
                                                                     events)
        for i in fresh:
            decision = decisions[i]
            if decision.rollback is not None:
                await self._rollback(conn, batch[i].new.model_id, row_of[i]["id"], decision)
                events.append(("loop.rolled_back", dict(model_id=batch[i].new.model_id, alert_id=row_of[i]["id"],
                                                         rule=decision.rollback.rule)))
        new_actions = []
        for i in fresh:
            linked = i not in new_jobs  # a new job links to the first action of its alert that names it
            for a in decisions[i].actions:
                job_id = job_of.get(i) if a.decision in ("QUEUED", "COALESCED") else None
                new_actions.append(alert_store.NewAction(
                    alert_id=row_of[i]["id"], model_id=batch[i].new.model_id, rule=a.rule, rule_set_version=version,
                    kind=a.kind, mode=a.mode, priority=a.priority, decision=a.decision, reason=a.reason,
                    job_id=job_id, cooldown_until=a.cooldown_until, starts_job=job_id is not None and not linked))
                linked = linked or job_id is not None
        by_alert: dict[int, list] = {}
        for r in await alert_store.insert_actions(conn, new_actions):
            by_alert.setdefault(r["alert_id"], []).append(r)
        await notify_events.record_alert_matches(conn, [
            (row_of[i]["id"], _alert_fields(batch[i].new), batch[i].matches, by_alert.get(row_of[i]["id"], []))
            for i in fresh])
        for i in fresh:
            results[i] = self._result(batch[i], row_of[i], decisions[i].alert_state,
                                      by_alert.get(row_of[i]["id"], []), version)
        return events

    async def _write_alerts_and_jobs(self, conn, batch, fresh: list[int], decisions: dict,
                                     states: dict[str, ModelState], version: int,
                                     events: list) -> tuple[dict[int, asyncpg.Record], dict[int, int], dict[int, int]]:
        """Write the alerts, start their jobs and fold coalescing triggers into active jobs, in one
        statement; then settle, one enqueue at a time, where the database disagreed with the snapshot.

        Returns (alert row, job id, job created) per batch position. `decisions` is updated where
        the database disagreed (a job ended or appeared meanwhile) and where a trigger joined a job
        this batch started (the decider knew no id for it).
        """
        plan = _JobPlan.of(batch, fresh, decisions)
        starts, joiners, joins, index = plan.starts, plan.joiners, plan.joins, plan.index
        written = await alert_store.insert_decided(
            conn, [batch[i].new for i in fresh], version, [decisions[i].alert_state for i in fresh], plan.new_jobs,
            plan.joined_jobs, max_attempts=self.job_max_attempts, timeout_s=self.job_timeout_s,
            jobs_channel=job_queue.JOBS_CHANNEL)
        if len(written.alerts) != len(fresh):
            # A request_id is stored already (a retry, or another replica's): decide again.
            raise RequestIdRace()
        row_of = dict(zip(fresh, written.alerts))
        job_of: dict[int, int] = {}
        new_jobs: dict[int, int] = {}

        async def enqueue(i: int) -> None:
            job_of[i], created = await self._enqueue(conn, batch[i], row_of[i], decisions[i].retrain)
            if created:
                new_jobs[i] = job_of[i]

        for model_id, i in starts.items():
            job_id = written.jobs.get(index[i])
            if job_id is not None:
                job_of[i] = new_jobs[i] = job_id
            else:  # an active job appeared since the snapshot (a manual SubmitRetrain): join it
                await enqueue(i)
                if i not in new_jobs:
                    decisions[i] = _as_coalesced(decisions[i], job_of[i], model_id)
            for p in joiners.get(model_id, []):
                if job_id is None:
                    await enqueue(p)
                else:
                    job_of[p] = job_id
                decisions[p] = _as_coalesced(decisions[p], job_of[p], model_id)
        restarted: set[str] = set()  # models whose ended job one of these triggers replaced
        for job_id, positions in joins.items():
            for p in positions:
                if job_id in written.joined:
                    job_of[p] = job_id
                    continue
                # The job ended since the snapshot (a worker finished it; that takes no decision
                # lock). The trigger is decided again as if it had found no job: the decider checks
                # the daily budget only then, so it is checked here, or a replaced job would go past it.
                model_id = batch[p].new.model_id
                state = states[model_id]
                if (model_id not in restarted and state.max_retrains_per_day
                        and state.automated_today >= state.max_retrains_per_day):
                    decisions[p] = _as_over_budget(decisions[p], state.max_retrains_per_day, model_id)
                    await alert_store.update_state(conn, row_of[p]["id"], decisions[p].alert_state)
                    continue
                await enqueue(p)  # the first such trigger starts a new job, the next ones join it
                if p in new_jobs:
                    restarted.add(model_id)
                    state.automated_today += 1
                    decisions[p] = _as_queued(decisions[p])
                else:
                    decisions[p] = _as_coalesced(decisions[p], job_of[p], model_id)
        for i, job_id in new_jobs.items():
            r = decisions[i].retrain
            events.append(("loop.retrain_queued", dict(model_id=batch[i].new.model_id, job_id=job_id,
                                                       alert_id=row_of[i]["id"], mode=r.mode,
                                                       priority=r.priority, rules=list(r.rules))))
        return row_of, job_of, new_jobs

    async def _enqueue(self, conn, pending: _Pending, row, r) -> tuple[int, bool]:
        job, created = await job_queue.enqueue(
            conn, model_id=pending.new.model_id, mode=r.mode, priority=r.priority,
            reason=f"alert {row['id']} ({pending.new.alert_type}) matched {', '.join(r.rules)}",
            trigger_alert_id=row["id"], trigger_rule=r.rules[0],
            max_attempts=self.job_max_attempts, timeout_s=self.job_timeout_s,
        )
        return job["id"], created

    async def _rollback(self, conn, model_id: str, alert_id: int, decision: AlertDecision) -> None:
        from ..store import versions as version_store

        change = await version_store.rollback(conn, model_id, to_version=None,
                                              reason=f"rule {decision.rollback.rule} on alert {alert_id}")
        await notify_events.record_rollback(conn, self.notify, change, alert_id=alert_id, rule=decision.rollback.rule)

    async def _resolve_duplicates(self, conn, batch, indexes: list[int], results: list) -> None:
        """A request_id seen before: the stored alert if the payload is the same, else ALREADY_EXISTS."""
        stored = await alert_store.alerts_by_request_ids(conn, [batch[i].new.request_id for i in indexes])
        actions = await alert_store.actions_for(conn, [r["id"] for r in stored.values()])
        for i in indexes:
            new = batch[i].new
            row = stored.get(new.request_id)
            if row is None:  # cannot happen inside one transaction; be loud rather than wrong
                results[i] = ClosedLoopError(f"request_id {new.request_id!r} vanished")
            elif bytes(row["request_hash"]) != new.request_hash:
                results[i] = AlreadyExists(
                    f"request_id {new.request_id!r} was used for a different alert (id {row['id']})")
            else:
                results[i] = IngestResult(row, actions.get(row["id"], []), False)


def _request_error(exc: Exception) -> Exception:
    """What the one request that failed a write on its own is answered."""
    if isinstance(exc, ClosedLoopError):
        return exc
    if isinstance(exc, asyncpg.exceptions.DataError):
        # A value validation let through and PostgreSQL refused (a gap in validation: say so).
        log.warning("alert.refused_by_database", error=str(exc)[:500])
        return InvalidArgument(FieldViolation("alert", f"the database refused a value: {str(exc)[:200]}"))
    log.error("alert.write_failed", exc_info=exc)  # a bug: logged once here, answered INTERNAL
    return InternalError("internal error writing the alert; the server log has the details")


# The fingerprint of no state at all (no model a rule acts on): md5 of the empty string, as
# closedloop_decision_fingerprint gives for no rows.
_NO_STATE = "d41d8cd98f00b204e9800998ecf8427e"


def _optimistic_fits(batch: list[_Pending], fresh: list[int]) -> bool:
    """Whether a batch can take the two-round-trip write: its decisions write alerts, jobs and
    actions only. A rollback (a version change) or a `notify` (outbox rows naming the actions) is
    written by the locked transaction."""
    return not any(s.kind in ("rollback", "notify") for i in fresh for m in batch[i].matches for s in m.actions)


def _longest_cooldown(batch: list[_Pending], fresh: list[int]) -> float:
    return max((spec.cooldown_seconds or 0.0 for i in fresh for m in batch[i].matches for spec in m.actions),
               default=0.0)


def _decide(batch: list[_Pending], fresh: list[int], states: dict[str, ModelState],
            now: dt.datetime) -> dict[int, AlertDecision]:
    """Decide in arrival order: a job queued for one alert makes the next one coalesce or wait.
    Job ids are not known yet; the decider only needs to know that a job now exists (-1)."""
    decider = Decider(now, states)
    decisions = {}
    for i in fresh:
        decision = decider.decide(batch[i].new.model_id, batch[i].matches)
        if decision.retrain is not None and decision.retrain.coalesce_into is None:
            decider.job_started(batch[i].new.model_id, -1)
        decisions[i] = decision
    return decisions


@dataclass
class _JobPlan:
    """The jobs a batch's decisions start and join, by batch position."""

    starts: dict[str, int]          # model -> the position whose decision starts its job
    joiners: dict[str, list[int]]   # model -> later positions folding into that new job
    joins: dict[int, list[int]]     # active job id -> positions folding into it
    index: dict[int, int]           # batch position -> position among the alerts written
    new_jobs: list[alert_store.NewJob]
    joined_jobs: list[alert_store.Join]

    @classmethod
    def of(cls, batch: list[_Pending], fresh: list[int], decisions: dict[int, AlertDecision]) -> _JobPlan:
        starts: dict[str, int] = {}
        joiners: dict[str, list[int]] = {}
        joins: dict[int, list[int]] = {}
        for i in fresh:
            r = decisions[i].retrain
            if r is None:
                continue
            model_id = batch[i].new.model_id
            if r.coalesce_into is None:
                starts[model_id] = i
            elif r.coalesce_into == -1:  # a job this batch starts for the model, earlier in arrival order
                joiners.setdefault(model_id, []).append(i)
            else:
                joins.setdefault(r.coalesce_into, []).append(i)
        index = {i: n for n, i in enumerate(fresh)}
        new_jobs = []
        for model_id, i in starts.items():
            r, folded = decisions[i].retrain, [decisions[p].retrain for p in joiners.get(model_id, [])]
            mode, priority = _merged([r, *folded])
            new_jobs.append(alert_store.NewJob(
                alert=index[i], mode=mode, priority=priority, rule=r.rules[0], coalesced=len(folded),
                reason=f" ({batch[i].new.alert_type}) matched {', '.join(r.rules)}"))
        joined = [alert_store.Join(job_id, *_merged([decisions[i].retrain for i in positions]), len(positions))
                  for job_id, positions in joins.items()]
        return cls(starts, joiners, joins, index, new_jobs, joined)

    def actions(self, fresh: list[int], decisions: dict[int, AlertDecision]) -> list[alert_store.DecidedAction]:
        """The actions to write, linked to their jobs as the locked way links them: a new job to the
        first action of its alert that names it; a trigger joining a job of its own batch is COALESCED,
        and its reason (None here) names that job once the database has drawn its id."""
        joiner_of = {p: self.starts[m] for m, positions in self.joiners.items() for p in positions}
        out = []
        for i in fresh:
            r = decisions[i].retrain
            starting = r is not None and r.coalesce_into is None
            linked = not starting
            for a in decisions[i].actions:
                job_id = new_job = None
                decision, reason = a.decision, a.reason
                if a.decision in ("QUEUED", "COALESCED"):
                    if starting:
                        new_job = self.index[i]
                    elif i in joiner_of:
                        new_job, decision, reason = self.index[joiner_of[i]], "COALESCED", None
                    else:
                        job_id = r.coalesce_into
                out.append(alert_store.DecidedAction(
                    alert=self.index[i], rule=a.rule, kind=a.kind, mode=a.mode, priority=a.priority,
                    decision=decision, reason=reason, job_id=job_id, new_job=new_job,
                    cooldown_until=a.cooldown_until, starts_job=new_job is not None and not linked))
                linked = linked or new_job is not None
        return out


def _acting_models(batch: list[_Pending], fresh: list[int]) -> list[str]:
    """Models that a matching rule wants to retrain or roll back: the ones whose decisions lock."""
    return sorted({batch[i].new.model_id for i in fresh
                   if any(s.kind in ("retrain", "rollback") for m in batch[i].matches for s in m.actions)})


def _first_occurrences(batch: list[_Pending]) -> list[int]:
    """Positions of the batch minus repeats of a request_id earlier in the same batch."""
    seen: set[str] = set()
    out = []
    for i, p in enumerate(batch):
        rid = p.new.request_id
        if rid is None or rid not in seen:
            out.append(i)
            if rid is not None:
                seen.add(rid)
    return out


def _pair_inserted(batch: list[_Pending], fresh: list[int], rows: list) -> dict[int, asyncpg.Record]:
    """Map positions to inserted rows. Rows come back in input order, minus those ON CONFLICT skipped,
    which are the ones whose request_id is missing from the returned rows."""
    returned = {r["request_id"] for r in rows if r["request_id"] is not None}
    out = {}
    it = iter(rows)
    for i in fresh:
        rid = batch[i].new.request_id
        if rid is None or rid in returned:
            out[i] = next(it)
    return out


def _alert_fields(new: alert_store.NewAlert) -> dict:
    return {"model_id": new.model_id, "alert_type": new.alert_type, "severity": new.severity,
            "metrics": new.metrics, "labels": new.labels, "source": new.source,
            "observe_time": new.observe_time, "request_id": new.request_id}


def _as_queued(decision: AlertDecision) -> AlertDecision:
    from dataclasses import replace

    actions = [replace(a, decision="QUEUED", reason="queued anew: the job it was to join had just ended")
               if a.decision == "COALESCED" else a for a in decision.actions]
    return AlertDecision(actions, decision.retrain, decision.rollback)


def _as_over_budget(decision: AlertDecision, budget: int, model_id: str) -> AlertDecision:
    from dataclasses import replace

    actions = [replace(a, decision="SKIPPED_BUDGET",
                       reason=f"daily budget of {budget} automated retrains for model {model_id} is spent "
                              "(the job it was to join had just ended)")
               if a.decision == "COALESCED" else a for a in decision.actions]
    return AlertDecision(actions, None, decision.rollback)


def _as_coalesced(decision: AlertDecision, job_id: int, model_id: str) -> AlertDecision:
    from dataclasses import replace

    actions = [replace(a, decision="COALESCED", reason=_joined_reason(job_id, model_id))
               if a.decision in ("QUEUED", "COALESCED") else a for a in decision.actions]
    return AlertDecision(actions, decision.retrain, decision.rollback)


def _joined_reason(job_id: int, model_id: str) -> str:
    """The reason of a trigger folded into a job (closedloop_write_decided writes the same text)."""
    return f"joined active job {job_id} of model {model_id}"


def _merged(requests) -> tuple[str, int]:
    """The mode and priority of several retrain requests folded into one job: full beats
    incremental, the highest priority wins (the coalescing of queue.enqueue)."""
    return ("FULL" if any(r.mode == "FULL" for r in requests) else "INCREMENTAL",
            max(r.priority for r in requests))
