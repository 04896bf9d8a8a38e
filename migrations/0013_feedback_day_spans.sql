-- The observe_time span of each day's counted alerts (issue 15 point 3). A report's window rarely
-- starts or ends at midnight UTC: its partial first and last days were read alert by alert (at ten
-- million alerts, today's ~45,000 alerts grouped one by one on every report over every model). When
-- every alert a day's aggregates hold was observed inside the window, the day's rows count exactly
-- the window's alerts of that day (up to the watermark; the report reads the later ones from the
-- alert table as before), so the report reads the day from the aggregates. The roll-up widens a
-- day's span in the transaction that counts its alerts. A span may be wider than the counted alerts
-- (never narrower): the report then reads that day alert by alert, which is always correct.
CREATE TABLE feedback_day_spans (
    day            date PRIMARY KEY,
    first_observe  timestamptz NOT NULL,
    last_observe   timestamptz NOT NULL
);

-- Days counted before this migration: the span of every alert observed that day, counted or not
-- (wider than the counted ones, so safe; two probes of the observe_time index per day), or the whole
-- day when its alerts are gone (retention keeps the aggregates when it drops a month of alerts).
INSERT INTO feedback_day_spans (day, first_observe, last_observe)
SELECT d.day, coalesce(s.first_observe, d.day::timestamp AT TIME ZONE 'UTC'),
       coalesce(s.last_observe, (d.day + 1)::timestamp AT TIME ZONE 'UTC')
  FROM (SELECT day FROM feedback_daily_models UNION SELECT day FROM feedback_daily) d
 CROSS JOIN LATERAL (
       SELECT min(observe_time) AS first_observe, max(observe_time) AS last_observe
         FROM monitoring_alert_triggers
        WHERE observe_time >= d.day::timestamp AT TIME ZONE 'UTC'
          AND observe_time < (d.day + 1)::timestamp AT TIME ZONE 'UTC') s;
