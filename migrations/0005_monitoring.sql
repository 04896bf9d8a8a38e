-- Monitoring (issue 13): reference profiles, the per-model monitoring spec, observation/outcome
-- windows with their per-server partial state, and one measurement per closed window and feature.

-- The reference profile of a trained version (server/monitor/profile.py, stored with codec.to_bytes:
-- a JSON header plus the raw KLL sketches, never a pickle) and a readable summary of it.
CREATE TABLE model_profiles (
    model_id      text NOT NULL,
    version       integer NOT NULL,
    profile       bytea NOT NULL,
    summary       jsonb NOT NULL,                  -- rows, features and their kinds, metric, holdout value
    origin        text NOT NULL CHECK (origin IN ('trainer', 'backfill')),
    create_time   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (model_id, version)
);

-- A model's monitoring spec (MonitoringSpec as protobuf JSON); no row: the defaults.
CREATE TABLE model_monitoring_specs (
    model_id      text PRIMARY KEY REFERENCES monitoring_retraining_integration (model_id),
    spec          jsonb NOT NULL,
    update_time   timestamptz NOT NULL DEFAULT now()
);

-- Windows of one model version: observations (drift) or outcomes (performance). Exactly one OPEN
-- window per model, version and kind; it is closed once, by one server, under an advisory lock.
CREATE TABLE monitor_windows (
    id                 bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    model_id           text NOT NULL,
    version            integer NOT NULL,
    kind               text NOT NULL CHECK (kind IN ('OBSERVATIONS', 'OUTCOMES')),
    seq                integer NOT NULL,              -- 1, 2, ... per model, version and kind
    state              text NOT NULL DEFAULT 'OPEN' CHECK (state IN ('OPEN', 'CLOSED')),
    start_time         timestamptz NOT NULL DEFAULT now(),
    due_time           timestamptz,                   -- closes by time here (NULL: rows only)
    close_time         timestamptz,
    rows               bigint NOT NULL DEFAULT 0,     -- rows flushed into it (all servers)
    first_observe_time timestamptz,
    last_observe_time  timestamptz,
    judged             boolean NOT NULL DEFAULT false,
    verdict            jsonb,                         -- closed: scores, shares, performance, note
    alert_id           bigint,
    UNIQUE (model_id, version, kind, seq)
);
CREATE UNIQUE INDEX monitor_windows_one_open ON monitor_windows (model_id, version, kind) WHERE state = 'OPEN';
CREATE INDEX monitor_windows_due ON monitor_windows (due_time) WHERE state = 'OPEN';
CREATE INDEX monitor_windows_model ON monitor_windows (model_id, close_time DESC, id DESC);

-- Each server's partial state of an open window: the mergeable accumulator it flushed
-- (codec.to_bytes), merged into on every flush; the closing server merges all of them.
CREATE TABLE monitor_partials (
    window_id     bigint NOT NULL REFERENCES monitor_windows (id) ON DELETE CASCADE,
    server_id     text NOT NULL,
    rows          bigint NOT NULL,
    state         bytea NOT NULL,
    update_time   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (window_id, server_id)
);

-- One measurement per closed observation window and feature: the time-indexed drift history.
CREATE TABLE monitor_measurements (
    window_id       bigint NOT NULL REFERENCES monitor_windows (id),
    model_id        text NOT NULL,
    version         integer NOT NULL,
    feature         text NOT NULL,
    method          text NOT NULL,
    statistic       double precision NOT NULL,
    p_value         double precision,
    threshold       double precision NOT NULL,
    drifted         boolean NOT NULL,
    effect          double precision NOT NULL,
    reference_rows  bigint NOT NULL,
    window_rows     bigint NOT NULL,
    measure_time    timestamptz NOT NULL,
    PRIMARY KEY (window_id, feature)
);
CREATE INDEX monitor_measurements_feature_time ON monitor_measurements (model_id, feature, measure_time DESC);
