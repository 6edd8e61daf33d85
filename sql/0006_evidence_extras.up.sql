-- Prompt evidence references, request browser index and the hourly stats rollup.

-- The remainder blob of a request's prompt evidence (abgate/prompt_store.py). NULL
-- until the prompt sink stored it; the system blob is keyed by system_prompt_sha256.
ALTER TABLE model_experiment_request ADD COLUMN body_blob_sha256 text
    CONSTRAINT model_experiment_request_body_blob_sha256_check
    CHECK (body_blob_sha256 ~ '^[0-9a-f]{64}$');

-- "Is this blob still referenced?" (wipe-user, retention garbage collection).
CREATE INDEX model_experiment_request_system_prompt
    ON model_experiment_request (system_prompt_sha256);
CREATE INDEX model_experiment_request_body_blob
    ON model_experiment_request (body_blob_sha256) WHERE body_blob_sha256 IS NOT NULL;
-- Request browser: newest first, keyset-paginated on (created_at, usage_id).
CREATE INDEX model_experiment_request_browse
    ON model_experiment_request (created_at, usage_id);

-- Stats rollup, one row per (variant version, subject kind, UTC hour), maintained
-- by the triggers below in the writer's own transaction, so it is always exactly
-- the sum of the rows it summarises. Stats read it instead of the raw rows.
CREATE TABLE request_stats_hourly (
    variant_version_id       bigint NOT NULL,
    allocation_subject       text NOT NULL,
    hour                     timestamptz NOT NULL,
    requests                 bigint NOT NULL DEFAULT 0,
    errors                   bigint NOT NULL DEFAULT 0,
    input_tokens             bigint NOT NULL DEFAULT 0,
    output_tokens            bigint NOT NULL DEFAULT 0,
    market_cost_microdollars bigint NOT NULL DEFAULT 0,
    -- client request ids counted in the hour they were first recorded for the version
    client_request_ids       bigint NOT NULL DEFAULT 0,
    feedback_up              bigint NOT NULL DEFAULT 0,
    feedback_down            bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (variant_version_id, allocation_subject, hour)
);

-- Latency and time-to-first-token histograms at the same grain; bucket numbers
-- come from abgate_stats_bucket (mirrored by admin/stats.py).
CREATE TABLE request_latency_hourly (
    variant_version_id bigint NOT NULL,
    allocation_subject text NOT NULL,
    hour               timestamptz NOT NULL,
    bucket             smallint NOT NULL,
    latency_count      bigint NOT NULL DEFAULT 0,
    ttft_count         bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (variant_version_id, allocation_subject, hour, bucket)
);

-- Each subject once per version, with the UTC hours it made requests in (hours
-- since the epoch; a multirange keeps runs of hours compact). Unique subjects of
-- any hour-aligned window: the rows whose hours overlap it.
CREATE TABLE request_subject_seen (
    variant_version_id bigint NOT NULL,
    allocation_subject text NOT NULL,
    subject_value      text NOT NULL,
    hours              int4multirange NOT NULL,
    PRIMARY KEY (variant_version_id, allocation_subject, subject_value)
);

-- Each (client request id, subject) once per version, with the hour it was first
-- recorded: the denominator of the thumbs-up rate and the join key of feedback.
CREATE TABLE request_client_request_seen (
    client_request_id  text NOT NULL,
    allocation_subject text NOT NULL,
    subject_value      text NOT NULL,
    variant_version_id bigint NOT NULL,
    first_hour         timestamptz NOT NULL,
    PRIMARY KEY (client_request_id, allocation_subject, subject_value, variant_version_id)
);

-- Histogram bucket of a duration in ms: 0-15 exact (buckets 0-15), then eight
-- buckets per doubling (each within 4.4% of its geometric centre) up to 191 (17 h+).
CREATE FUNCTION abgate_stats_bucket(ms integer) RETURNS smallint
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE
        WHEN ms IS NULL THEN NULL
        WHEN ms < 16 THEN greatest(ms, 0)::smallint
        ELSE least(16 + floor(8 * ln(ms / 16.0) / ln(2.0))::integer, 191)::smallint
    END
