-- Price history, feedback and content-addressed prompt blobs.
CREATE TABLE rate_card (
    id                          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    provider                    text NOT NULL CONSTRAINT rate_card_provider_len CHECK (char_length(provider) BETWEEN 1 AND 200),
    model                       text NOT NULL CONSTRAINT rate_card_model_len CHECK (char_length(model) BETWEEN 1 AND 200),
    effective_from              timestamptz NOT NULL,
    input_per_1m_microdollars       bigint NOT NULL CONSTRAINT rate_card_input_nonneg CHECK (input_per_1m_microdollars >= 0),
    output_per_1m_microdollars      bigint NOT NULL CONSTRAINT rate_card_output_nonneg CHECK (output_per_1m_microdollars >= 0),
    cache_read_per_1m_microdollars  bigint NOT NULL DEFAULT 0 CONSTRAINT rate_card_cache_read_nonneg CHECK (cache_read_per_1m_microdollars >= 0),
    cache_write_per_1m_microdollars bigint NOT NULL DEFAULT 0 CONSTRAINT rate_card_cache_write_nonneg CHECK (cache_write_per_1m_microdollars >= 0),
    created_by                  text NOT NULL DEFAULT '',
    created_at                  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT rate_card_version_unique UNIQUE (provider, model, effective_from)
);

CREATE FUNCTION rate_card_insert_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'rate_card is insert-only' USING ERRCODE = 'restrict_violation';
END;
$$;
-- Prices are history: a correction is a new row with a later effective_from.
CREATE TRIGGER rate_card_insert_only BEFORE UPDATE OR DELETE ON rate_card
    FOR EACH ROW EXECUTE FUNCTION rate_card_insert_only();

CREATE TABLE feedback (
    id                bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    client_request_id text NOT NULL
        CONSTRAINT feedback_client_request_id_len CHECK (char_length(client_request_id) BETWEEN 1 AND 500),
    allocation_subject text NOT NULL
        CONSTRAINT feedback_allocation_subject_check CHECK (allocation_subject IN ('user', 'machine', 'ip')),
    subject_value     text NOT NULL CONSTRAINT feedback_subject_value_len CHECK (char_length(subject_value) <= 500),
    rating            smallint NOT NULL CONSTRAINT feedback_rating_check CHECK (rating IN (1, -1)),
    comment           text CONSTRAINT feedback_comment_len CHECK (char_length(comment) <= 4000),
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT feedback_request_subject_unique UNIQUE (client_request_id, allocation_subject, subject_value)
);

CREATE TABLE prompt_blob (
    sha256     text PRIMARY KEY CONSTRAINT prompt_blob_sha256_check CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    content    bytea NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
