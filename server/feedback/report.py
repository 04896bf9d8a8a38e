"""GetFeedbackReport: per rule and per model, did the loop's actions help?

The figures are computed on demand from the record, so they always agree with the history and a new
definition applies to the past too; definitions.py says what each figure means. What is read:

- per alert (triggers, actions by decision, quiet checks): the daily aggregates (feedback_daily*,
  filled by rollup.py) for the window's whole UTC days, about one row per day, rule and model, and for
  its partial first or last day when every alert counted for that day lies in the window (as for a
  window ending now: counted_days); the alert table only for the alerts they do not hold (the other
  partial days and the alerts past the roll-up's watermark), grouped in SQL by what tally.py counts
  of an alert (model, type, rule set, actions) and counted as the roll-up counts them. Over every
  model, the rules' figures come from per-rule daily totals and the models' from the rows where a
  rule acted (quiet checks are reported per rule only);
- per retrain (retrains, outcomes, improvement mean and median, recovery, false positives, verdicts,
  suggestions): the window's QUEUED actions with their job's feedback row and the model's nearest
  performance alerts (one probe each of the performance alerts' index). A verdict depends on the
  performance alerts inside the window, and a median on every value, so neither can be summed from
  daily rows; there are about a hundred alerts per retrain;
- false negatives: the number of quiet checks comes from the aggregates; which of them were missed
  depends on the request's false-negative window, so only the alerts within that window before a
  promoted retrain of their model are replayed (their type, rule set, actions and the metrics the
  threshold suggestions read).

These three parts read at once, on connections that share one snapshot, when the pool can spare them.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from typing import AsyncIterator, Sequence

import asyncpg

from closedloop.dsl.collector import gc_paused

from ..store import feedback_daily as daily
from ..store import history
from .definitions import (DEFINITIONS, HARMED, HELPED, NO_EFFECT, beat_champion, false_positive, judged,
                          reads_performance_alerts, verdict)
from .suggest import ThresholdSuggestion, suggest_thresholds, threshold_metrics, threshold_rules
from .tally import CheckedRules, Counted, Tallies, compile_sources, tally

DEFAULT_WINDOW = dt.timedelta(days=30)
DEFAULT_FN_WINDOW = dt.timedelta(hours=24)
MAX_VERDICTS = 500
DAY = dt.timedelta(days=1)
SPARE_CONNECTIONS = 2  # left free in the pool when a report takes extra connections
# Per sort or hash of a report's statements: at ten million alerts the daily sums sort 176,000 rows
# and the partial days group 55,000 alerts; with PostgreSQL's default 4 MB both spill to disk. (Its
# statements also start no parallel workers: on a small server they only cost CPU the parts share.)
WORK_MEM = "64MB"


@dataclass(frozen=True)
class FeedbackStats:
    """One rule's, one model's or the manual retrains' figures (definitions.py says what each means)."""

    triggers: int
    actions_by_decision: dict[str, int]
    retrains: int
    succeeded: int
    promoted: int
    finished_rate: float   # succeeded / retrains (finished, promoted or not; not "helped")
    promotion_rate: float
    mean_improvement: float
    median_improvement: float
    mean_time_to_recovery_s: float | None  # None: nothing recovered
    false_positive_rate: float
    false_negative_rate: float
    evaluations_quiet: int
    helped: int
    no_effect: int
    harmed: int
    helped_rate: float     # helped / succeeded


@dataclass(frozen=True)
class ActionVerdict:
    action_id: int
    alert_id: int
    rule: str
    model_id: str
    job_id: int
    verdict: str         # definitions.HELPED, NO_EFFECT, HARMED or PENDING
    improvement: float   # 0 when the job has no outcome or no champion


@dataclass(frozen=True)
class FeedbackReport:
    start_time: dt.datetime
    end_time: dt.datetime
    rules: dict[str, FeedbackStats]   # by rule name, sorted
    models: dict[str, FeedbackStats]  # by model id, sorted
    manual: FeedbackStats
    verdicts: list[ActionVerdict]     # the first MAX_VERDICTS
    suggestions: list[ThresholdSuggestion]
    definitions: list[tuple[str, str]]  # (term, meaning)


