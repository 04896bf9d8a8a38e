-- The daily feedback aggregates per rule, over every model (issue 15 point 3). A rule's quiet checks
-- are only ever reported per rule (a model's figures count what acted on it, not what stayed quiet),
-- yet they make most feedback_daily rows: every rule checked against a model's alerts that day has
-- one. The report over every model (no model filter, no token scopes) reads the rules' figures here,
-- one row per day and rule, and the models' from the feedback_daily rows where a rule acted
-- (triggers > 0: a rule acted on an alert exactly when it wrote an action, so exactly then it has a
-- decision), a quarter of them at ten million alerts. The roll-up adds to both in one transaction.
CREATE TABLE feedback_daily_rules (
    day               date NOT NULL,
    rule              text NOT NULL,
    triggers          bigint NOT NULL DEFAULT 0,
    queued            bigint NOT NULL DEFAULT 0,
    coalesced         bigint NOT NULL DEFAULT 0,
    skipped_cooldown  bigint NOT NULL DEFAULT 0,
    skipped_budget    bigint NOT NULL DEFAULT 0,
    recorded          bigint NOT NULL DEFAULT 0,
    rolled_back       bigint NOT NULL DEFAULT 0,
    quiet             bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (day, rule)
);

INSERT INTO feedback_daily_rules (day, rule, triggers, queued, coalesced, skipped_cooldown, skipped_budget,
                                  recorded, rolled_back, quiet)
SELECT day, rule, sum(triggers), sum(queued), sum(coalesced), sum(skipped_cooldown), sum(skipped_budget),
       sum(recorded), sum(rolled_back), sum(quiet)
  FROM feedback_daily GROUP BY day, rule;

CREATE INDEX feedback_daily_acted_day ON feedback_daily (day) WHERE triggers > 0;
