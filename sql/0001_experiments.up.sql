-- Experiments, variants and immutable variant versions (the routing state).

CREATE TABLE model_experiment (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    public_model_id text NOT NULL
        CONSTRAINT model_experiment_public_model_id_len CHECK (char_length(public_model_id) BETWEEN 1 AND 200),
    name            text NOT NULL
        CONSTRAINT model_experiment_name_len CHECK (char_length(name) BETWEEN 1 AND 200),
    description     text NOT NULL DEFAULT ''
        CONSTRAINT model_experiment_description_len CHECK (char_length(description) <= 2000),
    status          text NOT NULL DEFAULT 'draft'
        CONSTRAINT model_experiment_status_check CHECK (status IN ('draft', 'active', 'paused', 'completed')),
    is_archived     boolean NOT NULL DEFAULT false,
    created_by      text NOT NULL DEFAULT '',
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    started_at      timestamptz,
    ended_at        timestamptz,
    CONSTRAINT model_experiment_active_not_archived CHECK (NOT (status = 'active' AND is_archived))
);

-- At most one live (active or paused) experiment per public id.
CREATE UNIQUE INDEX model_experiment_live_public_model_id
    ON model_experiment (public_model_id) WHERE status IN ('active', 'paused');
CREATE INDEX model_experiment_created_at ON model_experiment (created_at DESC, id);

CREATE TABLE model_experiment_variant (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    experiment_id uuid NOT NULL REFERENCES model_experiment (id) ON DELETE CASCADE,
    label         text NOT NULL
        CONSTRAINT model_experiment_variant_label_len CHECK (char_length(label) BETWEEN 1 AND 64),
    weight        integer NOT NULL
        CONSTRAINT model_experiment_variant_weight_positive CHECK (weight > 0),
    created_at    timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT model_experiment_variant_label_unique UNIQUE (experiment_id, label)
);

CREATE TABLE model_experiment_variant_version (
    id                bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    variant_id        bigint NOT NULL REFERENCES model_experiment_variant (id) ON DELETE CASCADE,
    upstream          jsonb NOT NULL
        CONSTRAINT model_experiment_variant_version_upstream_object CHECK (jsonb_typeof(upstream) = 'object'),
    -- {kid, iv, data, authTag}; never selected by a read that returns to a client.
    encrypted_api_key jsonb NOT NULL
        CONSTRAINT model_experiment_variant_version_key_shape CHECK (
            jsonb_typeof(encrypted_api_key) = 'object'
            AND encrypted_api_key ?& ARRAY['kid', 'iv', 'data', 'authTag']),
    effective_at      timestamptz NOT NULL DEFAULT now(),
    created_by        text NOT NULL DEFAULT '',
    created_at        timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX model_experiment_variant_version_current
    ON model_experiment_variant_version (variant_id, effective_at DESC, id DESC);

CREATE FUNCTION model_experiment_variant_version_immutable() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'model_experiment_variant_version rows are immutable; insert a new version'
        USING ERRCODE = 'restrict_violation';
END;
$$;
CREATE TRIGGER model_experiment_variant_version_no_update
    BEFORE UPDATE ON model_experiment_variant_version
    FOR EACH ROW EXECUTE FUNCTION model_experiment_variant_version_immutable();

-- Routing configuration versions (see abgate/routing_protocol.py).
CREATE SEQUENCE routing_config_version_seq;
CREATE TABLE routing_config_version (
    public_model_id text PRIMARY KEY,
    version         bigint NOT NULL,
    updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX routing_config_version_version ON routing_config_version (version);
