-- The audit trail: one row per operator action (RegisterModel, ApplyRules, RollbackModel,
-- SubmitRetrain, CancelJob, UpdateAlertState), refused ones included: which token, which method,
-- the request as JSON (secrets redacted, size-capped by the server), the outcome, when.
CREATE TABLE audit_records (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    time        timestamptz NOT NULL DEFAULT now(),
    token_name  text NOT NULL,
    method      text NOT NULL,
    request     jsonb NOT NULL,
    code        text NOT NULL,   -- the gRPC status name: OK, PERMISSION_DENIED, ...
    message     text NOT NULL DEFAULT ''
);
CREATE INDEX audit_records_newest ON audit_records (id DESC);
CREATE INDEX audit_records_time ON audit_records (time);

-- Append-only, enforced by the database rather than by the service's good behaviour: the service's
-- role may insert and read, but an UPDATE, DELETE or TRUNCATE fails whoever runs it. Removing the
-- triggers needs the table owner, and is itself a schema change an operator would see.
CREATE FUNCTION audit_records_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_records is append-only: % is refused', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;
CREATE TRIGGER audit_records_no_change BEFORE UPDATE OR DELETE ON audit_records
    FOR EACH ROW EXECUTE FUNCTION audit_records_append_only();
CREATE TRIGGER audit_records_no_truncate BEFORE TRUNCATE ON audit_records
    FOR EACH STATEMENT EXECUTE FUNCTION audit_records_append_only();