@dataclass
class _Group:
    """Accumulates one rule's or one model's figures."""

    triggers: int = 0
    decisions: dict = field(default_factory=lambda: defaultdict(int))
    jobs: dict = field(default_factory=dict)          # job_id -> action row (QUEUED)
    quiet: int = 0
    quiet_missed: int = 0
    verdicts: dict = field(default_factory=lambda: defaultdict(int))

    def count(self, triggers: int, decisions: dict, quiet: int = 0) -> None:
        self.triggers += triggers
        for decision, n in decisions.items():
            if n:
                self.decisions[decision] += n
        self.quiet += quiet

    def stats(self, outcomes: dict[int, asyncpg.Record]) -> FeedbackStats:
        # One pass over the jobs: the report asks this of every model (10,000 at scale).
        finished = promoted = compared = fps = 0
        improvements, recovery = [], []
        for job_id in self.jobs:
            o = outcomes.get(job_id)
            if o is None or o["outcome"] != "SUCCEEDED":
                continue
            finished += 1
            if o["improvement"] is not None:
                improvements.append(o["improvement"])
            if judged(o):
                compared += 1
                fps += false_positive(o)
            if o["promoted"]:
                promoted += 1
                if o["alert_to_promotion_s"] is not None:
                    recovery.append(o["alert_to_promotion_s"])
        return FeedbackStats(
            triggers=self.triggers, actions_by_decision=dict(self.decisions), retrains=len(self.jobs),
            succeeded=finished, promoted=promoted,
            finished_rate=finished / len(self.jobs) if self.jobs else 0.0,
            promotion_rate=promoted / finished if finished else 0.0,
            mean_improvement=statistics.fmean(improvements) if improvements else 0.0,
            median_improvement=statistics.median(improvements) if improvements else 0.0,
            mean_time_to_recovery_s=statistics.fmean(recovery) if recovery else None,
            false_positive_rate=fps / compared if compared else 0.0,
            false_negative_rate=self.quiet_missed / self.quiet if self.quiet else 0.0,
            evaluations_quiet=self.quiet,
            helped=self.verdicts[HELPED], no_effect=self.verdicts[NO_EFFECT], harmed=self.verdicts[HARMED],
            helped_rate=self.verdicts[HELPED] / finished if finished else 0.0,
        )


async def counted_days(conn, start: dt.datetime, end: dt.datetime) -> tuple[dt.datetime, dt.datetime]:
    """The UTC days [first, last) whose daily aggregates count exactly the window's alerts of those
    days (up to the watermark): every day lying wholly in [start, end), and the partial first or last
    day too when all of its counted alerts were observed inside the window (its observe_time span,
    migration 0013). A partial day without a span is read from the alert table, as before the spans
    existed. Empty: first == last == start."""
    start_utc, end_utc = start.astimezone(dt.timezone.utc), end.astimezone(dt.timezone.utc)
    low = dt.datetime.combine(start_utc.date(), dt.time(), dt.timezone.utc)   # the day holding start
    high = dt.datetime.combine(end_utc.date(), dt.time(), dt.timezone.utc)    # the day holding end
    partial = [day for day, cut in ((low, low != start_utc), (high, high != end_utc)) if cut]
    spans = await daily.day_spans(conn, [day.date() for day in partial]) if partial else {}

    def inside(day: dt.datetime) -> bool:
        span = spans.get(day.date())
        return span is not None and span[0] >= start and span[1] < end

    first = low if low == start_utc or inside(low) else low + DAY
    last = high + DAY if high != end_utc and inside(high) else high
    return (first, last) if first < last else (start, start)


def _ranges_before(times_by_model: dict[str, list[dt.datetime]],
                   window: dt.timedelta) -> list[tuple[str, dt.datetime, dt.datetime]]:
    """(model, low, high): the instants within `window` before (and at) one of the model's times, as
    closed ranges that do not overlap, so the alerts in them are read once each. An instant lies in
    one of a model's ranges exactly when definitions.missed holds for it and the model's times."""
    out = []
    for model, times in times_by_model.items():
        merged: list[list[dt.datetime]] = []
        for t in sorted(times):
            if merged and t - window <= merged[-1][1]:
                merged[-1][1] = t
            else:
                merged.append([t - window, t])
        out += [(model, low, high) for low, high in merged]
    return out


async def _checked_rules(conn, rows) -> CheckedRules:
    """The rules each of `rows` (alerts or groups of them) was checked against, by their rule sets."""
    versions = sorted({r["rule_set_version"] for r in rows if r["rule_set_version"] is not None})
    return CheckedRules(compile_sources(await history.rule_set_sources(conn, versions)))