$$;

-- Hours since the epoch of a timestamp's UTC hour: the unit of request_subject_seen.hours.
CREATE FUNCTION abgate_epoch_hour(ts timestamptz) RETURNS integer
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT floor(extract(epoch FROM ts) / 3600)::integer
$$;

-- Serialises the rollup's view of a client request id between the request
-- trigger and the feedback trigger (feedback may be written before its request).
-- 64 stripes: a batch takes at most 64 advisory locks, whatever its size.
CREATE FUNCTION abgate_client_request_lock_key(client_request_id text) RETURNS bigint
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT 4799100000 + (hashtext(client_request_id) & 63)
$$;

CREATE FUNCTION abgate_request_rollup() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    -- Locks first, in key order, before any rollup row is touched (no deadlocks).
    PERFORM pg_advisory_xact_lock(k) FROM (
        SELECT DISTINCT abgate_client_request_lock_key(client_request_id) AS k
        FROM new_rows WHERE client_request_id IS NOT NULL ORDER BY 1) AS keys;

    WITH fresh AS (
        INSERT INTO request_client_request_seen AS c
            (client_request_id, allocation_subject, subject_value, variant_version_id, first_hour)
        SELECT client_request_id, allocation_subject, subject_value, variant_version_id,
               min(date_trunc('hour', created_at, 'UTC'))
        FROM new_rows WHERE client_request_id IS NOT NULL
        GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4
        ON CONFLICT DO NOTHING
        RETURNING c.*
    ), deltas AS (
        SELECT n.variant_version_id, n.allocation_subject,
               date_trunc('hour', n.created_at, 'UTC') AS hour,
               1 AS requests, u.has_error::integer AS errors, u.input_tokens, u.output_tokens,
               u.market_cost_microdollars AS cost, 0 AS crids, 0 AS up, 0 AS down
        FROM new_rows n JOIN usage u ON u.id = n.usage_id
        UNION ALL
        SELECT f.variant_version_id, f.allocation_subject, f.first_hour, 0, 0, 0, 0, 0, 1,
               (SELECT count(*) FROM feedback b WHERE b.rating = 1
                  AND (b.client_request_id, b.allocation_subject, b.subject_value)
                    = (f.client_request_id, f.allocation_subject, f.subject_value)),
               (SELECT count(*) FROM feedback b WHERE b.rating = -1
                  AND (b.client_request_id, b.allocation_subject, b.subject_value)
                    = (f.client_request_id, f.allocation_subject, f.subject_value))
        FROM fresh f
    )
    INSERT INTO request_stats_hourly AS s
        (variant_version_id, allocation_subject, hour, requests, errors, input_tokens,
         output_tokens, market_cost_microdollars, client_request_ids, feedback_up,
         feedback_down)
    SELECT variant_version_id, allocation_subject, hour, sum(requests), sum(errors),
           sum(input_tokens), sum(output_tokens), sum(cost), sum(crids), sum(up), sum(down)
    FROM deltas GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
    ON CONFLICT (variant_version_id, allocation_subject, hour) DO UPDATE SET
        requests = s.requests + EXCLUDED.requests,
        errors = s.errors + EXCLUDED.errors,
        input_tokens = s.input_tokens + EXCLUDED.input_tokens,
        output_tokens = s.output_tokens + EXCLUDED.output_tokens,
        market_cost_microdollars = s.market_cost_microdollars + EXCLUDED.market_cost_microdollars,
        client_request_ids = s.client_request_ids + EXCLUDED.client_request_ids,
        feedback_up = s.feedback_up + EXCLUDED.feedback_up,
        feedback_down = s.feedback_down + EXCLUDED.feedback_down;

    INSERT INTO request_latency_hourly AS h
        (variant_version_id, allocation_subject, hour, bucket, latency_count, ttft_count)
    SELECT variant_version_id, allocation_subject, hour, bucket, sum(lat), sum(ttft)
    FROM (
        SELECT n.variant_version_id, n.allocation_subject,
               date_trunc('hour', n.created_at, 'UTC') AS hour,
               abgate_stats_bucket(u.latency_ms) AS bucket, 1 AS lat, 0 AS ttft
        FROM new_rows n JOIN usage u ON u.id = n.usage_id
        UNION ALL
        SELECT n.variant_version_id, n.allocation_subject,
               date_trunc('hour', n.created_at, 'UTC'), abgate_stats_bucket(u.ttft_ms), 0, 1
        FROM new_rows n JOIN usage u ON u.id = n.usage_id
        WHERE u.ttft_ms IS NOT NULL
    ) AS samples
    GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4
    ON CONFLICT (variant_version_id, allocation_subject, hour, bucket) DO UPDATE SET
        latency_count = h.latency_count + EXCLUDED.latency_count,
        ttft_count = h.ttft_count + EXCLUDED.ttft_count;

    INSERT INTO request_subject_seen AS p
        (variant_version_id, allocation_subject, subject_value, hours)
    SELECT variant_version_id, allocation_subject, subject_value,
           range_agg(int4range(abgate_epoch_hour(created_at), abgate_epoch_hour(created_at) + 1))
    FROM new_rows GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
    ON CONFLICT (variant_version_id, allocation_subject, subject_value) DO UPDATE
        SET hours = p.hours + EXCLUDED.hours
        WHERE NOT p.hours @> EXCLUDED.hours;
    RETURN NULL;
