"""RetrainService, feedback part: GetFeedbackReport (RetrainServicer delegates it here), and the
conversion of feedback/'s report into the v1 message. No SQL here."""

from __future__ import annotations

import datetime as dt

import asyncpg

from closedloop.v1 import retrain_pb2

from ..feedback.report import FeedbackReport, FeedbackStats, build_report
from ..loop.rule_engine import RuleEngine
from .auth import model_scopes, require_model
from .convert import duration, from_timestamp, timestamp
from .validation import MAX_WINDOW_S, Violations, check_model_id, check_window_time


def stats_message(s: FeedbackStats) -> retrain_pb2.FeedbackStats:
    return retrain_pb2.FeedbackStats(
        triggers=s.triggers, actions_by_decision=s.actions_by_decision, retrains=s.retrains, succeeded=s.succeeded,
        promoted=s.promoted, finished_rate=s.finished_rate, promotion_rate=s.promotion_rate,
        mean_improvement=s.mean_improvement, median_improvement=s.median_improvement,
        mean_time_to_recovery=duration(s.mean_time_to_recovery_s), false_positive_rate=s.false_positive_rate,
        false_negative_rate=s.false_negative_rate, evaluations_quiet=s.evaluations_quiet,
        helped=s.helped, no_effect=s.no_effect, harmed=s.harmed, helped_rate=s.helped_rate)


def feedback_message(report: FeedbackReport) -> retrain_pb2.FeedbackReport:
    return retrain_pb2.FeedbackReport(
        start_time=timestamp(report.start_time), end_time=timestamp(report.end_time),
        rules=[retrain_pb2.RuleFeedback(rule=r, stats=stats_message(s)) for r, s in report.rules.items()],
        models=[retrain_pb2.ModelFeedback(model_id=m, stats=stats_message(s)) for m, s in report.models.items()],
        manual=stats_message(report.manual),
        verdicts=[retrain_pb2.ActionVerdict(
            action_id=str(v.action_id), alert_id=str(v.alert_id), rule=v.rule, model_id=v.model_id,
            job_id=str(v.job_id), verdict=retrain_pb2.Verdict.Value("VERDICT_" + v.verdict),
            improvement=v.improvement) for v in report.verdicts],
        suggestions=[retrain_pb2.ThresholdSuggestion(
            rule=s.rule, field=s.field, operator=s.operator, current_value=s.current_value,
            suggested_value=s.suggested_value, false_positives_removed=s.false_positives_removed,
            helpful_retrains_kept=s.helpful_retrains_kept, helpful_retrains_lost=s.helpful_retrains_lost,
            explanation=s.explanation) for s in report.suggestions],
        definitions=[retrain_pb2.FeedbackDefinition(term=t, meaning=m) for t, m in report.definitions],
    )


class FeedbackHandlers:
    def __init__(self, pool: asyncpg.Pool, rules: RuleEngine | None) -> None:
        self.pool = pool
        self.rules = rules  # the active set's thresholds feed the suggestions; None: no suggestions

    async def GetFeedbackReport(self, request, context):
        v = Violations()
        if request.model_id:
            check_model_id(v, request.model_id)
        for field in ("start_time", "end_time"):
            if request.HasField(field):
                check_window_time(v, getattr(request, field), field)
        window = None
        if request.HasField("false_negative_window"):
            nanos = request.false_negative_window.ToNanoseconds()
            if not 0 < nanos <= MAX_WINDOW_S * 10**9:
                v.add("false_negative_window", f"must be positive and at most {MAX_WINDOW_S // 86400} days")
            window = dt.timedelta(microseconds=nanos / 1000)
        v.raise_if_any()
        start = from_timestamp(request.start_time) if request.HasField("start_time") else None
        end = from_timestamp(request.end_time) if request.HasField("end_time") else None
        if start and end and end <= start:
            v.add("end_time", "must be after start_time")
        v.raise_if_any()
        if request.model_id:
            require_model(request.model_id)
        active = self.rules.active if self.rules is not None else None
        report = await build_report(self.pool, model_id=request.model_id or None, rule=request.rule or None,
                                    start=start, end=end, fn_window=window,
                                    active_ruleset=active.ruleset if active else None, scopes=model_scopes())
        return feedback_message(report)
