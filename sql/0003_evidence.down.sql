DROP TABLE IF EXISTS prompt_blob;
DROP TABLE IF EXISTS feedback;
DROP TABLE IF EXISTS rate_card;
DROP FUNCTION IF EXISTS rate_card_insert_only();
