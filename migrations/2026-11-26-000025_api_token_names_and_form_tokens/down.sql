ALTER TABLE api_tokens DROP COLUMN form_token;
DROP INDEX api_tokens_live_name;
