-- A decision batch in two round trips instead of five (issue 12): read the decision state without
-- any lock, decide in Python, then one autocommitted call of closedloop_write_decided, which takes
-- the models' decision locks, checks that the state is still the one read (a fingerprint of the
-- rows), and writes the alerts, the jobs they start, the triggers folded into active jobs and the
-- actions. When anything differs it writes nothing and raises CLD01; the server then decides the
-- batch again the locked way (BEGIN with the locks, state read, writes, COMMIT), which settles
-- every disagreement as before. A repeated request_id raises CLD02 (the batch is decided again
-- knowing it is a repeat).

-- What a retrain decision needs about each model, in one place for both ways of deciding. The
-- plans are generic: a custom plan for `model_id = ANY(...)` looks cheaper for a short array, yet
-- planning it over the monthly partitions costs more than running it (bench/README.md, loop).
-- closed_loop_actions is partitioned by month, and each model's look-back over its queued actions
-- depends on its own cooldown override, so a plan with only the per-model condition starts every
-- month's index scan on every call and prunes per model at run time. One bound for the whole call, the
-- longest look-back among the models asked for, lets the generic plan drop the other months when it
-- starts: on ten million alerts (ten monthly partitions), five models, the query alone 0.52 -> 0.29 ms
-- p50 (1.42 -> 0.71 ms p99); through this function, without and with the bound called alternately,
-- 0.36 -> 0.30 ms p50. The per-model condition stays, so the rows are the same.
CREATE FUNCTION closedloop_decision_state(p_models text[], p_cooldown_s float8)
RETURNS TABLE (model_id text, enabled boolean, cooldown_override_s float8, max_retrains_per_day integer,
               current_version integer, last_automated timestamptz, automated_today bigint, active_job bigint,
               queued_rules text[], queued_times timestamptz[])
LANGUAGE plpgsql STABLE SET plan_cache_mode = force_generic_plan AS $$
#variable_conflict use_column
DECLARE
    v_look_back float8;
BEGIN
    SELECT greatest(p_cooldown_s, coalesce(max(m.cooldown_override_s), 0)) INTO v_look_back
      FROM monitoring_retraining_integration m WHERE m.model_id = ANY(p_models);
    RETURN QUERY
    SELECT m.model_id, m.enabled, m.cooldown_override_s, m.max_retrains_per_day, m.current_version,
           a.last_automated, a.automated_today,
           (SELECT j.id FROM retrain_jobs j WHERE j.model_id = m.model_id AND j.state IN ('QUEUED', 'RUNNING')),
           q.rules, q.times
      FROM monitoring_retraining_integration m
      LEFT JOIN LATERAL (
           SELECT max(j.create_time) AS last_automated,
                  count(*) FILTER (WHERE j.create_time > now() - interval '1 day') AS automated_today
             FROM retrain_jobs j WHERE j.model_id = m.model_id AND NOT j.manual) a ON true
      LEFT JOIN LATERAL (
           SELECT array_agg(last.rule) AS rules, array_agg(last.t) AS times FROM (
               SELECT DISTINCT ON (c.rule) c.rule, c.create_time AS t
                 FROM closed_loop_actions c
                WHERE c.model_id = m.model_id AND c.decision = 'QUEUED'
                  AND c.create_time > now() - make_interval(secs => v_look_back)
                  AND c.create_time > now() - make_interval(
                          secs => greatest(p_cooldown_s, coalesce(m.cooldown_override_s, 0)))
                ORDER BY c.rule, c.create_time DESC) last) q ON true
     WHERE m.model_id = ANY(p_models);
END $$;

-- The fingerprint a decision was taken on: the state rows as text, in model order.
CREATE FUNCTION closedloop_decision_fingerprint(p_models text[], p_cooldown_s float8) RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT md5(coalesce(string_agg(s::text, '|' ORDER BY s.model_id), ''))
      FROM closedloop_decision_state(p_models, p_cooldown_s) s
$$;

