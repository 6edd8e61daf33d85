-- One usage row per proxied experiment request, and its attribution row.
CREATE TABLE usage (
    id                  uuid PRIMARY KEY,
    created_at          timestamptz NOT NULL DEFAULT now(),
    user_id             text,
    request_kind        text NOT NULL,
    upstream_model      text NOT NULL,
    status_code         integer NOT NULL,
    has_error           boolean NOT NULL DEFAULT false,
    cancelled           boolean NOT NULL DEFAULT false,
    streamed            boolean NOT NULL DEFAULT false,
    input_tokens        bigint NOT NULL DEFAULT 0 CONSTRAINT usage_input_tokens_nonneg CHECK (input_tokens >= 0),
    output_tokens       bigint NOT NULL DEFAULT 0 CONSTRAINT usage_output_tokens_nonneg CHECK (output_tokens >= 0),
    cache_read_tokens   bigint NOT NULL DEFAULT 0 CONSTRAINT usage_cache_read_tokens_nonneg CHECK (cache_read_tokens >= 0),
    cache_write_tokens  bigint NOT NULL DEFAULT 0 CONSTRAINT usage_cache_write_tokens_nonneg CHECK (cache_write_tokens >= 0),
    latency_ms          integer NOT NULL DEFAULT 0,
    ttft_ms             integer,
    cost_microdollars   bigint NOT NULL DEFAULT 0,
    market_cost_microdollars bigint NOT NULL DEFAULT 0
);
CREATE INDEX usage_created_at ON usage (created_at);
CREATE INDEX usage_user_id ON usage (user_id) WHERE user_id IS NOT NULL;

CREATE TABLE model_experiment_request (
    usage_id             uuid NOT NULL,
    created_at           timestamptz NOT NULL,
    variant_version_id   bigint NOT NULL REFERENCES model_experiment_variant_version (id),
    allocation_subject   text NOT NULL
        CONSTRAINT model_experiment_request_allocation_subject_check
        CHECK (allocation_subject IN ('user', 'machine', 'ip')),
    subject_value        text NOT NULL DEFAULT ''
        CONSTRAINT model_experiment_request_subject_value_len CHECK (char_length(subject_value) <= 500),
    client_request_id    text
        CONSTRAINT model_experiment_request_client_request_id_len CHECK (char_length(client_request_id) <= 500),
    request_kind         text NOT NULL
        CONSTRAINT model_experiment_request_request_kind_check
        CHECK (request_kind IN ('chat_completions', 'responses', 'messages')),
    system_prompt_sha256 text NOT NULL
        CONSTRAINT model_experiment_request_system_prompt_sha256_check
        CHECK (system_prompt_sha256 ~ '^[0-9a-f]{64}$'
               OR system_prompt_sha256 IN ('__absent__', '__failed__', '__deleted__')),
    request_body_sha256  text NOT NULL
        CONSTRAINT model_experiment_request_request_body_sha256_check
        CHECK (request_body_sha256 ~ '^[0-9a-f]{64}$'
               OR request_body_sha256 IN ('__failed__', '__deleted__')),
    was_truncated        boolean NOT NULL DEFAULT false,
    PRIMARY KEY (usage_id, created_at),
    CONSTRAINT model_experiment_request_usage_fk
        FOREIGN KEY (usage_id) REFERENCES usage (id) ON DELETE CASCADE
) PARTITION BY RANGE (created_at);

CREATE INDEX model_experiment_request_version_time
    ON model_experiment_request (variant_version_id, created_at);
CREATE INDEX model_experiment_request_client_request_id
    ON model_experiment_request (client_request_id) WHERE client_request_id IS NOT NULL;

-- Creates the monthly partition holding ts; idempotent and race-safe.
CREATE FUNCTION abgate_ensure_request_partition(ts timestamptz) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    month_start date := date_trunc('month', ts AT TIME ZONE 'UTC')::date;
    part_name   text := 'model_experiment_request_' || to_char(month_start, 'YYYY_MM');
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('abgate_ensure_request_partition'));
    IF to_regclass(part_name) IS NULL THEN
        EXECUTE format(
            'CREATE TABLE %I PARTITION OF model_experiment_request FOR VALUES FROM (%L) TO (%L)',
            part_name,
            (month_start::timestamp AT TIME ZONE 'UTC'),
            ((month_start + interval '1 month')::timestamp AT TIME ZONE 'UTC'));
    END IF;
    RETURN part_name;
END;
$$;
