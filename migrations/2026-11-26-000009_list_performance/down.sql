DROP STATISTICS customers_name_chars;
DROP INDEX customers_unusual_id_idx;
DROP INDEX customers_unusual_name_idx;
DROP INDEX customers_email_local_idx;
CREATE INDEX customers_dashboard_idx ON customers (program_id, status, created_at)
    INCLUDE (referrer_id, approved);
DROP INDEX customers_referrals_idx;
CREATE INDEX customers_referrals_idx ON customers (program_id, referrals_count DESC, id DESC);
DROP INDEX customers_list_idx;
CREATE INDEX customers_list_idx ON customers (program_id, status, created_at DESC, id DESC);
DROP TRIGGER customer_tallies_update ON customers;
DROP TRIGGER customer_tallies_delete ON customers;
DROP TRIGGER customer_tallies_insert ON customers;
DROP FUNCTION customer_tallies_move();
DROP FUNCTION customer_tallies_add();
DROP TABLE customer_tallies;
