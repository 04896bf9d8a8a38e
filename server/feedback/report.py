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

import asyncpg

from closedloop.dsl import AlertFacts, RuleCompileError, compile_rules
from closedloop.v1 import retrain_pb2

from ..api.convert import duration, timestamp
from ..store import alerts as alert_store
from ..store import history
from .definitions import DEFINITIONS
from .suggest import suggest_thresholds

DEFAULT_WINDOW = dt.timedelta(days=30)
DEFAULT_FN_WINDOW = dt.timedelta(hours=24)
MAX_VERDICTS = 500


@dataclass
class _Group:
    """Accumulates one rule's or one model's figures."""

    triggers: set = field(default_factory=set)
    decisions: dict = field(default_factory=lambda: defaultdict(int))
    jobs: dict = field(default_factory=dict)          # job_id -> action row (QUEUED)
    quiet: int = 0
    quiet_missed: int = 0
    verdicts: dict = field(default_factory=lambda: defaultdict(int))

    def stats(self, outcomes: dict[int, asyncpg.Record]) -> retrain_pb2.FeedbackStats:
        finished = [outcomes[j] for j in self.jobs if j in outcomes and outcomes[j]["outcome"] == "SUCCEEDED"]
        promoted = [o for o in finished if o["promoted"]]
        improvements = [o["improvement"] for o in finished if o["improvement"] is not None]
        judged = [o for o in finished if o["improvement"] is not None]
        fps = [o for o in judged if o["improvement"] < (o["promotion_margin"] or 0.0) or not o["promoted"]]
        recovery = [o["alert_to_promotion_s"] for o in promoted if o["alert_to_promotion_s"] is not None]
        return retrain_pb2.FeedbackStats(
            triggers=len(self.triggers), actions_by_decision=dict(self.decisions), retrains=len(self.jobs),
            succeeded=len(finished), promoted=len(promoted),
            success_rate=len(finished) / len(self.jobs) if self.jobs else 0.0,
            promotion_rate=len(promoted) / len(finished) if finished else 0.0,
            mean_improvement=statistics.fmean(improvements) if improvements else 0.0,
            median_improvement=statistics.median(improvements) if improvements else 0.0,
            mean_time_to_recovery=duration(statistics.fmean(recovery)) if recovery else None,
            false_positive_rate=len(fps) / len(judged) if judged else 0.0,
            false_negative_rate=self.quiet_missed / self.quiet if self.quiet else 0.0,
            evaluations_quiet=self.quiet,
            helped=self.verdicts["HELPED"], no_effect=self.verdicts["NO_EFFECT"], harmed=self.verdicts["HARMED"],
        )


def _performance_value(alert: asyncpg.Record) -> float:
    """How bad a performance alert is: its performance_drop, else its severity."""
    return float(alert["metrics"].get("performance_drop", alert["severity"]))


def _verdict(action, outcome, perf_alerts: list) -> str:
    if outcome is None:
        return "PENDING"
    if outcome["outcome"] != "SUCCEEDED" or not outcome["promoted"]:
        return "NO_EFFECT"
    promoted_at = outcome["time"]
    before = [a for a in perf_alerts if a["observe_time"] <= action["observe_time"]]
    after = [a for a in perf_alerts if a["observe_time"] > promoted_at]
    if before and after and _performance_value(after[0]) > _performance_value(before[-1]):
        return "HARMED"
    return "HELPED"


async def build_report(pool: asyncpg.Pool, *, model_id: str | None, rule: str | None,
                       start: dt.datetime | None, end: dt.datetime | None,
                       fn_window: dt.timedelta | None, active_ruleset=None) -> retrain_pb2.FeedbackReport:
    end = end or dt.datetime.now(dt.timezone.utc)
    start = start or end - DEFAULT_WINDOW
    fn_window = fn_window or DEFAULT_FN_WINDOW
    async with pool.acquire() as conn:
        actions = await history.actions_in_window(conn, start, end, model_id, rule)
        outcomes_rows = await history.feedback_rows(conn, start, end + fn_window + DEFAULT_WINDOW, model_id)
        alerts = await alert_store.alerts_in_window(conn, start, end, model_id)
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
            verdict = _verdict(act, outcomes.get(act["job_id"]), perf_by_model.get(act["model_id"], []))
            by_rule[act["rule"]].verdicts[verdict] += 1
            by_model[act["model_id"]].verdicts[verdict] += 1
            if len(verdicts) < MAX_VERDICTS:
                o = outcomes.get(act["job_id"])
                verdicts.append(retrain_pb2.ActionVerdict(
                    action_id=str(act["id"]), alert_id=str(act["alert_id"]), rule=act["rule"],
                    model_id=act["model_id"], job_id=str(act["job_id"]),
                    verdict=retrain_pb2.Verdict.Value("VERDICT_" + verdict),
                    improvement=(o["improvement"] or 0.0) if o else 0.0))

    # False negatives: replay each alert through the rule set it met, to learn which rules were
    # checked and stayed quiet, then look for a retrain that helped soon after.
    helpful_by_model: dict[str, list[dt.datetime]] = defaultdict(list)
    for o in outcomes_rows:
        if o["promoted"] and o["improvement"] is not None and o["improvement"] >= (o["promotion_margin"] or 0.0):
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
        facts = AlertFacts(type=a["alert_type"], model_id=a["model_id"], severity=a["severity"],
                           metrics=a["metrics"], labels=a["labels"], source=a["source"])
        for name in ruleset.evaluated_rules(facts):
            if rule and name != rule:
                continue
            if (a["id"], name) in fired:
                continue
            missed = any(a["observe_time"] <= t <= a["observe_time"] + fn_window
                         for t in helpful_by_model.get(a["model_id"], ()))
            by_rule[name].quiet += 1
            by_rule[name].quiet_missed += missed
            quiet_alerts[name].append((a, missed))

    manual = _Group()
    for o in outcomes_rows:
        if o["manual"] and start <= o["time"] < end:
            manual.jobs[o["job_id"]] = o
    suggestions = []
    ruleset = active_ruleset
    if ruleset is not None:
        suggestions = suggest_thresholds(ruleset, actions, outcomes, quiet_alerts, rule)
    return retrain_pb2.FeedbackReport(
        start_time=timestamp(start), end_time=timestamp(end),
        rules=[retrain_pb2.RuleFeedback(rule=r, stats=g.stats(outcomes)) for r, g in sorted(by_rule.items())],
        models=[retrain_pb2.ModelFeedback(model_id=m, stats=g.stats(outcomes)) for m, g in sorted(by_model.items())],
        manual=manual.stats(outcomes), verdicts=verdicts, suggestions=suggestions,
        definitions=[retrain_pb2.FeedbackDefinition(term=t, meaning=m) for t, m in DEFINITIONS],
    )
