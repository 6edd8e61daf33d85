-- Version rows stay immutable, with one narrow exception for `abgate rekey`:
-- an UPDATE that changes nothing but encrypted_api_key, in a transaction that
-- has set `abgate.rekey = on` (SET LOCAL). Any other UPDATE is still refused.
CREATE OR REPLACE FUNCTION model_experiment_variant_version_immutable() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF current_setting('abgate.rekey', true) = 'on'
       AND (to_jsonb(NEW) - 'encrypted_api_key') = (to_jsonb(OLD) - 'encrypted_api_key') THEN
        RETURN NEW;
    END IF;
    RAISE EXCEPTION 'model_experiment_variant_version rows are immutable; insert a new version'
        USING ERRCODE = 'restrict_violation';
END;
$$;
