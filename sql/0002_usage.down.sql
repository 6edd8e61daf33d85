DROP FUNCTION IF EXISTS abgate_ensure_request_partition(timestamptz);
DROP TABLE IF EXISTS model_experiment_request;
DROP TABLE IF EXISTS usage;