END;
$$;

-- Recomputes the whole rollup from the raw rows: run by this migration for rows
-- recorded before it, and available to operators as a repair.
CREATE FUNCTION abgate_rebuild_stats_rollup() RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    -- Writers wait while the rollup is rebuilt, so no change is counted twice or lost.
    LOCK TABLE model_experiment_request, usage, feedback IN SHARE MODE;
    TRUNCATE request_stats_hourly, request_latency_hourly, request_subject_seen,
             request_client_request_seen;

    INSERT INTO request_client_request_seen
        (client_request_id, allocation_subject, subject_value, variant_version_id, first_hour)
    SELECT client_request_id, allocation_subject, subject_value, variant_version_id,
           min(date_trunc('hour', created_at, 'UTC'))
    FROM model_experiment_request WHERE client_request_id IS NOT NULL
    GROUP BY 1, 2, 3, 4;

    INSERT INTO request_stats_hourly
        (variant_version_id, allocation_subject, hour, requests, errors, input_tokens,
         output_tokens, market_cost_microdollars, client_request_ids, feedback_up,
         feedback_down)
    SELECT variant_version_id, allocation_subject, hour, sum(requests), sum(errors),
           sum(input_tokens), sum(output_tokens), sum(cost), sum(crids), sum(up), sum(down)
    FROM (
        SELECT n.variant_version_id, n.allocation_subject,
               date_trunc('hour', n.created_at, 'UTC') AS hour,
               1 AS requests, u.has_error::integer AS errors, u.input_tokens, u.output_tokens,
               u.market_cost_microdollars AS cost, 0 AS crids, 0 AS up, 0 AS down
        FROM model_experiment_request n JOIN usage u ON u.id = n.usage_id
        UNION ALL
        SELECT c.variant_version_id, c.allocation_subject, c.first_hour, 0, 0, 0, 0, 0, 1,
               coalesce((f.rating = 1)::integer, 0), coalesce((f.rating = -1)::integer, 0)
        FROM request_client_request_seen c
        LEFT JOIN feedback f ON (f.client_request_id, f.allocation_subject, f.subject_value)
                              = (c.client_request_id, c.allocation_subject, c.subject_value)
    ) AS deltas
    GROUP BY 1, 2, 3;

    INSERT INTO request_latency_hourly
        (variant_version_id, allocation_subject, hour, bucket, latency_count, ttft_count)
    SELECT variant_version_id, allocation_subject, hour, bucket, sum(lat), sum(ttft)
    FROM (
        SELECT n.variant_version_id, n.allocation_subject,
               date_trunc('hour', n.created_at, 'UTC') AS hour,
               abgate_stats_bucket(u.latency_ms) AS bucket, 1 AS lat, 0 AS ttft
        FROM model_experiment_request n JOIN usage u ON u.id = n.usage_id
        UNION ALL
        SELECT n.variant_version_id, n.allocation_subject,
               date_trunc('hour', n.created_at, 'UTC'), abgate_stats_bucket(u.ttft_ms), 0, 1
        FROM model_experiment_request n JOIN usage u ON u.id = n.usage_id
        WHERE u.ttft_ms IS NOT NULL
    ) AS samples
    GROUP BY 1, 2, 3, 4;

    INSERT INTO request_subject_seen (variant_version_id, allocation_subject, subject_value, hours)
    SELECT variant_version_id, allocation_subject, subject_value,
           range_agg(int4range(abgate_epoch_hour(created_at), abgate_epoch_hour(created_at) + 1))
    FROM model_experiment_request GROUP BY 1, 2, 3;
