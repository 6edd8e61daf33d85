DROP TYPE abgate_request_record;
