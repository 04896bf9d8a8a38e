"""Backtests: replay stored alerts through a candidate rule set and compare with what happened.

The candidate side is simulated with the same `Decider` the live loop uses, in observe_time order,
starting from no cooldowns at the window's start. A simulated job stays active (so later triggers
coalesce into it) for the model's median real job duration, or DEFAULT_JOB_SECONDS when the model
has no finished job yet. Facts are built as live ingest builds them (closedloop.dsl.facts), relative
to each alert's create_time: model facts come from the registry and the promotion history (the
model's age at each alert is measured from the version current when the alert arrived).
"""

from __future__ import annotations

import asyncio
import bisect
import datetime as dt
import json
from collections import Counter, defaultdict, deque
from dataclasses import dataclass

import asyncpg

from closedloop.dsl import CompiledRuleSet
from closedloop.dsl.facts import alert_facts, model_facts
from closedloop.dsl.collector import gc_paused
from closedloop.dsl.schema import LEVEL_NAMES

from ..store import history
from .decide import Decider, ModelState

DEFAULT_JOB_SECONDS = 600.0
DEFAULT_JOB_SPAN = dt.timedelta(seconds=DEFAULT_JOB_SECONDS)
MAX_DIFFERENCES = 1000
PAGE = 10_000  # alerts per statement; its timeout (--db-timeout) also runs while the page before is replayed
SLICE = 2_000  # alerts replayed between two yields to the event loop (~20-30 ms of CPU)
LABEL_CACHE = 4096  # distinct label texts kept decoded (dropped all at once past this)
ONE_DAY = dt.timedelta(days=1)
NOTHING = "nothing"  # the outcome text of an alert without decisions
NO_VERSION = (0, None)  # a model's version before its first promotion, and when it was promoted
# jsonb as text has no surrounding whitespace and is always valid: the decoder's scanner (what
# raw_decode calls, minus that call's frame) parses it without json.loads' checks; (value, end).
_decode_json = json.JSONDecoder().scan_once


@dataclass(frozen=True)
class RuleCount:
    rule: str
    matches: int   # alerts the rule matched
    retrains: int  # its QUEUED decisions


@dataclass(frozen=True)
class BacktestSide:
    """What one rule set did (active: from the record) or would have done (candidate: simulated)."""

    rule_set_version: int  # 0 for the candidate
    rules: list[RuleCount]
    jobs_by_model: dict[str, int]
    jobs: int


@dataclass(frozen=True)
class BacktestDifference:
    alert_id: int
    model_id: str
    active_outcome: str
    candidate_outcome: str


@dataclass(frozen=True)
class BacktestReport:
    alerts: int
    active: BacktestSide
    candidate: BacktestSide
    differences: list[BacktestDifference]  # the first MAX_DIFFERENCES
    differences_total: int


def _outcome(decisions) -> str:
    """Readable summary of an alert's decisions: 'QUEUED full/high by drift_auto_retrain; ...'."""
    parts = []
    for rule, decision, mode, priority in decisions:
        detail = f" {mode.lower()}/{LEVEL_NAMES.get(priority, '?')}" if mode else ""
        parts.append(f"{decision}{detail} by {rule}")
    return "; ".join(sorted(parts)) or NOTHING


class _Outcomes(dict):
    """_outcome() by its decisions, each text built once: a rule set has few distinct outcomes."""

    def __missing__(self, decisions: tuple) -> str:
        text = self[decisions] = _outcome(decisions)
        return text


class _VersionClock:
    """When each model's version at a given time was promoted (for model.age in the past)."""

    def __init__(self, promotions: list[asyncpg.Record]) -> None:
        self._times: dict[str, list[dt.datetime]] = defaultdict(list)
        self._versions: dict[str, list[int]] = defaultdict(list)
        for p in promotions:
            self._times[p["model_id"]].append(p["create_time"])
            self._versions[p["model_id"]].append(p["to_version"])

    def at(self, model_id: str, when: dt.datetime) -> tuple[int, dt.datetime | None]:
        times = self._times.get(model_id)
        if times is None:
            return NO_VERSION
        i = bisect.bisect_right(times, when) - 1
        return (self._versions[model_id][i], times[i]) if i >= 0 else NO_VERSION


