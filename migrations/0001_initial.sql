-- closedloop schema, version 1.
-- Enumerations are stored as readable text (state, kind, mode) except severity and priority, which
-- are ordered and stored as their protobuf numbers (1 = low … 4 = critical) so SQL can compare them.

-- Models registered for closed-loop retraining (the monitoring <-> retraining integration).
CREATE TABLE monitoring_retraining_integration (
    model_id              text PRIMARY KEY,
    training              jsonb NOT NULL,            -- TrainingSpec as protobuf JSON
    metric                text NOT NULL,
    promotion_margin      double precision NOT NULL DEFAULT 0 CHECK (promotion_margin >= 0),
    enabled               boolean NOT NULL DEFAULT true,
    cooldown_override_s   double precision CHECK (cooldown_override_s >= 0),
    max_retrains_per_day  integer CHECK (max_retrains_per_day >= 0),
    current_version       integer NOT NULL DEFAULT 0,
    current_version_time  timestamptz,
    create_time           timestamptz NOT NULL DEFAULT now(),
    update_time           timestamptz NOT NULL DEFAULT now()
);

-- Every alert received, with its trigger status.
CREATE TABLE monitoring_alert_triggers (
    id                bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    request_id        text,                          -- idempotency key (AIP-155)
    request_hash      bytea,                         -- fingerprint of the request payload
    model_id          text NOT NULL,
    alert_type        text NOT NULL,
    severity          smallint NOT NULL CHECK (severity BETWEEN 1 AND 4),
    metrics           jsonb NOT NULL DEFAULT '{}',
    labels            jsonb NOT NULL DEFAULT '{}',
    source            text NOT NULL DEFAULT '',
    observe_time      timestamptz NOT NULL,
    create_time       timestamptz NOT NULL DEFAULT now(),
    update_time       timestamptz NOT NULL DEFAULT now(),
    state             text NOT NULL DEFAULT 'OPEN'
                      CHECK (state IN ('OPEN', 'ACTIONED', 'SUPPRESSED', 'ACKNOWLEDGED', 'RESOLVED')),
    rule_set_version  bigint NOT NULL DEFAULT 0
);
CREATE UNIQUE INDEX monitoring_alert_triggers_request_id
    ON monitoring_alert_triggers (request_id) WHERE request_id IS NOT NULL;
-- ListAlerts: newest first, optionally per model / type / state.
CREATE INDEX monitoring_alert_triggers_model_time ON monitoring_alert_triggers (model_id, observe_time DESC, id DESC);
CREATE INDEX monitoring_alert_triggers_type_time ON monitoring_alert_triggers (alert_type, observe_time DESC, id DESC);
CREATE INDEX monitoring_alert_triggers_time ON monitoring_alert_triggers (observe_time DESC, id DESC);
CREATE INDEX monitoring_alert_triggers_open ON monitoring_alert_triggers (state) WHERE state <> 'RESOLVED';

