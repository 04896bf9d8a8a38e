-- Alerts and actions partitioned by month (issue 15, point 2), so that what closedloop has stored
-- does not slow down what it does now, and retention drops a month whole instead of deleting rows.
--
-- monitoring_alert_triggers: RANGE partitions on observe_time, one per calendar month (UTC), named
--   monitoring_alert_triggers_pYYYYMM, plus monitoring_alert_triggers_before (MINVALUE to the oldest
--   month) for alerts observed before the oldest month (validation refuses the far future, and the
--   server creates months ahead). No DEFAULT partition: it would stop the planner from reading the
--   months in order (ordered Append) and make every new month scan it. Monthly, not weekly: the
--   target (10M alerts over 180 days) makes ~1.7M rows a month, 7-9 partitions to keep, so a query
--   that cannot prune by time (GetAlert by id) probes under ten small indexes.
-- closed_loop_actions: RANGE partitions on create_time, the same months. An action is written in the
--   transaction that stores its alert, so its month is the alert's arrival month.
--
-- Idempotency: a unique index on a partitioned table must contain the partition key, so a unique
-- (request_id) over all months cannot live on the alert table. alert_request_ids holds one narrow row
-- per request_id (the key, the alert it made, when): INSERT ... ON CONFLICT on it decides, across
-- replicas and months, which request is new. Its rows expire with the retention period (the server's
-- maintenance deletes those older than the cutoff each run: a few thousand rows of a 3-column table
-- at a time, by a BRIN range on create_time).
--
-- Foreign keys: closed_loop_actions.alert_id cannot reference monitoring_alert_triggers(id) any more
-- (the referenced key would have to be (id, observe_time), which the action does not carry, and a
-- FK into a partitioned table stops its months from being dropped while any action references them).
-- Actions are only written by the decision transaction that inserts their alert, so the reference
-- holds by construction; retention can leave an action whose alert (observed long before it arrived)
-- was dropped first, until the action's own month expires: readers join actions to alerts and skip
-- those. actions.job_id -> retrain_jobs keeps its foreign key.
--
-- Every existing row is kept: the old tables are renamed, copied into the new ones (same ids; the
-- identity continues from the highest), then dropped.

-- Partition maintenance, defined once in the database: this migration uses it for the existing rows,
-- the server's periodic maintenance (server/store/partitions.py) for the months ahead and retention.

-- The month partition name of `parent` for the month holding `t` (UTC).
CREATE FUNCTION closedloop_month_name(parent text, t timestamptz) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT parent || '_p' || to_char(t AT TIME ZONE 'UTC', 'YYYYMM')
$$;