async def _count_alerts(conn, start, end, model_id, rule, scopes, by_rule, by_model) -> None:
    """The per-alert figures: the aggregates' days (counted_days), plus the alerts they do not hold."""
    first, last = await counted_days(conn, start, end)
    after_id = await daily.watermark(conn)
    groups = await daily.uncounted_alerts(conn, start, end, first, last, after_id, model_id, scopes)
    counted: Tallies = tally(
        (Counted(None, g["model_id"], g["alert_type"], g["rule_set_version"],
                 list(zip(g["rules"], g["decisions"])) if g["rules"] else (), g["n"]) for g in groups),
        await _checked_rules(conn, groups))
    if model_id is None and scopes is None:
        # Every model: the rules' figures from the per-rule totals, the models' from the rows where a
        # rule acted (their quiet checks are only ever reported per rule: migration 0014).
        for r in await daily.rule_totals(conn, first.date(), last.date(), rule):
            by_rule[r["rule"]].count(r["triggers"], _decisions(r), r["quiet"])
        for r in await daily.acted_sums(conn, first.date(), last.date(), rule):
            by_model[r["model_id"]].count(r["triggers"] if rule is not None else 0, _decisions(r))
        rows = []
    else:
        rows = [(r["rule"], r["model_id"], r["triggers"], _decisions(r), r["quiet"])
                for r in await daily.rule_sums(conn, first.date(), last.date(), model_id, rule, scopes)]
    rows += [(r, m, c.triggers, c.decisions, c.quiet) for (_, m, r), c in counted.rules.items()
             if rule is None or r == rule]
    model_triggers: dict[str, int] = defaultdict(int)
    if rule is None:
        for m, n in (await daily.model_triggers(conn, first.date(), last.date(), model_id, scopes)).items():
            model_triggers[m] += n
        for (_, m), n in counted.models.items():
            model_triggers[m] += n
    for r, m, triggers, decisions, quiet in rows:
        if triggers or quiet or any(decisions.values()):
            by_rule[r].count(triggers, decisions, quiet)
        if any(decisions.values()):
            by_model[m].count(triggers if rule is not None else 0, decisions)
    for m, n in model_triggers.items():
        by_model[m].triggers += n


def _decisions(row) -> dict[str, int]:
    """An aggregate row's decision counts by decision."""
    return {d: row[c] for d, c in daily.DECISION_COLUMNS.items()}


@contextlib.asynccontextmanager
async def _same_snapshot(pool: asyncpg.Pool, n: int) -> AsyncIterator[list]:
    """n connections in read-only transactions that see one snapshot (store/history.export_snapshot),
    or a list of one when, besides that one, the pool has fewer than n - 1 + SPARE_CONNECTIONS free
    now: a report then reads with one connection, never waits for more, and leaves room for the
    calls beside it."""
    async with contextlib.AsyncExitStack() as stack:
        first = await stack.enter_async_context(pool.acquire())
        await stack.enter_async_context(first.transaction(isolation="repeatable_read", readonly=True))
        await history.report_settings(first, WORK_MEM)
        conns = [first]
        if pool.get_idle_size() + pool.get_max_size() - pool.get_size() >= n - 1 + SPARE_CONNECTIONS:
            snapshot = await history.export_snapshot(first)
            for _ in range(n - 1):
                conn = await stack.enter_async_context(pool.acquire())
                await stack.enter_async_context(conn.transaction(isolation="repeatable_read", readonly=True))
                await history.import_snapshot(conn, snapshot)
                await history.report_settings(conn, WORK_MEM)
                conns.append(conn)
        yield conns


