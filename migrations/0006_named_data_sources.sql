-- Training specs name the operator's data sources instead of carrying them (issue 10, points 1 and 3).
-- A stored spec's sql.dsn held a client-chosen DSN, password included, that GetModel returned to any
-- reader; an entry_point.entry_point named a module. Both fields are gone from TrainingSpec: drop
-- them from stored specs, so they read back (a model keeps failing its retrains with a clear error
-- until it is registered again with sql.source or entry_point.name).
UPDATE monitoring_retraining_integration
   SET training = training #- '{sql,dsn}'
 WHERE training ? 'sql' AND training -> 'sql' ? 'dsn';
UPDATE monitoring_retraining_integration
   SET training = training #- '{entry_point,entry_point}'
 WHERE training ? 'entry_point' AND training -> 'entry_point' ? 'entry_point';
