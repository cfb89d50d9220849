ALTER TABLE retired_keys
    DROP CONSTRAINT retired_keys_customer_fkey,
    ADD CONSTRAINT retired_keys_program_id_fkey FOREIGN KEY (program_id) REFERENCES programs (id),
    ADD CONSTRAINT retired_keys_customer_id_fkey FOREIGN KEY (customer_id) REFERENCES customers (id);
ALTER TABLE balance_transactions
    DROP CONSTRAINT balance_transactions_customer_fkey,
    ADD CONSTRAINT balance_transactions_program_id_fkey FOREIGN KEY (program_id) REFERENCES programs (id),
    ADD CONSTRAINT balance_transactions_customer_id_fkey FOREIGN KEY (customer_id) REFERENCES customers (id);
ALTER TABLE referral_links
    DROP CONSTRAINT referral_links_customer_fkey,
    ADD CONSTRAINT referral_links_program_id_fkey FOREIGN KEY (program_id) REFERENCES programs (id),
    ADD CONSTRAINT referral_links_customer_id_fkey FOREIGN KEY (customer_id) REFERENCES customers (id);

DROP TRIGGER customers_counted_insert ON customers;
DROP TRIGGER customers_counted_delete ON customers;
DROP FUNCTION customers_counted();

CREATE FUNCTION customer_tallies_add() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- Groups are written in key order, so two statements never lock the same tally rows
    -- in opposite orders.
    IF TG_OP = 'INSERT' THEN
        INSERT INTO customer_tallies AS t (program_id, status, referred, slot, customers, changes)
        SELECT program_id, status, referrer_id IS NOT NULL, pg_backend_pid() % 16, count(*), count(*)
        FROM new_rows GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
        ON CONFLICT (program_id, status, referred, slot)
        DO UPDATE SET customers = t.customers + EXCLUDED.customers,
                      changes = t.changes + EXCLUDED.changes;
    ELSE
        INSERT INTO customer_tallies AS t (program_id, status, referred, slot, customers, changes)
        SELECT program_id, status, referrer_id IS NOT NULL, pg_backend_pid() % 16, -count(*), count(*)
        FROM old_rows GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
        ON CONFLICT (program_id, status, referred, slot)
        DO UPDATE SET customers = t.customers + EXCLUDED.customers,
                      changes = t.changes + EXCLUDED.changes;
    END IF;
    RETURN NULL;
END
$$;
CREATE FUNCTION referral_standings_add() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO referral_standings (customer_id, program_id, status, referrals_count, referrer_id, approved)
        SELECT id, program_id, status, referrals_count, referrer_id, approved FROM new_rows;
    ELSE
        DELETE FROM referral_standings s USING old_rows o WHERE s.customer_id = o.id;
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER customer_tallies_insert AFTER INSERT ON customers
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION customer_tallies_add();
CREATE TRIGGER customer_tallies_delete AFTER DELETE ON customers
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION customer_tallies_add();
CREATE TRIGGER referral_standings_insert AFTER INSERT ON customers
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION referral_standings_add();
CREATE TRIGGER referral_standings_delete AFTER DELETE ON customers
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION referral_standings_add();
