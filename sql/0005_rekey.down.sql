CREATE OR REPLACE FUNCTION model_experiment_variant_version_immutable() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'model_experiment_variant_version rows are immutable; insert a new version'
        USING ERRCODE = 'restrict_violation';
END;
$$;
