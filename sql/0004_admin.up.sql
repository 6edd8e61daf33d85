-- Admin bearer tokens (hashed) and the audit log.
CREATE TABLE admin_token (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name         text NOT NULL CONSTRAINT admin_token_name_len CHECK (char_length(name) BETWEEN 1 AND 200),
    role         text NOT NULL CONSTRAINT admin_token_role_check CHECK (role IN ('admin', 'viewer')),
    token_sha256 text NOT NULL CONSTRAINT admin_token_sha256_check CHECK (token_sha256 ~ '^[0-9a-f]{64}$'),
    created_at   timestamptz NOT NULL DEFAULT now(),
    last_used_at timestamptz,
    revoked_at   timestamptz,
    CONSTRAINT admin_token_sha256_unique UNIQUE (token_sha256)
);

CREATE TABLE audit_log (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    created_at    timestamptz NOT NULL DEFAULT now(),
    actor         text NOT NULL,
    action        text NOT NULL,
    experiment_id uuid,
    variant_id    bigint,
    version_id    bigint,
    before        jsonb,
    after         jsonb
);
CREATE INDEX audit_log_experiment ON audit_log (experiment_id, id DESC);

CREATE FUNCTION audit_log_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only' USING ERRCODE = 'restrict_violation';
END;
$$;
CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();
