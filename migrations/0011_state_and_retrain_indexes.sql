-- ListAlerts by state (issue 15): one partial index per state, (observe_time DESC, id DESC) WHERE
-- state = '<STATE>', instead of one (state, observe_time DESC, id DESC) index.
--
-- Why: with the composite index the planner had two ordered paths for "state = $1 ORDER BY
-- observe_time DESC, id DESC LIMIT n": the state index, or the time index filtering on state. It
-- costs the heap fetches of an index by the correlation of the index's FIRST column with the heap
-- order; state is uncorrelated (random fetches), observe_time is nearly perfectly correlated (alerts
-- arrive in time order), so for a common state (RESOLVED is most rows) it took the time index and
-- filtered. When the newest rows are all of other states (the last week is mostly OPEN) that read a
-- week of alerts to find the first RESOLVED one: 126-144 ms p99 at ten million alerts. A partial index
-- per state has the time index's order and correlation and holds only the rows of its state, so for
-- "state = '<STATE>'" (store/alerts.list_alerts writes the state as a literal so the planner can
-- prove the index's predicate) it is cheaper than the time index for every data shape.
--
-- Write cost is unchanged: a row is in exactly one of them, as it was in exactly one range of the
-- composite index (a state change moves it, as it did). Building them reads the alert table once per
-- state and holds off alert writes meanwhile (migrations run in a transaction, so not CONCURRENTLY):
-- on ten million alerts, plan a maintenance window of a few minutes.
CREATE INDEX monitoring_alert_triggers_open_time ON monitoring_alert_triggers (observe_time DESC, id DESC)
    WHERE state = 'OPEN';
CREATE INDEX monitoring_alert_triggers_actioned_time ON monitoring_alert_triggers (observe_time DESC, id DESC)
    WHERE state = 'ACTIONED';
CREATE INDEX monitoring_alert_triggers_suppressed_time ON monitoring_alert_triggers (observe_time DESC, id DESC)
    WHERE state = 'SUPPRESSED';
CREATE INDEX monitoring_alert_triggers_acknowledged_time ON monitoring_alert_triggers (observe_time DESC, id DESC)
    WHERE state = 'ACKNOWLEDGED';
CREATE INDEX monitoring_alert_triggers_resolved_time ON monitoring_alert_triggers (observe_time DESC, id DESC)
    WHERE state = 'RESOLVED';
DROP INDEX monitoring_alert_triggers_state_time;

-- Rule facts (store/models.py _FACTS): the time since a model's last successful retrain is one
-- backward probe of this index per model (an index-only scan once the jobs are vacuumed) instead of
-- reading every job of the model, so the facts cache can re-read all ten thousand models every few
-- seconds (loop/model_cache.py FactsRefresher: ~5 ms per thousand models at 100,000 jobs).
CREATE INDEX retrain_jobs_model_succeeded ON retrain_jobs (model_id, end_time DESC) WHERE state = 'SUCCEEDED';
