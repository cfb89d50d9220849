-- Dropping the tables drops their indexes, statistics and triggers. The pg_trgm extension
-- stays: it was created only if missing, and other schemas may use it.
DROP TABLE maintenance_runs;
DROP TABLE audit_events;
DROP TABLE mail_outbox;
DROP TABLE invites;
DROP TABLE balance_transactions;
DROP TABLE api_tokens;
DROP TABLE referral_clicks;
DROP TABLE referral_links;
DROP TABLE retired_keys;
DROP TABLE referral_standings;
DROP TABLE customer_tallies;
DROP TABLE customers;
DROP TABLE login_failures;
DROP TABLE sessions;
DROP TABLE one_time_tokens;
DROP TABLE team_members;
DROP TABLE programs;

DROP FUNCTION customers_truncated();
DROP FUNCTION referral_standings_move();
DROP FUNCTION customer_tallies_reordered();
DROP FUNCTION customer_tallies_move();
DROP FUNCTION customers_counted();
DROP FUNCTION customer_name_is_unusual(TEXT, TEXT);
DROP FUNCTION customer_id_is_unusual(TEXT);
