"""Threshold suggestions from recorded outcomes. Advice only: nothing here changes a rule.

For a rule threshold `metrics.X > v` (or >=): the retrains it started split into those that helped
(promoted, beat the champion by the margin) and false positives. Raising v to the largest false
positive's X that is still below every helpful retrain's X removes those false positives and keeps
every retrain that helped. Conversely, quiet alerts that were followed by a helpful retrain (false
negatives) with X just under v argue for lowering it to the smallest such X. `<` / `<=` mirror this.
"""

from __future__ import annotations

from dataclasses import dataclass

from .definitions import beat_champion, judged


@dataclass(frozen=True)
class ThresholdSuggestion:
    rule: str
    field: str            # e.g. metrics.drift_score
    operator: str
    current_value: float
    suggested_value: float
    false_positives_removed: int
    helpful_retrains_kept: int
    helpful_retrains_lost: int
    explanation: str


def _suggestible(ruleset):
    """The thresholds a suggestion can be made for: a metric compared with <, <=, > or >=."""
    return [t for t in ruleset.thresholds()
            if t.field.startswith("metrics.") and t.op in (">", ">=", "<", "<=")]


def threshold_metrics(ruleset) -> list[str]:
    """The metric names the suggestions for `ruleset` read of an alert (none without a rule set)."""
    return sorted({t.field.removeprefix("metrics.") for t in _suggestible(ruleset)}) if ruleset is not None else []


def threshold_rules(ruleset) -> frozenset[str]:
    """The rules of `ruleset` a suggestion can be made for (the only ones whose quiet alerts it reads)."""
    return frozenset(t.rule for t in _suggestible(ruleset)) if ruleset is not None else frozenset()


def suggest_thresholds(ruleset, actions, outcomes: dict, quiet_alerts: dict,
                       only_rule: str | None) -> list[ThresholdSuggestion]:
    """`actions`: action rows with their alert's metrics (`alert_metrics`); `outcomes`: job_id -> feedback
    row; `quiet_alerts`: rule -> [(alert, followed by a helpful retrain)], of each alert only its
    "metrics" read (threshold_metrics says which suffice)."""
    out = []
    for t in _suggestible(ruleset):
        if only_rule and t.rule != only_rule:
            continue
        key = t.field.removeprefix("metrics.")
        upward = t.op in (">", ">=")
        helpful, false_pos = [], []
        for act in actions:
            if act["rule"] != t.rule or act["decision"] != "QUEUED" or act["job_id"] is None:
                continue
            outcome = outcomes.get(act["job_id"])
            if not judged(outcome):
                continue
            value = act["alert_metrics"].get(key)
            if value is None:
                continue
            (helpful if beat_champion(outcome) else false_pos).append(float(value))
        if false_pos:
            if upward:
                limit = min(helpful) if helpful else float("inf")
                removable = [x for x in false_pos if x < limit]
                if removable:
                    new = max(removable)
                    out.append(_suggestion(t, new, len(removable), len(helpful), 0,
                                           f"raise to {new:g}: {len(removable)} of {len(false_pos)} false "
                                           f"positive(s) had {t.field} at or below it; every one of the "
                                           f"{len(helpful)} retrain(s) that helped was above"))
            else:
                limit = max(helpful) if helpful else float("-inf")
                removable = [x for x in false_pos if x > limit]
                if removable:
                    new = min(removable)
                    out.append(_suggestion(t, new, len(removable), len(helpful), 0,
                                           f"lower to {new:g}: removes {len(removable)} false positive(s), "
                                           f"keeps all {len(helpful)} retrain(s) that helped"))
        missed = [float(a["metrics"][key]) for a, was_missed in quiet_alerts.get(t.rule, [])
                  if was_missed and key in a["metrics"]]
        missed = [x for x in missed if (x <= t.value if upward else x >= t.value)]
        if missed and not false_pos:
            new = min(missed) if upward else max(missed)
            out.append(_suggestion(t, new, 0, len(helpful), 0,
                                   f"{'lower' if upward else 'raise'} to {new:g}: {len(missed)} quiet alert(s) "
                                   f"with {t.field} there were followed by a retrain that helped "
                                   f"(false negatives); check the cost with a backtest"))
    return out


def _suggestion(t, new: float, removed: int, kept: int, lost: int, why: str) -> ThresholdSuggestion:
    return ThresholdSuggestion(
        rule=t.rule, field=t.field, operator=t.op, current_value=t.value, suggested_value=new,
        false_positives_removed=removed, helpful_retrains_kept=kept, helpful_retrains_lost=lost, explanation=why)
