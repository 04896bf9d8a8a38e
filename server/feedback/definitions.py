"""What each figure of the feedback report means; sent with every report and printed by the CLI."""

DEFINITIONS = [
    ("triggers", "alerts on which the rule matched (per model: the model's alerts that drew any action)"),
    ("actions", "the rule's decisions, by kind: QUEUED started a job, COALESCED joined a running one, "
                "SKIPPED_COOLDOWN / SKIPPED_BUDGET held back, RECORDED only noted (record/notify, or the "
                "model is unregistered or disabled)"),
    ("retrains", "jobs the rule started (QUEUED decisions)"),
    ("success rate", "of those jobs, the fraction that finished and evaluated a challenger"),
    ("promotion rate", "of the finished jobs, the fraction whose challenger was promoted"),
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