-- The first instant of the month holding `t` (UTC).
CREATE FUNCTION closedloop_month_start(t timestamptz) RETURNS timestamptz
LANGUAGE sql IMMUTABLE AS $$
    SELECT date_trunc('month', t AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'
$$;

-- The lower bounds of `parent`'s month partitions, oldest first (read from their names).
CREATE FUNCTION closedloop_months(parent text) RETURNS SETOF timestamptz
LANGUAGE sql STABLE AS $$
    SELECT to_date(right(c.relname, 6) || '01', 'YYYYMMDD')::timestamp AT TIME ZONE 'UTC'
      FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
     WHERE i.inhparent = parent::regclass AND c.relname ~ ('^' || parent || '_p[0-9]{6}$')
     ORDER BY 1
$$;

-- Make sure `parent` has a partition for every month from `since` to `upto`; returns how many it
-- created. Months older than the oldest one take over the matching rows of the _before partition
-- (rare: alerts observed long ago); the _before partition always ends at the oldest month.
CREATE FUNCTION closedloop_ensure_months(parent text, since timestamptz, upto timestamptz) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    oldest timestamptz := (SELECT min(m) FROM closedloop_months(parent) m);
    first_month timestamptz := closedloop_month_start(least(since, upto));
    month timestamptz;
    created integer := 0;
    before_name text := parent || '_before';
    moved text := parent || '_before_moved';
BEGIN
    IF oldest IS NOT NULL AND first_month > oldest THEN
        first_month := oldest;
    END IF;
    IF oldest IS NULL OR first_month < oldest THEN
        -- The _before partition must end where the new oldest month starts: take it out, and put
        -- its rows back through the parent once the months exist.
        IF to_regclass(before_name) IS NOT NULL THEN
            EXECUTE format('ALTER TABLE %I DETACH PARTITION %I', parent, before_name);
            EXECUTE format('ALTER TABLE %I RENAME TO %I', before_name, moved);
        END IF;
    END IF;
    month := first_month;
    WHILE month <= closedloop_month_start(upto) LOOP
        IF to_regclass(closedloop_month_name(parent, month)) IS NULL THEN
            EXECUTE format('CREATE TABLE %I PARTITION OF %I FOR VALUES FROM (%L) TO (%L)',
                           closedloop_month_name(parent, month), parent, month, month + interval '1 month');
            created := created + 1;
        END IF;
        month := month + interval '1 month';
    END LOOP;
    IF to_regclass(before_name) IS NULL THEN
        EXECUTE format('CREATE TABLE %I PARTITION OF %I FOR VALUES FROM (MINVALUE) TO (%L)',
                       before_name, parent, (SELECT min(m) FROM closedloop_months(parent) m));
    END IF;
    IF to_regclass(moved) IS NOT NULL THEN
        EXECUTE format('INSERT INTO %I SELECT * FROM %I', parent, moved);
        EXECUTE format('DROP TABLE %I', moved);
    END IF;
    RETURN created;
END
$$;

-- Retention: drop every month of `parent` that ends at or before `cutoff`, whole (DROP TABLE, no
-- row is deleted), and the _before partition with it (everything in it is older still: it is
-- recreated empty, ending at the oldest remaining month). The current month is never dropped.
-- Returns the dropped partitions' names.
CREATE FUNCTION closedloop_drop_months(parent text, cutoff timestamptz) RETURNS SETOF text
LANGUAGE plpgsql AS $$
DECLARE
    month timestamptz;
    before_name text := parent || '_before';
    keep_from timestamptz := least(cutoff, closedloop_month_start(now()));
BEGIN
    FOR month IN SELECT m FROM closedloop_months(parent) m WHERE m + interval '1 month' <= keep_from ORDER BY m LOOP
        EXECUTE format('DROP TABLE %I', closedloop_month_name(parent, month));
        RETURN NEXT closedloop_month_name(parent, month);
    END LOOP;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    EXECUTE format('DROP TABLE %I', before_name);
    RETURN NEXT before_name;
    EXECUTE format('CREATE TABLE %I PARTITION OF %I FOR VALUES FROM (MINVALUE) TO (%L)',
                   before_name, parent, (SELECT min(m) FROM closedloop_months(parent) m));
END
$$;

-- The old tables step aside (their indexes keep their names; free them for the new tables).
ALTER TABLE closed_loop_actions RENAME TO closed_loop_actions_unpartitioned;
ALTER TABLE monitoring_alert_triggers RENAME TO monitoring_alert_triggers_unpartitioned;
DROP INDEX monitoring_alert_triggers_request_id, monitoring_alert_triggers_model_time,
    monitoring_alert_triggers_type_time, monitoring_alert_triggers_time, monitoring_alert_triggers_open,
    closed_loop_actions_alert, closed_loop_actions_job, closed_loop_actions_rule_time, closed_loop_actions_cooldown;

-- Identity columns on partitioned tables arrive in PostgreSQL 17; a sequence does the same here.
CREATE SEQUENCE monitoring_alert_triggers_ids;
SELECT setval('monitoring_alert_triggers_ids', coalesce(max(id), 0) + 1, false) FROM monitoring_alert_triggers_unpartitioned;
CREATE SEQUENCE closed_loop_actions_ids;
SELECT setval('closed_loop_actions_ids', coalesce(max(id), 0) + 1, false) FROM closed_loop_actions_unpartitioned;

CREATE TABLE monitoring_alert_triggers (
    id                bigint NOT NULL DEFAULT nextval('monitoring_alert_triggers_ids'),
    request_id        text,                          -- idempotency key (AIP-155); unique via alert_request_ids
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
    rule_set_version  bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (id, observe_time)
) PARTITION BY RANGE (observe_time);
ALTER SEQUENCE monitoring_alert_triggers_ids OWNED BY monitoring_alert_triggers.id;
-- ListAlerts, newest first by (observe_time, id), one index per documented filter so each page is
-- one ordered index range per month (keyset paging continues from the last (observe_time, id)).
CREATE INDEX monitoring_alert_triggers_time ON monitoring_alert_triggers (observe_time DESC, id DESC);
CREATE INDEX monitoring_alert_triggers_model_time ON monitoring_alert_triggers (model_id, observe_time DESC, id DESC);
CREATE INDEX monitoring_alert_triggers_type_time ON monitoring_alert_triggers (alert_type, observe_time DESC, id DESC);
CREATE INDEX monitoring_alert_triggers_state_time ON monitoring_alert_triggers (state, observe_time DESC, id DESC);

CREATE TABLE closed_loop_actions (
    id                bigint NOT NULL DEFAULT nextval('closed_loop_actions_ids'),
    alert_id          bigint NOT NULL,               -- monitoring_alert_triggers.id (see above: no FK)
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
    create_time       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (id, create_time)
) PARTITION BY RANGE (create_time);
ALTER SEQUENCE closed_loop_actions_ids OWNED BY closed_loop_actions.id;
CREATE INDEX closed_loop_actions_alert ON closed_loop_actions (alert_id);
CREATE INDEX closed_loop_actions_job ON closed_loop_actions (job_id) WHERE job_id IS NOT NULL;
CREATE INDEX closed_loop_actions_rule_time ON closed_loop_actions (rule, create_time);
-- Cooldown look-up: the last retrain a rule (or any rule) triggered for a model.
CREATE INDEX closed_loop_actions_cooldown ON closed_loop_actions (model_id, rule, create_time DESC)
    WHERE decision = 'QUEUED';

CREATE TABLE alert_request_ids (
    request_id    text PRIMARY KEY,
    alert_id      bigint NOT NULL,
    observe_time  timestamptz NOT NULL,              -- with alert_id, the alert's key (its month)
    create_time   timestamptz NOT NULL DEFAULT now()
);
-- Expiry with the retention period: rows arrive in create_time order, so a BRIN range is enough.
CREATE INDEX alert_request_ids_create_time ON alert_request_ids USING brin (create_time);

-- Months for the stored rows, this month and the next two (the server keeps creating ahead).
SELECT closedloop_ensure_months('monitoring_alert_triggers',
                                coalesce((SELECT min(observe_time) FROM monitoring_alert_triggers_unpartitioned), now()),
                                greatest((SELECT max(observe_time) FROM monitoring_alert_triggers_unpartitioned), now())
                                    + interval '2 months');
SELECT closedloop_ensure_months('closed_loop_actions',
                                coalesce((SELECT min(create_time) FROM closed_loop_actions_unpartitioned), now()),
                                greatest((SELECT max(create_time) FROM closed_loop_actions_unpartitioned), now())
                                    + interval '2 months');

INSERT INTO monitoring_alert_triggers
     SELECT id, request_id, request_hash, model_id, alert_type, severity, metrics, labels, source, observe_time,
            create_time, update_time, state, rule_set_version
       FROM monitoring_alert_triggers_unpartitioned;
INSERT INTO alert_request_ids (request_id, alert_id, observe_time, create_time)
     SELECT request_id, id, observe_time, create_time FROM monitoring_alert_triggers_unpartitioned
      WHERE request_id IS NOT NULL;
INSERT INTO closed_loop_actions
     SELECT id, alert_id, model_id, rule, rule_set_version, kind, mode, priority, decision, reason, job_id,
            cooldown_until, create_time
       FROM closed_loop_actions_unpartitioned;
DROP TABLE closed_loop_actions_unpartitioned;
DROP TABLE monitoring_alert_triggers_unpartitioned;