async def build_report(pool: asyncpg.Pool, *, model_id: str | None, rule: str | None,
                       start: dt.datetime | None, end: dt.datetime | None,
                       fn_window: dt.timedelta | None, active_ruleset=None,
                       scopes: Sequence[str] | None = None) -> FeedbackReport:
    """`scopes`: only models matching one of these globs (a scoped token's view; None: all)."""
    with gc_paused():
        end = end or dt.datetime.now(dt.timezone.utc)
        start = start or end - DEFAULT_WINDOW
        fn_window = fn_window or DEFAULT_FN_WINDOW
        horizon = end + fn_window + DEFAULT_WINDOW  # outcomes written later than this are not waited for
        by_rule: dict[str, _Group] = defaultdict(_Group)
        by_model: dict[str, _Group] = defaultdict(_Group)

        async def count(conn) -> None:
            await _count_alerts(conn, start, end, model_id, rule, scopes, by_rule, by_model)

        async def judge(conn):
            actions = await history.retrain_actions(conn, start, end, model_id, rule, scopes)
            manual_ids = await history.manual_jobs(conn, start, end, model_id, scopes)
            outcomes = await history.outcomes(conn, [a["job_id"] for a in actions] + manual_ids, start, horizon)
            retrains = [a for a in actions if a["kind"] == "RETRAIN"]
            # Only a promoted retrain's verdict reads the performance alerts around it: at ten
            # million alerts a fifth of the retrains, so a fifth of the index probes.
            probed = [a for a in retrains if reads_performance_alerts(outcomes.get(a["job_id"]))]
            found = dict(zip((a["id"] for a in probed), await history.performance_neighbours(
                conn, [a["model_id"] for a in probed], [a["observe_time"] for a in probed],
                [outcomes[a["job_id"]]["time"] for a in probed], start, end)))
            neighbours = [found.get(a["id"], (None, None)) for a in retrains]
            return actions, manual_ids, outcomes, retrains, neighbours

        metric_names = threshold_metrics(active_ruleset)

        async def near_misses(conn):
            helpful_by_model: dict[str, list[dt.datetime]] = defaultdict(list)
            # A quiet alert is observed before `end`, so the retrain that shows it missed ended by end + fn_window.
            for o in await history.promoted_retrains(conn, start, end + fn_window, model_id, scopes):
                if beat_champion(o):
                    helpful_by_model[o["model_id"]].append(o["time"])
            ranges = _ranges_before(helpful_by_model, fn_window)
            near = await history.alerts_in_ranges(conn, [r[0] for r in ranges], [r[1] for r in ranges],
                                                  [r[2] for r in ranges], start, end, metric_names)
            return near, await _checked_rules(conn, near)

        # One snapshot: the aggregates and the watermark agree with the alerts read beside them. The
        # three parts read on their own connections at once when the pool has them to spare.
        async with _same_snapshot(pool, 3) as conns:
            if len(conns) == 3:
                try:
                    async with asyncio.TaskGroup() as parts:  # one failing cancels the others before release
                        parts.create_task(count(conns[0]))
                        judging, missing = parts.create_task(judge(conns[1])), parts.create_task(near_misses(conns[2]))
                except ExceptionGroup as failed:
                    raise failed.exceptions[0]  # as one connection would have: the API maps database errors
                judged_, missed_ = judging.result(), missing.result()
            else:
                await count(conns[0])
                judged_, missed_ = await judge(conns[0]), await near_misses(conns[0])
        actions, manual_ids, outcomes, retrains, neighbours = judged_
        near, checked = missed_

        verdicts = []
        for act in actions:
            for group in (by_rule[act["rule"]], by_model[act["model_id"]]):
                group.jobs[act["job_id"]] = act
        for act, (before, after) in zip(retrains, neighbours):
            o = outcomes.get(act["job_id"])
            judgement = verdict(o, before, after)
            by_rule[act["rule"]].verdicts[judgement] += 1
            by_model[act["model_id"]].verdicts[judgement] += 1
            if len(verdicts) < MAX_VERDICTS:
                verdicts.append(ActionVerdict(
                    action_id=act["id"], alert_id=act["alert_id"], rule=act["rule"], model_id=act["model_id"],
                    job_id=act["job_id"], verdict=judgement, improvement=(o["improvement"] or 0.0) if o else 0.0))

        # False negatives: of the quiet checks (counted above), those followed within fn_window by a
        # retrain of the same model that beat its champion: the alerts read in the ranges, which hold
        # exactly the instants definitions.missed accepts (see _ranges_before).
        quiet_alerts: dict[str, list] = defaultdict(list)   # for the suggestions: only the metrics they read
        suggestible = threshold_rules(active_ruleset)
        for version, alert_type, model, values, fired in near:
            names = checked.quiet(version, alert_type, model, tuple(fired or ()))
            if rule:
                names = [name for name in names if name == rule]
            seen = None
            for name in names:
                by_rule[name].quiet_missed += 1
                if name in suggestible:
                    if seen is None:
                        seen = {"metrics": {k: v for k, v in zip(metric_names, values) if v is not None}}
                    quiet_alerts[name].append((seen, True))

        manual = _Group()
        for job_id in manual_ids:
            if job_id in outcomes:
                manual.jobs[job_id] = outcomes[job_id]
        suggestions = []
        if active_ruleset is not None:
            suggestions = suggest_thresholds(active_ruleset, actions, outcomes, quiet_alerts, rule)
        return FeedbackReport(
            start_time=start, end_time=end,
            rules={r: g.stats(outcomes) for r, g in sorted(by_rule.items())},
            models={m: g.stats(outcomes) for m, g in sorted(by_model.items())},
            manual=manual.stats(outcomes), verdicts=verdicts, suggestions=suggestions, definitions=list(DEFINITIONS),
        )