-- The write. $1 and $2 are the alert rows and the rule set version exactly as insert_alerts sends
-- them (server/store/alerts.py). Jobs name their starting alert by its position in the batch;
-- actions name their alert by position and their job either by id (an active job) or by the
-- position of the alert starting it in this batch; an action with no reason joined such a new job
-- and is given the reason naming it. Returns ('alert', id, request_id, create_time, position),
-- ('job', id, NULL, NULL, starting alert's position), ('action', id, NULL, create_time, position).
CREATE FUNCTION closedloop_write_decided(
    p_alerts jsonb, p_version bigint, p_keys bigint[], p_models text[], p_cooldown_s float8, p_expected text,
    p_job_alert integer[], p_job_mode text[], p_job_priority smallint[], p_job_reason text[], p_job_rule text[],
    p_job_coalesced integer[], p_max_attempts integer, p_timeout_s float8, p_channel text,
    p_join_id bigint[], p_join_mode text[], p_join_priority smallint[], p_join_count integer[],
    p_act_alert integer[], p_act_rule text[], p_act_kind text[], p_act_mode text[], p_act_priority smallint[],
    p_act_decision text[], p_act_reason text[], p_act_job bigint[], p_act_new_job integer[],
    p_act_cooldown_until timestamptz[], p_act_starts boolean[])
RETURNS TABLE (kind text, id bigint, request_id text, create_time timestamptz, pos integer)
LANGUAGE plpgsql SET plan_cache_mode = force_generic_plan AS $$
#variable_conflict use_column
DECLARE
    v_ids bigint[];
    v_models text[];
    v_request_ids text[];
    v_times timestamptz[];
    v_job_ids bigint[];
    v_job_alerts integer[];
    v_joined integer;
BEGIN
    -- The locks in one fixed order (the caller sorts the keys), as decision_transaction takes them.
    PERFORM pg_advisory_xact_lock(k) FROM unnest(p_keys) WITH ORDINALITY AS x(k, n) ORDER BY n;
    -- Each statement of this (volatile) function sees what was committed before it started, so
    -- this read sees whatever the previous holder of the locks wrote.
    IF cardinality(p_models) > 0
       AND closedloop_decision_fingerprint(p_models, p_cooldown_s) IS DISTINCT FROM p_expected THEN
        RAISE EXCEPTION 'the decision state changed since it was read' USING ERRCODE = 'CLD01';
    END IF;

    WITH input AS (
             SELECT nextval('monitoring_alert_triggers_ids') AS id, e.v->>0 AS r, decode(e.v->>1, 'hex') AS h,
                    e.v->>2 AS m, e.v->>3 AS t, (e.v->>4)::smallint AS s, e.v->5 AS mt, e.v->6 AS lb,
                    e.v->>7 AS src, (e.v->>8)::timestamptz AS ot, e.v->>9 AS st, e.ord
               FROM jsonb_array_elements(p_alerts) WITH ORDINALITY AS e(v, ord)
              ORDER BY e.ord),
         claimed AS (
             INSERT INTO alert_request_ids (request_id, alert_id, observe_time)
             SELECT r, id, ot FROM input WHERE r IS NOT NULL ORDER BY ord
             ON CONFLICT (request_id) DO NOTHING
             RETURNING alert_id),
         alerts AS (
             INSERT INTO monitoring_alert_triggers
                 (id, request_id, request_hash, model_id, alert_type, severity, metrics, labels, source,
                  observe_time, state, rule_set_version)
             SELECT id, r, h, m, t, s, mt, lb, src, ot, st, p_version
               FROM input
              WHERE r IS NULL OR id IN (SELECT alert_id FROM claimed)
              ORDER BY ord
             RETURNING id, model_id, request_id, create_time)
    SELECT array_agg(a.id ORDER BY a.id), array_agg(a.model_id ORDER BY a.id),
           array_agg(a.request_id ORDER BY a.id), array_agg(a.create_time ORDER BY a.id)
      INTO v_ids, v_models, v_request_ids, v_times
      FROM alerts a;
    IF coalesce(cardinality(v_ids), 0) <> jsonb_array_length(p_alerts) THEN
        RAISE EXCEPTION 'a request_id of the batch is stored already' USING ERRCODE = 'CLD02';
    END IF;
    -- Ids are drawn in input order, so v_ids[n] is the alert at position n - 1.

    -- Statements with nothing to write are skipped: each one costs a plan lookup and an executor start.
    IF cardinality(p_job_alert) > 0 THEN
        WITH new_jobs AS (
                 INSERT INTO retrain_jobs (model_id, mode, priority, reason, trigger_alert_id, trigger_rule,
                                           max_attempts, timeout_s, coalesced_triggers)
                 SELECT v_models[x.a + 1], x.mode, x.priority, 'alert ' || v_ids[x.a + 1] || x.reason,
                        v_ids[x.a + 1], x.rule, coalesce(p_max_attempts, 3), p_timeout_s, x.n
                   FROM unnest(p_job_alert, p_job_mode, p_job_priority, p_job_reason, p_job_rule, p_job_coalesced)
                        WITH ORDINALITY AS x(a, mode, priority, reason, rule, n, ord)
                  ORDER BY x.ord
                 ON CONFLICT (model_id) WHERE state IN ('QUEUED', 'RUNNING') DO NOTHING
                 RETURNING id, trigger_alert_id)
        SELECT array_agg(j.id), array_agg(array_position(v_ids, j.trigger_alert_id) - 1)
          INTO v_job_ids, v_job_alerts
          FROM new_jobs j;
        IF coalesce(cardinality(v_job_ids), 0) <> coalesce(cardinality(p_job_alert), 0) THEN
            -- An active job appeared without the decision lock (a manual SubmitRetrain).
            RAISE EXCEPTION 'a model has an active job the decisions did not see' USING ERRCODE = 'CLD01';
        END IF;
        PERFORM pg_notify(p_channel, j::text) FROM unnest(v_job_ids) AS j;
    END IF;

    IF cardinality(p_join_id) > 0 THEN
        UPDATE retrain_jobs AS j SET
               priority = greatest(j.priority, x.priority),
               mode = CASE WHEN j.state = 'QUEUED' AND x.mode = 'FULL' THEN 'FULL' ELSE j.mode END,
               coalesced_triggers = j.coalesced_triggers + x.n,
               update_time = now()
          FROM unnest(p_join_id, p_join_mode, p_join_priority, p_join_count) AS x(id, mode, priority, n)
         WHERE j.id = x.id AND j.state IN ('QUEUED', 'RUNNING');
        GET DIAGNOSTICS v_joined = ROW_COUNT;
        IF v_joined <> coalesce(cardinality(p_join_id), 0) THEN
            -- A job ended without the decision lock (a worker finished it).
            RAISE EXCEPTION 'a job the decisions joined has ended' USING ERRCODE = 'CLD01';
        END IF;
    END IF;

    RETURN QUERY SELECT 'alert'::text, a.id, a.r, a.t, (a.n - 1)::integer
                   FROM unnest(v_ids, v_request_ids, v_times) WITH ORDINALITY AS a(id, r, t, n);
    RETURN QUERY SELECT 'job'::text, j.id, NULL::text, NULL::timestamptz, j.a
                   FROM unnest(v_job_ids, v_job_alerts) AS j(id, a);
    IF cardinality(p_act_alert) = 0 THEN
        RETURN;
    END IF;

    RETURN QUERY
    WITH input AS (
             SELECT nextval('closed_loop_actions_ids') AS id, x.*,
                    coalesce(x.job, (SELECT j.id FROM unnest(v_job_ids, v_job_alerts) AS j(id, a)
                                      WHERE j.a = x.new_job)) AS job_id
               FROM unnest(p_act_alert, p_act_rule, p_act_kind, p_act_mode, p_act_priority, p_act_decision,
                           p_act_reason, p_act_job, p_act_new_job, p_act_cooldown_until, p_act_starts)
                    WITH ORDINALITY AS x(a, rule, kind, mode, priority, decision, reason, job, new_job, cu,
                                         starts, ord)
              ORDER BY x.ord),
         linked AS (
             UPDATE retrain_jobs AS j SET trigger_action_id = input.id, update_time = now()
               FROM input WHERE input.starts AND j.id = input.job_id),
         written AS (
             INSERT INTO closed_loop_actions
                  (id, alert_id, model_id, rule, rule_set_version, kind, mode, priority, decision, reason,
                   job_id, cooldown_until)
             SELECT i.id, v_ids[i.a + 1], v_models[i.a + 1], i.rule, p_version, i.kind, i.mode, i.priority,
                    i.decision,
                    coalesce(i.reason, 'joined active job ' || i.job_id || ' of model ' || v_models[i.a + 1]),
                    i.job_id, i.cu
               FROM input i ORDER BY i.ord
             RETURNING id, create_time)
    SELECT 'action'::text, w.id, NULL::text, w.create_time, (i.ord - 1)::integer
      FROM written w JOIN input i ON i.id = w.id;
END $$;
