-- One trigger call fewer per signup, and a link, ledger entry or retired key always
-- under its customer's program.
--
-- Profiled with pgbench on the benchmark database (a signup's two writing statements):
-- after-trigger work was a quarter of PostgreSQL's time — the PL/pgSQL statement triggers
-- and each foreign-key check (a query of its own). pgbench alone ran these signups up to
-- 10% faster with both changes below; the load test (BENCHMARKS.md) showed no difference
-- beyond its noise, so the reason to keep them is the stronger key and one trigger to
-- read instead of two.
--
-- 1. One statement trigger keeps both the list's tallies and the referral standings on
--    insert and on delete (two before: two PL/pgSQL calls and two transition tables per
--    statement). Same statements, same order, same transaction.
CREATE FUNCTION customers_counted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- Tally groups are written in key order, so two statements never lock the same tally
    -- rows in opposite orders.
    IF TG_OP = 'INSERT' THEN
        INSERT INTO customer_tallies AS t (program_id, status, referred, slot, customers, changes)
        SELECT program_id, status, referrer_id IS NOT NULL, pg_backend_pid() % 16, count(*), count(*)
        FROM new_rows GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
        ON CONFLICT (program_id, status, referred, slot)
        DO UPDATE SET customers = t.customers + EXCLUDED.customers,
                      changes = t.changes + EXCLUDED.changes;
        INSERT INTO referral_standings (customer_id, program_id, status, referrals_count, referrer_id, approved)
        SELECT id, program_id, status, referrals_count, referrer_id, approved FROM new_rows;
    ELSE
        INSERT INTO customer_tallies AS t (program_id, status, referred, slot, customers, changes)
        SELECT program_id, status, referrer_id IS NOT NULL, pg_backend_pid() % 16, -count(*), count(*)
        FROM old_rows GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
        ON CONFLICT (program_id, status, referred, slot)
        DO UPDATE SET customers = t.customers + EXCLUDED.customers,
                      changes = t.changes + EXCLUDED.changes;
        DELETE FROM referral_standings s USING old_rows o WHERE s.customer_id = o.id;
    END IF;
    RETURN NULL;
END
$$;

DROP TRIGGER customer_tallies_insert ON customers;
DROP TRIGGER customer_tallies_delete ON customers;
DROP TRIGGER referral_standings_insert ON customers;
DROP TRIGGER referral_standings_delete ON customers;
DROP FUNCTION customer_tallies_add();
DROP FUNCTION referral_standings_add();

CREATE TRIGGER customers_counted_insert AFTER INSERT ON customers
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION customers_counted();
CREATE TRIGGER customers_counted_delete AFTER DELETE ON customers
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION customers_counted();

-- 2. A row naming a customer names the customer's program too, and one key checks both:
--    (program_id, customer_id) must be a customer of that program — which also means the
--    program exists. Two checks per written row before (the program, then the customer),
--    and neither caught a link or a ledger entry filed under another program than its
--    customer's.
ALTER TABLE referral_links
    DROP CONSTRAINT referral_links_program_id_fkey,
    DROP CONSTRAINT referral_links_customer_id_fkey,
    ADD CONSTRAINT referral_links_customer_fkey
        FOREIGN KEY (program_id, customer_id) REFERENCES customers (program_id, id);
ALTER TABLE balance_transactions
    DROP CONSTRAINT balance_transactions_program_id_fkey,
    DROP CONSTRAINT balance_transactions_customer_id_fkey,
    ADD CONSTRAINT balance_transactions_customer_fkey
        FOREIGN KEY (program_id, customer_id) REFERENCES customers (program_id, id);
ALTER TABLE retired_keys
    DROP CONSTRAINT retired_keys_program_id_fkey,
    DROP CONSTRAINT retired_keys_customer_id_fkey,
    ADD CONSTRAINT retired_keys_customer_fkey
        FOREIGN KEY (program_id, customer_id) REFERENCES customers (program_id, id);