class _Replay:
    """Both sides of a backtest, built page by page in observe_time order: the record's counts and
    the candidate's simulation. `page()` is the hot loop: it builds facts and matches only the
    alerts some candidate rule can match, and runs the decider, the job clock and the outcome texts
    only for alerts that some rule matched or that have stored decisions (most have neither)."""

    def __init__(self, candidate: CompiledRuleSet, start: dt.datetime, registry: list[asyncpg.Record],
                 job_seconds: dict[str, float], clock: _VersionClock) -> None:
        self.candidate = candidate
        self.clock = clock
        # how long a simulated job of each model stays active
        self.job_spans = {m: dt.timedelta(seconds=s) for m, s in job_seconds.items()}
        self.states = {r["model_id"]: ModelState(
            registered=True, enabled=r["enabled"], cooldown_override_s=r["cooldown_override_s"],
            max_retrains_per_day=r["max_retrains_per_day"], current_version=r["current_version"])
            for r in registry}
        self.decider = Decider(start, self.states, reasons=False)
        self.alerts = 0
        self.versions: Counter = Counter()
        # rule -> [matches, retrains], for each side
        self.active_rules: dict[str, list[int]] = defaultdict(lambda: [0, 0])
        self.cand_rules: dict[str, list[int]] = defaultdict(lambda: [0, 0])
        self.active_jobs: dict[str, set] = defaultdict(set)
        self.cand_jobs: Counter = Counter()
        self.job_until: dict[str, dt.datetime] = {}
        # when each simulated job of the last day leaves the daily budget's window (its start + 1 day),
        # for the models with a budget
        self.day_jobs: dict[str, deque[dt.datetime]] = defaultdict(deque)
        self.next_job = -1
        self.differences: list[BacktestDifference] = []
        self.differences_total = 0
        self._labels: dict[str, dict] = {}  # label sets repeat (desk, detector): decoded once each
        self._outcomes = _Outcomes()

    def page(self, rows: list[asyncpg.Record]) -> None:
        """Replay the next rows of history.backtest_page, in order (continuing the rows before)."""
        self.alerts += len(rows)
        self.versions.update(r[9] for r in rows)
        states, at, plan, match = self.states, self.clock.at, self.candidate.plan, self.candidate.match
        labels_seen, decode, parse_time = self._labels, _decode_json, dt.datetime.fromisoformat
        for alert_id, model_id, type_, severity, metrics, labels, source, observed, received, _, acted in rows:
            # Facts only for the alerts some rule of the candidate can match (the index's plan for
            # the alert's type and model), and the model's facts only when one of those rules reads them.
            rules = plan(type_, model_id)
            matches = None
            if rules.rules:
                observed, received = parse_time(observed), parse_time(received)
                label_map = labels_seen.get(labels)
                if label_map is None:
                    if len(labels_seen) >= LABEL_CACHE:
                        labels_seen.clear()
                    label_map = labels_seen[labels] = decode(labels, 0)[0]
                model = None
                if rules.reads_model and model_id in states:
                    # Facts as of the alert's arrival, like live ingest; the simulation's clock is observe_time.
                    version, since = at(model_id, received)
                    model = model_facts(enabled=states[model_id].enabled, version=version, version_time=since,
                                        retrained_time=since, received=received)
                alert = alert_facts(type=type_, model_id=model_id, severity=severity, metrics=decode(metrics, 0)[0],
                                    labels=label_map, source=source, observe_time=observed, received=received)
                matches = match(alert, model)
            if not matches and acted is None:
                continue  # nothing happened and nothing would have: the same outcome
            cand = self._simulate(model_id, states.get(model_id), observed, matches) if matches else NOTHING
            act = self._record(acted) if acted is not None else NOTHING
            if cand != act:
                self.differences_total += 1
                if len(self.differences) < MAX_DIFFERENCES:
                    self.differences.append(BacktestDifference(alert_id, model_id, act, cand))

    def _record(self, acted: list) -> str:
        """Count an alert's stored decisions (model_id, rule, decision, mode, priority, job_id);
        returns their outcome text."""
        seen_rules = set()
        for model_id, rule, decision, _mode, _priority, job_id in acted:
            counts = self.active_rules[rule]
            if rule not in seen_rules:
                seen_rules.add(rule)
                counts[0] += 1
            if decision == "QUEUED":
                counts[1] += 1
                if job_id is not None:
                    self.active_jobs[model_id].add(job_id)
        return self._outcomes[tuple((a[1], a[2], a[3], a[4]) for a in acted)]

    def _simulate(self, model_id: str, state: ModelState | None, now: dt.datetime, matches: list) -> str:
        """Decide an alert the rules matched, as of `now`; returns the candidate's outcome text."""
        if state is not None:
            # The job clock and the daily budget only matter here, so they advance here: both
            # depend on `now` alone, which never goes back.
            if state.active_job is not None and self.job_until.get(model_id, now) <= now:
                state.active_job = None
            if state.max_retrains_per_day:  # the decider reads automated_today only under a budget
                recent = self.day_jobs[model_id]
                while recent and recent[0] <= now:
                    recent.popleft()
                state.automated_today = len(recent)
        self.decider.now = now
        decision = self.decider.decide(model_id, matches)
        cand_rules = self.cand_rules
        for m in matches:
            cand_rules[m.rule][0] += 1
        if decision.retrain is not None and decision.retrain.coalesce_into is None:
            self.decider.job_started(model_id, self.next_job)
            self.next_job -= 1
            self.job_until[model_id] = now + self.job_spans.get(model_id, DEFAULT_JOB_SPAN)
            if state is not None and state.max_retrains_per_day:
                self.day_jobs[model_id].append(now + ONE_DAY)
            self.cand_jobs[model_id] += 1
        actions = decision.actions
        for a in actions:
            if a.decision == "QUEUED":
                cand_rules[a.rule][1] += 1
        if len(actions) == 1:  # most alerts: no generator for the outcome's key
            a = actions[0]
            return self._outcomes[((a.rule, a.decision, a.mode, a.priority),)]
        return self._outcomes[tuple((a.rule, a.decision, a.mode, a.priority) for a in actions)]

    def report(self) -> BacktestReport:
        def side(rules: dict[str, list[int]], jobs: dict, version: int) -> BacktestSide:
            return BacktestSide(
                rule_set_version=version,
                rules=[RuleCount(r, matches, retrains) for r, (matches, retrains) in sorted(rules.items())],
                jobs_by_model=dict(sorted(jobs.items())), jobs=sum(jobs.values()))

        active_version = self.versions.most_common(1)[0][0] if self.versions else 0
        return BacktestReport(
            alerts=self.alerts,
            active=side(self.active_rules, {m: len(j) for m, j in self.active_jobs.items()}, active_version),
            candidate=side(self.cand_rules, dict(self.cand_jobs), 0),
            differences=self.differences, differences_total=self.differences_total,
        )


