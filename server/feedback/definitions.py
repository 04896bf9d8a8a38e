"""What each figure of the feedback report means: in words (sent with every report, printed by the
CLI) and in code (the verdict functions below, the only place a job or an alert is judged)."""

DEFINITIONS = [
    ("triggers", "alerts on which the rule matched (per model: the model's alerts that drew any action)"),
    ("actions", "the rule's decisions, by kind: QUEUED started a job, COALESCED joined a running one, "
                "SKIPPED_COOLDOWN / SKIPPED_BUDGET held back, RECORDED only noted (record/notify, or the "
                "model is unregistered or disabled)"),
    ("retrains", "jobs the rule started (QUEUED decisions)"),
    ("finished rate", "of those jobs, the fraction that finished and evaluated a challenger (promoted "
                      "or not); not whether it helped (called success rate before)"),
    ("promotion rate", "of the finished jobs, the fraction whose challenger was promoted"),
    ("helped rate", "of the finished jobs, the fraction whose action's verdict is helped"),
    ("improvement", "challenger minus champion on the same holdout, signed so that positive is better "
                    "(for log_loss, rmse and mae the difference is reversed); first versions have none"),
    ("time to recovery", "from the alert's observe_time to the promotion of the version its job trained"),
    ("false positive rate", "of the finished retrains with a champion, the fraction whose challenger did "
                            "not beat the champion by the model's promotion margin: the rule fired for nothing"),
    ("false negative rate", "of the alerts the rule was checked against and stayed quiet, the fraction "
                            "followed within the false-negative window by a retrain of the same model (any "
                            "trigger) whose challenger beat the champion by the margin: the rule missed a "
                            "degradation"),
    ("verdict", "per retrain action: helped (its version was promoted and the model's next performance "
                "alert was no worse than the one before), harmed (promoted, and the next performance alert "
                "was worse), no effect (not promoted, or the job failed), pending (not finished)"),
    ("suggestion", "a threshold that would have removed false positives without losing a retrain that "
                   "helped (or caught false negatives), with the counts behind it; never applied by itself: "
                   "check it with `closedloop rules backtest`"),
]


# --- The verdicts in code: report.py and suggest.py judge every job and alert with these. -------

HELPED, NO_EFFECT, HARMED, PENDING = "HELPED", "NO_EFFECT", "HARMED", "PENDING"


def judged(outcome) -> bool:
    """A finished job whose challenger was compared with a champion (first versions have none)."""
    return outcome is not None and outcome["outcome"] == "SUCCEEDED" and outcome["improvement"] is not None


def beat_champion(outcome) -> bool:
    """A helpful retrain: promoted, and its challenger beat the champion by the promotion margin."""
    return (outcome is not None and bool(outcome["promoted"]) and outcome["improvement"] is not None
            and outcome["improvement"] >= (outcome["promotion_margin"] or 0.0))


def false_positive(outcome) -> bool:
    """A judged retrain that was not a helpful one: the rule fired for nothing."""
    return judged(outcome) and not beat_champion(outcome)


def missed(observe_time, helpful_times, window) -> bool:
    """A false negative: a quiet alert followed within `window` by a helpful retrain of its model."""
    return any(observe_time <= t <= observe_time + window for t in helpful_times)


def performance_value(alert) -> float:
    """How bad a performance alert is: its performance_drop, else its severity."""
    return float(alert["metrics"].get("performance_drop", alert["severity"]))


def reads_performance_alerts(outcome) -> bool:
    """Whether `verdict` reads the performance alerts around a retrain with this outcome: only for a
    promoted one (the report looks them up for those alone)."""
    return outcome is not None and outcome["outcome"] == "SUCCEEDED" and bool(outcome["promoted"])


def verdict(outcome, before, after) -> str:
    """One retrain action's verdict: PENDING, NO_EFFECT, HARMED or HELPED (see DEFINITIONS).
    `before`: the model's last performance alert at or before the action's alert; `after`: its first
    one after the job ended (both within the report's window; None: there is none)."""
    if outcome is None:
        return PENDING
    if not reads_performance_alerts(outcome):
        return NO_EFFECT
    if before is not None and after is not None and performance_value(after) > performance_value(before):
        return HARMED
    return HELPED
