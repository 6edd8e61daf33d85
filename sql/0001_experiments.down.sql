DROP TABLE IF EXISTS routing_config_version;
DROP SEQUENCE IF EXISTS routing_config_version_seq;
DROP TABLE IF EXISTS model_experiment_variant_version;
DROP FUNCTION IF EXISTS model_experiment_variant_version_immutable();
DROP TABLE IF EXISTS model_experiment_variant;
DROP TABLE IF EXISTS model_experiment;