-- Versioned rule sets; exactly one is active.
CREATE TABLE automated_response_rules (
    version      bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    source       text NOT NULL,
    filename     text NOT NULL,
    sha256       text NOT NULL,
    rule_names   text[] NOT NULL,
    active       boolean NOT NULL DEFAULT false,
    create_time  timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX automated_response_rules_one_active ON automated_response_rules (active) WHERE active;

-- Retraining jobs: the durable queue.
CREATE TABLE retrain_jobs (
    id                  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    model_id            text NOT NULL REFERENCES monitoring_retraining_integration (model_id),
    mode                text NOT NULL CHECK (mode IN ('FULL', 'INCREMENTAL')),
    priority            smallint NOT NULL CHECK (priority BETWEEN 1 AND 4),
    state               text NOT NULL DEFAULT 'QUEUED'
                        CHECK (state IN ('QUEUED', 'RUNNING', 'SUCCEEDED', 'FAILED', 'CANCELLED')),
    attempt             integer NOT NULL DEFAULT 0,
    max_attempts        integer NOT NULL DEFAULT 3,
    run_after           timestamptz NOT NULL DEFAULT now(),   -- retry backoff
    timeout_s           double precision,
    lease_token         uuid,                                 -- fences completion by the lease holder
    lease_expires       timestamptz,
    worker              text,
    cancel_requested    boolean NOT NULL DEFAULT false,
    progress            double precision NOT NULL DEFAULT 0,
    progress_message    text NOT NULL DEFAULT '',
    trigger_alert_id    bigint,
    trigger_action_id   bigint,
    trigger_rule        text,
    manual              boolean NOT NULL DEFAULT false,
    reason              text NOT NULL DEFAULT '',
    request_id          text,
    coalesced_triggers  integer NOT NULL DEFAULT 0,
    metric              text,
    champion_metric     double precision,
    challenger_metric   double precision,
    promoted            boolean NOT NULL DEFAULT false,
    new_version         integer NOT NULL DEFAULT 0,
    refit_fallback      boolean NOT NULL DEFAULT false,
    error               text NOT NULL DEFAULT '',
    create_time         timestamptz NOT NULL DEFAULT now(),
    start_time          timestamptz,
    end_time            timestamptz,
    update_time         timestamptz NOT NULL DEFAULT now()
);
-- One active job per model, enforced by PostgreSQL across every server replica.
CREATE UNIQUE INDEX retrain_jobs_one_active_per_model
    ON retrain_jobs (model_id) WHERE state IN ('QUEUED', 'RUNNING');
-- Claim order: critical first, then oldest.
CREATE INDEX retrain_jobs_claim ON retrain_jobs (priority DESC, id) WHERE state = 'QUEUED';
-- Rescue of expired leases.
CREATE INDEX retrain_jobs_running ON retrain_jobs (lease_expires) WHERE state = 'RUNNING';
CREATE UNIQUE INDEX retrain_jobs_request_id ON retrain_jobs (request_id) WHERE request_id IS NOT NULL;
CREATE INDEX retrain_jobs_model ON retrain_jobs (model_id, id DESC);
-- Daily budget and cooldown: the model's recent automated retrains.
CREATE INDEX retrain_jobs_model_created ON retrain_jobs (model_id, create_time DESC);

-- Decisions of the loop, one row per matching rule action.
CREATE TABLE closed_loop_actions (
    id                bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    alert_id          bigint NOT NULL REFERENCES monitoring_alert_triggers (id),
    model_id          text NOT NULL,
    rule              text NOT NULL,
    rule_set_version  bigint NOT NULL,
    kind              text NOT NULL CHECK (kind IN ('RETRAIN', 'RECORD', 'NOTIFY', 'ROLLBACK')),
    mode              text CHECK (mode IN ('FULL', 'INCREMENTAL')),
    priority          smallint CHECK (priority BETWEEN 1 AND 4),
    decision          text NOT NULL
                      CHECK (decision IN ('QUEUED', 'COALESCED', 'SKIPPED_COOLDOWN', 'SKIPPED_BUDGET',
                                          'RECORDED', 'ROLLED_BACK')),
    reason            text NOT NULL DEFAULT '',
    job_id            bigint REFERENCES retrain_jobs (id),
    cooldown_until    timestamptz,
    create_time       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX closed_loop_actions_alert ON closed_loop_actions (alert_id);
CREATE INDEX closed_loop_actions_job ON closed_loop_actions (job_id) WHERE job_id IS NOT NULL;
CREATE INDEX closed_loop_actions_rule_time ON closed_loop_actions (rule, create_time);
-- Cooldown look-up: the last retrain a rule (or any rule) triggered for a model.
CREATE INDEX closed_loop_actions_cooldown ON closed_loop_actions (model_id, rule, create_time DESC)
    WHERE decision = 'QUEUED';

-- Trained versions of each model.
CREATE TABLE model_versions (
    model_id               text NOT NULL REFERENCES monitoring_retraining_integration (model_id),
    version                integer NOT NULL,
    job_id                 bigint REFERENCES retrain_jobs (id),
    mode                   text NOT NULL,
    metric                 text NOT NULL,
    metric_value           double precision NOT NULL,
    champion_metric_value  double precision,
    promoted               boolean NOT NULL DEFAULT false,
    artifact_path          text NOT NULL,
    artifact_sha256        text NOT NULL,
    data_window            text NOT NULL DEFAULT '',
    train_rows             bigint NOT NULL DEFAULT 0,
    holdout_rows           bigint NOT NULL DEFAULT 0,
    refit_fallback         boolean NOT NULL DEFAULT false,
    create_time            timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (model_id, version)
);

-- Every change of a model's current version: promotions and rollbacks.
CREATE TABLE model_promotions (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    model_id      text NOT NULL REFERENCES monitoring_retraining_integration (model_id),
    from_version  integer NOT NULL,
    to_version    integer NOT NULL,
    kind          text NOT NULL CHECK (kind IN ('PROMOTION', 'ROLLBACK')),
    job_id        bigint,
    reason        text NOT NULL DEFAULT '',
    create_time   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX model_promotions_model ON model_promotions (model_id, id DESC);

-- One row per finished job: what the retrain achieved (time series).
CREATE TABLE feedback_loop_metrics (
    time                    timestamptz NOT NULL DEFAULT now(),
    model_id                text NOT NULL,
    job_id                  bigint NOT NULL,
    alert_id                bigint,
    action_id               bigint,
    rule                    text,                     -- NULL for manual retrains
    manual                  boolean NOT NULL DEFAULT false,
    mode                    text NOT NULL,
    outcome                 text NOT NULL,            -- SUCCEEDED / FAILED / CANCELLED
    metric                  text,
    champion_metric         double precision,
    challenger_metric       double precision,
    improvement             double precision,         -- in the metric's better direction
    promotion_margin        double precision,
    promoted                boolean NOT NULL DEFAULT false,
    new_version             integer,
    queue_wait_s            double precision,
    run_s                   double precision,
    alert_to_promotion_s    double precision
);
CREATE INDEX feedback_loop_metrics_model_time ON feedback_loop_metrics (model_id, time DESC);
CREATE INDEX feedback_loop_metrics_rule_time ON feedback_loop_metrics (rule, time DESC);
CREATE INDEX feedback_loop_metrics_job ON feedback_loop_metrics (job_id);
-- Time-range scans of the report; the runner turns this table into a TimescaleDB hypertable when
-- the extension is available.
CREATE INDEX feedback_loop_metrics_time ON feedback_loop_metrics USING brin (time);
