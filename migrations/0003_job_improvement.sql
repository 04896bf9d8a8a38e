-- The improvement of a job, stored once: challenger minus champion on the same holdout, signed so
-- that positive is better, exactly as the trainer computed it. Until now SQL recomputed it from the
-- metric's direction when it wrote the feedback row; readers now take the stored figure.
ALTER TABLE retrain_jobs ADD COLUMN improvement double precision;

-- Existing jobs get the figure the old SQL computed for them: the metrics where lower is better
-- were log_loss, rmse and mae (NULL without both scores, as for a first version).
UPDATE retrain_jobs
   SET improvement = CASE WHEN metric IN ('log_loss', 'rmse', 'mae') THEN champion_metric - challenger_metric
                          ELSE challenger_metric - champion_metric END
 WHERE champion_metric IS NOT NULL AND challenger_metric IS NOT NULL;
