ALTER TABLE api_tokens DROP COLUMN read_after_lsn;
