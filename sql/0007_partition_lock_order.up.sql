-- Creating a request partition adds a foreign key to usage, which locks usage
-- (SHARE ROW EXCLUSIVE) after the partitioned parent. Writers lock usage first
-- (they insert the usage row, then the request row), so the two orders could
-- deadlock. Take the usage lock first, as writers do.
CREATE OR REPLACE FUNCTION abgate_ensure_request_partition(ts timestamptz) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    month_start date := date_trunc('month', ts AT TIME ZONE 'UTC')::date;
    part_name   text := 'model_experiment_request_' || to_char(month_start, 'YYYY_MM');
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('abgate_ensure_request_partition'));
    IF to_regclass(part_name) IS NULL THEN
        LOCK TABLE usage IN SHARE ROW EXCLUSIVE MODE;
        EXECUTE format(
            'CREATE TABLE %I PARTITION OF model_experiment_request FOR VALUES FROM (%L) TO (%L)',
            part_name,
            (month_start::timestamp AT TIME ZONE 'UTC'),
            ((month_start + interval '1 month')::timestamp AT TIME ZONE 'UTC'));
    END IF;
    RETURN part_name;
END;
$$;
