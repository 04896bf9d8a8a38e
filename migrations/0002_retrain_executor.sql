-- Retraining executor, version 2 of the schema.

-- Every SubmitRetrain request_id and the job it resolved to. A request that coalesced into an
-- already active job has no retrain_jobs row of its own, so retrain_jobs.request_id alone cannot
-- make its retry idempotent.
CREATE TABLE retrain_job_requests (
    request_id   text PRIMARY KEY,
    job_id       bigint REFERENCES retrain_jobs (id),
    create_time  timestamptz NOT NULL DEFAULT now()
);

-- The process running the current attempt (reported by the attempt itself), so an operator (or a
-- test) can tell which OS process holds a job.
ALTER TABLE retrain_jobs ADD COLUMN executor_pid integer;
ALTER TABLE retrain_jobs ADD COLUMN executor_host text;

-- The last value of the time column (or row number) a version was trained on, machine readable:
-- an incremental retrain continues from here.
ALTER TABLE model_versions ADD COLUMN data_end text;

-- ListJobs filtered by state, newest first.
CREATE INDEX retrain_jobs_state ON retrain_jobs (state, id DESC);
