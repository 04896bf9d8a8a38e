-- Hourly roll-ups for the web console (issue 16): the overview's alerts-per-hour chart and the rules
-- page's triggers per rule read these, O(hours x types) rows, instead of every alert and action of
-- their window. Hours are UTC (date_trunc('hour', t, 'UTC')). An alert counts in the hour of its
-- observe_time, an action in the hour of its create_time. The periodic roll-up
-- (server/store/console_hourly.py) fills them in alert-id order behind a watermark, and the console adds
-- the alerts past the watermark from the alert table; it keeps only the hours the console shows.

-- Every model together: what a caller with no model scopes sees.
CREATE TABLE console_alerts_hourly (
    hour        timestamptz NOT NULL,
    alert_type  text NOT NULL,
    alerts      bigint NOT NULL,
    PRIMARY KEY (hour, alert_type)
);
CREATE TABLE console_actions_hourly (
    hour     timestamptz NOT NULL,
    rule     text NOT NULL,
    actions  bigint NOT NULL,
    PRIMARY KEY (hour, rule)
);

-- Per model: what a scoped caller sees is the sum over its models' rows, one index range per model
-- of console_rollup_models that its scopes match (every model the roll-up has counted an alert of,
-- registered or not: an alert may name a model that is not registered). The count is in the key's
-- index so that range is read from the index alone: a model's rows are scattered over the table,
-- one heap page each, since they are written hour by hour for every model at once.
CREATE TABLE console_rollup_models (
    model_id  text PRIMARY KEY
);
CREATE TABLE console_model_alerts_hourly (
    model_id    text NOT NULL,
    hour        timestamptz NOT NULL,
    alert_type  text NOT NULL,
    alerts      bigint NOT NULL,
    PRIMARY KEY (model_id, hour, alert_type) INCLUDE (alerts)
);
CREATE INDEX console_model_alerts_hourly_hour ON console_model_alerts_hourly (hour);
CREATE TABLE console_model_actions_hourly (
    model_id  text NOT NULL,
    hour      timestamptz NOT NULL,
    rule      text NOT NULL,
    actions   bigint NOT NULL,
    PRIMARY KEY (model_id, hour, rule) INCLUDE (actions)
);
CREATE INDEX console_model_actions_hourly_hour ON console_model_actions_hourly (hour);

-- The watermark: every alert with an id up to last_alert_id (and the actions of its decision
-- transaction) is counted above; later ones are read from the alert and action tables.
CREATE TABLE console_rollup_state (
    singleton      boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    last_alert_id  bigint NOT NULL DEFAULT 0,
    update_time    timestamptz NOT NULL DEFAULT now()
);
INSERT INTO console_rollup_state DEFAULT VALUES;