END;
$$;

SELECT abgate_rebuild_stats_rollup();

CREATE TRIGGER model_experiment_request_rollup
    AFTER INSERT ON model_experiment_request
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION abgate_request_rollup();

-- Market cost is priced after the rows are written (the recorder's sink): carry
-- its change into the rollup.
CREATE FUNCTION abgate_usage_cost_rollup() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO request_stats_hourly AS s
        (variant_version_id, allocation_subject, hour, market_cost_microdollars)
    SELECT m.variant_version_id, m.allocation_subject, date_trunc('hour', m.created_at, 'UTC'),
           sum(n.market_cost_microdollars - o.market_cost_microdollars)
    FROM new_rows n
    JOIN old_rows o ON o.id = n.id
    JOIN model_experiment_request m ON m.usage_id = n.id AND m.created_at = n.created_at
    WHERE n.market_cost_microdollars <> o.market_cost_microdollars
    GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
    ON CONFLICT (variant_version_id, allocation_subject, hour) DO UPDATE SET
        market_cost_microdollars = s.market_cost_microdollars + EXCLUDED.market_cost_microdollars;
    RETURN NULL;
END;
$$;

CREATE TRIGGER usage_cost_rollup
    AFTER UPDATE ON usage
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION abgate_usage_cost_rollup();

-- Feedback changes (insert, new rating, delete) move the up/down counts of the
-- versions that served that client request id for that subject.
CREATE FUNCTION abgate_feedback_rollup() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    crid    text := CASE WHEN TG_OP = 'DELETE' THEN OLD.client_request_id ELSE NEW.client_request_id END;
    kind    text := CASE WHEN TG_OP = 'DELETE' THEN OLD.allocation_subject ELSE NEW.allocation_subject END;
    subject text := CASE WHEN TG_OP = 'DELETE' THEN OLD.subject_value ELSE NEW.subject_value END;
    up      integer := 0;
    down    integer := 0;
BEGIN
    IF TG_OP <> 'INSERT' THEN
        up := up - (OLD.rating = 1)::integer;
        down := down - (OLD.rating = -1)::integer;
    END IF;
    IF TG_OP <> 'DELETE' THEN
        up := up + (NEW.rating = 1)::integer;
        down := down + (NEW.rating = -1)::integer;
    END IF;
    IF up = 0 AND down = 0 THEN
        RETURN NULL;
    END IF;
    PERFORM pg_advisory_xact_lock(abgate_client_request_lock_key(crid));
    INSERT INTO request_stats_hourly AS s
        (variant_version_id, allocation_subject, hour, feedback_up, feedback_down)
    SELECT c.variant_version_id, c.allocation_subject, c.first_hour, up, down
    FROM request_client_request_seen c
    WHERE c.client_request_id = crid AND c.allocation_subject = kind AND c.subject_value = subject
    ORDER BY 1, 2, 3
    ON CONFLICT (variant_version_id, allocation_subject, hour) DO UPDATE SET
        feedback_up = s.feedback_up + EXCLUDED.feedback_up,
        feedback_down = s.feedback_down + EXCLUDED.feedback_down;
    RETURN NULL;
END;
$$;

CREATE TRIGGER feedback_rollup
    AFTER INSERT OR UPDATE OF rating OR DELETE ON feedback
    FOR EACH ROW EXECUTE FUNCTION abgate_feedback_rollup();
