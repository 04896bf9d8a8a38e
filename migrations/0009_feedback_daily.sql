-- Daily feedback aggregates (issue 15 point 3): what the feedback report needs from the alerts,
-- summed per UTC day (of the alert's observe_time), model and rule, so a 30-day report reads about
-- 30 rows per rule and model instead of every alert. Only the alert-proportional figures live here:
-- they depend on nothing but an alert and the actions written in its own decision transaction, so a
-- day's row never changes once its alerts are counted, however late a job finishes. The figures
-- that depend on jobs (retrains, outcomes, verdicts, false negatives) are read per retrain at report
-- time: there are about a hundred alerts for every retrain. The roll-up (server/feedback/rollup.py)
-- fills these tables; retention keeps them when it drops old alert partitions.
CREATE TABLE feedback_daily (
    model_id          text NOT NULL,
    day               date NOT NULL,
    rule              text NOT NULL,
    triggers          bigint NOT NULL DEFAULT 0,   -- alerts on which the rule acted
    queued            bigint NOT NULL DEFAULT 0,   -- the rule's actions, by decision
    coalesced         bigint NOT NULL DEFAULT 0,
    skipped_cooldown  bigint NOT NULL DEFAULT 0,
    skipped_budget    bigint NOT NULL DEFAULT 0,
    recorded          bigint NOT NULL DEFAULT 0,
    rolled_back       bigint NOT NULL DEFAULT 0,
    quiet             bigint NOT NULL DEFAULT 0,   -- alerts the rule was checked against and stayed quiet
    PRIMARY KEY (model_id, day, rule)
);
-- The report over every model reads a range of days.
CREATE INDEX feedback_daily_day ON feedback_daily (day);

-- A model's triggers count each alert once, however many rules acted on it: not a sum of the rules'.
CREATE TABLE feedback_daily_models (
    model_id  text NOT NULL,
    day       date NOT NULL,
    triggers  bigint NOT NULL DEFAULT 0,           -- the model's alerts that drew any action
    PRIMARY KEY (model_id, day)
);
CREATE INDEX feedback_daily_models_day ON feedback_daily_models (day);

-- The roll-up's watermark: every alert with an id up to last_alert_id is counted above, every
-- later one is not (the report reads those from the alert table).
CREATE TABLE feedback_rollup_state (
    singleton      boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    last_alert_id  bigint NOT NULL DEFAULT 0,
    update_time    timestamptz NOT NULL DEFAULT now()
);
INSERT INTO feedback_rollup_state DEFAULT VALUES;
