-- The notification outbox (issue 14). A row is written in the same transaction as what it reports
-- (a rule's decision, a job's end, an alert resolved), so a committed decision always has its
-- notification and a rolled-back one never does. A delivery worker in any server posts it,
-- at least once, with retries and backoff; after max_attempts it is DEAD until someone retries it.
--
-- payload is the event, independent of the target's kind: the worker renders it as a webhook body,
-- a Slack message or a PagerDuty event when it delivers, with the target's current URL and secret
-- (no secret is ever stored here).
CREATE TABLE notifications (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    target           text NOT NULL,
    event            text NOT NULL,
    idempotency_key  text NOT NULL UNIQUE,
    payload          jsonb NOT NULL,
    model_id         text,
    alert_id         bigint,
    job_id           bigint,
    rule             text,
    state            text NOT NULL DEFAULT 'PENDING' CHECK (state IN ('PENDING', 'DELIVERED', 'DEAD')),
    attempts         integer NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    last_status      integer,
    last_error       text NOT NULL DEFAULT '',
    create_time      timestamptz NOT NULL DEFAULT now(),
    update_time      timestamptz NOT NULL DEFAULT now(),
    delivered_time   timestamptz
);
-- The worker's claim: due pending rows, oldest due first.
CREATE INDEX notifications_due ON notifications (next_attempt_at) WHERE state = 'PENDING';
-- `notifications list [--state S]`, newest first.
CREATE INDEX notifications_state_id ON notifications (state, id DESC);
-- UpdateAlertState(RESOLVED) finds what was sent about the alert.
CREATE INDEX notifications_alert ON notifications (alert_id) WHERE alert_id IS NOT NULL;
