-- The stats rollup trigger, rewritten for cost (same rollup rows as 0006's):
--
-- * usage rows are looked up by key, once per new row, in one CTE shared by
--   the rollups. 0006 joined usage three times, and with a stale estimate of
--   usage's size the planner hashed the whole table for each join: the
--   rollup's cost grew with the table (10 -> 60 µs a row over 67,000 rows in
--   1,000-row batches), where a lookup per row stays ~3 µs a row;
-- * the SQL helpers run per distinct duration and per distinct (subject, hour),
--   not per row (they were not inlined: one function call per row each);
-- * the four rollup statements are one statement.
CREATE OR REPLACE FUNCTION abgate_request_rollup() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    -- Locks first, in key order, before any rollup row is touched (no deadlocks).
    PERFORM pg_advisory_xact_lock(k) FROM (
        SELECT DISTINCT abgate_client_request_lock_key(client_request_id) AS k
        FROM new_rows WHERE client_request_id IS NOT NULL ORDER BY 1) AS keys;

    WITH joined AS MATERIALIZED (
        -- Each new row's usage row, looked up by key (LIMIT 1 keeps the lookup a
        -- per-row index scan: joined whole, a stale estimate of usage's size made
        -- the planner hash the whole table once per rollup).
        SELECT n.variant_version_id, n.allocation_subject,
               date_trunc('hour', n.created_at, 'UTC') AS hour,
               u.has_error, u.input_tokens, u.output_tokens, u.market_cost_microdollars,
               u.latency_ms, u.ttft_ms
        FROM new_rows n
        CROSS JOIN LATERAL (SELECT * FROM usage WHERE usage.id = n.usage_id LIMIT 1) AS u
    ), fresh AS (
        INSERT INTO request_client_request_seen AS c
            (client_request_id, allocation_subject, subject_value, variant_version_id, first_hour)
        SELECT client_request_id, allocation_subject, subject_value, variant_version_id,
               min(date_trunc('hour', created_at, 'UTC'))
        FROM new_rows WHERE client_request_id IS NOT NULL
        GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4
        ON CONFLICT DO NOTHING
        RETURNING c.*
    ), deltas AS (
        SELECT variant_version_id, allocation_subject, hour,
               count(*) AS requests, count(*) FILTER (WHERE has_error) AS errors,
               sum(input_tokens) AS input_tokens, sum(output_tokens) AS output_tokens,
               sum(market_cost_microdollars) AS cost, 0 AS crids, 0 AS up, 0 AS down
        FROM joined GROUP BY 1, 2, 3
        UNION ALL
        SELECT f.variant_version_id, f.allocation_subject, f.first_hour, 0, 0, 0, 0, 0, 1,
               (SELECT count(*) FROM feedback b WHERE b.rating = 1
                  AND (b.client_request_id, b.allocation_subject, b.subject_value)
                    = (f.client_request_id, f.allocation_subject, f.subject_value)),
               (SELECT count(*) FROM feedback b WHERE b.rating = -1
                  AND (b.client_request_id, b.allocation_subject, b.subject_value)
                    = (f.client_request_id, f.allocation_subject, f.subject_value))
        FROM fresh f
    ), stats AS (
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
            feedback_down = s.feedback_down + EXCLUDED.feedback_down
    ), latency AS (
        -- Bucketed per distinct duration, not per row.
        INSERT INTO request_latency_hourly AS h
            (variant_version_id, allocation_subject, hour, bucket, latency_count, ttft_count)
        SELECT variant_version_id, allocation_subject, hour, abgate_stats_bucket(ms),
               sum(lat), sum(ttft)
        FROM (
            SELECT variant_version_id, allocation_subject, hour, latency_ms AS ms,
                   count(*) AS lat, 0 AS ttft
            FROM joined GROUP BY 1, 2, 3, 4
            UNION ALL
            SELECT variant_version_id, allocation_subject, hour, ttft_ms, 0, count(*)
            FROM joined WHERE ttft_ms IS NOT NULL GROUP BY 1, 2, 3, 4
        ) AS samples
        GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4
        ON CONFLICT (variant_version_id, allocation_subject, hour, bucket) DO UPDATE SET
            latency_count = h.latency_count + EXCLUDED.latency_count,
            ttft_count = h.ttft_count + EXCLUDED.ttft_count
    )
    -- Hours per distinct (subject, UTC hour), not per row.
    INSERT INTO request_subject_seen AS p
        (variant_version_id, allocation_subject, subject_value, hours)
    SELECT variant_version_id, allocation_subject, subject_value,
           range_agg(int4range(abgate_epoch_hour(hour), abgate_epoch_hour(hour) + 1))
    FROM (SELECT DISTINCT variant_version_id, allocation_subject, subject_value,
                 date_trunc('hour', created_at, 'UTC') AS hour
          FROM new_rows) AS seen
    GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
    ON CONFLICT (variant_version_id, allocation_subject, subject_value) DO UPDATE
        SET hours = p.hours + EXCLUDED.hours
        WHERE NOT p.hours @> EXCLUDED.hours;
    RETURN NULL;
END;
$$;
