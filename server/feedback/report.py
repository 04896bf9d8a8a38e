"""GetFeedbackReport: per rule and per model, did the loop's actions help?

Everything is computed from the record (closed_loop_actions, retrain_jobs, feedback_loop_metrics,
monitoring_alert_triggers) on demand, so the figures always agree with the history and a new
definition applies to the past too. definitions.py says what each figure means.
"""

from __future__ import annotations

import datetime as dt
import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Sequence

import asyncpg

from closedloop.dsl import RuleCompileError, compile_rules
from closedloop.dsl.facts import alert_facts

from ..store import alerts as alert_store
from ..store import history
from .definitions import (DEFINITIONS, HARMED, HELPED, NO_EFFECT, beat_champion, false_positive, judged, missed,
                          verdict)
from .suggest import ThresholdSuggestion, suggest_thresholds

DEFAULT_WINDOW = dt.timedelta(days=30)
DEFAULT_FN_WINDOW = dt.timedelta(hours=24)
MAX_VERDICTS = 500


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

    triggers: set = field(default_factory=set)
    decisions: dict = field(default_factory=lambda: defaultdict(int))
    jobs: dict = field(default_factory=dict)          # job_id -> action row (QUEUED)
    quiet: int = 0
    quiet_missed: int = 0
    verdicts: dict = field(default_factory=lambda: defaultdict(int))

    def stats(self, outcomes: dict[int, asyncpg.Record]) -> FeedbackStats:
        finished = [outcomes[j] for j in self.jobs if j in outcomes and outcomes[j]["outcome"] == "SUCCEEDED"]
        promoted = [o for o in finished if o["promoted"]]
        improvements = [o["improvement"] for o in finished if o["improvement"] is not None]
        compared = [o for o in finished if judged(o)]
        fps = [o for o in compared if false_positive(o)]
        recovery = [o["alert_to_promotion_s"] for o in promoted if o["alert_to_promotion_s"] is not None]
        return FeedbackStats(
            triggers=len(self.triggers), actions_by_decision=dict(self.decisions), retrains=len(self.jobs),
            succeeded=len(finished), promoted=len(promoted),
            finished_rate=len(finished) / len(self.jobs) if self.jobs else 0.0,
            promotion_rate=len(promoted) / len(finished) if finished else 0.0,
            mean_improvement=statistics.fmean(improvements) if improvements else 0.0,
            median_improvement=statistics.median(improvements) if improvements else 0.0,
            mean_time_to_recovery_s=statistics.fmean(recovery) if recovery else None,
            false_positive_rate=len(fps) / len(compared) if compared else 0.0,
            false_negative_rate=self.quiet_missed / self.quiet if self.quiet else 0.0,
            evaluations_quiet=self.quiet,
            helped=self.verdicts[HELPED], no_effect=self.verdicts[NO_EFFECT], harmed=self.verdicts[HARMED],
            helped_rate=self.verdicts[HELPED] / len(finished) if finished else 0.0,
        )


async def build_report(pool: asyncpg.Pool, *, model_id: str | None, rule: str | None,
                       start: dt.datetime | None, end: dt.datetime | None,
                       fn_window: dt.timedelta | None, active_ruleset=None,
                       scopes: Sequence[str] | None = None) -> FeedbackReport:
    """`scopes`: only models matching one of these globs (a scoped token's view; None: all)."""
    end = end or dt.datetime.now(dt.timezone.utc)
    start = start or end - DEFAULT_WINDOW
    fn_window = fn_window or DEFAULT_FN_WINDOW
    async with pool.acquire() as conn:
        actions = await history.actions_in_window(conn, start, end, model_id, rule, scopes)
        outcomes_rows = await history.feedback_rows(conn, start, end + fn_window + DEFAULT_WINDOW, model_id, scopes)
        alerts = await alert_store.alerts_in_window(conn, start, end, model_id, scopes)
        sources = await history.rule_set_sources(conn, sorted({a["rule_set_version"] for a in alerts}))
    outcomes = {o["job_id"]: o for o in outcomes_rows}

    by_rule: dict[str, _Group] = defaultdict(_Group)
    by_model: dict[str, _Group] = defaultdict(_Group)
    fired: set[tuple[int, str]] = set()
    perf_by_model: dict[str, list] = defaultdict(list)
    for a in alerts:
        if a["alert_type"] == "performance":
            perf_by_model[a["model_id"]].append(a)
    verdicts = []
    for act in actions:
        fired.add((act["alert_id"], act["rule"]))
        for group in (by_rule[act["rule"]], by_model[act["model_id"]]):
            group.triggers.add(act["alert_id"])
            group.decisions[act["decision"]] += 1
            if act["decision"] == "QUEUED" and act["job_id"] is not None:
                group.jobs[act["job_id"]] = act
        if act["kind"] == "RETRAIN" and act["decision"] == "QUEUED" and act["job_id"] is not None:
            o = outcomes.get(act["job_id"])
            judgement = verdict(act, o, perf_by_model.get(act["model_id"], []))
            by_rule[act["rule"]].verdicts[judgement] += 1
            by_model[act["model_id"]].verdicts[judgement] += 1
            if len(verdicts) < MAX_VERDICTS:
                verdicts.append(ActionVerdict(
                    action_id=act["id"], alert_id=act["alert_id"], rule=act["rule"], model_id=act["model_id"],
                    job_id=act["job_id"], verdict=judgement, improvement=(o["improvement"] or 0.0) if o else 0.0))

    # False negatives: replay each alert through the rule set it met, to learn which rules were
    # checked and stayed quiet, then look for a retrain that helped soon after.
    helpful_by_model: dict[str, list[dt.datetime]] = defaultdict(list)
    for o in outcomes_rows:
        if beat_champion(o):
            helpful_by_model[o["model_id"]].append(o["time"])
    compiled = {}
    for version, row in sources.items():
        try:
            compiled[version] = compile_rules(row["source"], row["filename"])
        except RuleCompileError:
            continue  # a set stored by an older closedloop that no longer compiles: skip its alerts
    quiet_alerts: dict[str, list] = defaultdict(list)
    for a in alerts:
        ruleset = compiled.get(a["rule_set_version"])
        if ruleset is None:
            continue
        facts = alert_facts(type=a["alert_type"], model_id=a["model_id"], severity=a["severity"],
                            metrics=a["metrics"], labels=a["labels"], source=a["source"],
                            observe_time=a["observe_time"], received=a["create_time"])
        for name in ruleset.evaluated_rules(facts):
            if rule and name != rule:
                continue
            if (a["id"], name) in fired:
                continue
            was_missed = missed(a["observe_time"], helpful_by_model.get(a["model_id"], ()), fn_window)
            by_rule[name].quiet += 1
            by_rule[name].quiet_missed += was_missed
            quiet_alerts[name].append((a, was_missed))

    manual = _Group()
    for o in outcomes_rows:
        if o["manual"] and start <= o["time"] < end:
            manual.jobs[o["job_id"]] = o
    suggestions = []
    ruleset = active_ruleset
    if ruleset is not None:
        suggestions = suggest_thresholds(ruleset, actions, outcomes, quiet_alerts, rule)
    return FeedbackReport(
        start_time=start, end_time=end,
        rules={r: g.stats(outcomes) for r, g in sorted(by_rule.items())},
        models={m: g.stats(outcomes) for m, g in sorted(by_model.items())},
        manual=manual.stats(outcomes), verdicts=verdicts, suggestions=suggestions, definitions=list(DEFINITIONS),
    )