async def run_backtest(pool: asyncpg.Pool, candidate: CompiledRuleSet, start: dt.datetime,
                       end: dt.datetime) -> BacktestReport:
    """Replay [start, end) in keyset pages of PAGE alerts. The next page's statement is sent before
    this page is replayed, so PostgreSQL reads it while Python replays (the connection runs one
    statement at a time; only the decoding waits for the replay). The replay is CPU work on the
    event loop: it yields every SLICE alerts, so a backtest over a million alerts delays the
    server's other requests by tens of milliseconds at a time, not for its whole length.

    The cyclic garbage collector is paused while the pages are read and replayed: each page's rows
    (10,000 records) stay alive while it is replayed, so the collector walked them again and again
    and promoted them to its oldest generation, whose full collections walk the whole heap: ~9% of
    the replay's CPU. The replay builds no reference cycles (reference counting frees all it
    drops); other requests' cyclic garbage, if any, waits until the backtest ends."""
    async with pool.acquire() as conn:
        registry = await history.registry(conn)
        job_seconds = await history.typical_job_seconds(conn)
        clock = _VersionClock(await history.promotions(conn))
        replay = _Replay(candidate, start, registry, job_seconds, clock)
        page = await history.backtest_page(conn, start, end, (start, 0), PAGE)
        following = None
        with gc_paused():
            try:
                while page:
                    following = None
                    if len(page) == PAGE:
                        after = (dt.datetime.fromisoformat(page[-1]["observe_time"]), page[-1]["id"])
                        following = asyncio.ensure_future(history.backtest_page(conn, start, end, after, PAGE))
                    for i in range(0, len(page), SLICE):
                        await asyncio.sleep(0)  # (first: lets the next page's statement go out)
                        replay.page(page[i:i + SLICE])
                    page = await following if following is not None else []
            finally:
                if following is not None and not following.done():
                    following.cancel()
                    await asyncio.gather(following, return_exceptions=True)
    return replay.report()
