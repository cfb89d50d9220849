-- Customer lists stay quick at a million customers.
--
-- 1. Exact totals without counting rows. `customer_tallies` holds how many customers each
--    program has per status and referred/not referred, kept by triggers in the same
--    transaction as the rows they count, so a total is always exact. Each
--    group is spread over 16 slots (chosen by the writing connection) so that concurrent
--    signups do not all queue on one row; a total is the sum of at most 64 small rows.
--    A slot may go negative (a customer counted in one slot can leave from another); only
--    the sums mean anything.
CREATE TABLE customer_tallies (
    program_id BIGINT NOT NULL REFERENCES programs (id),
    status TEXT NOT NULL CHECK (status IN ('active', 'deleted')),
    referred BOOLEAN NOT NULL,
    slot SMALLINT NOT NULL CHECK (slot BETWEEN 0 AND 15),
    customers BIGINT NOT NULL,
    PRIMARY KEY (program_id, status, referred, slot)
);

-- Inserts and deletes: once per statement, from its transition table (a bulk import or
-- `referdesk seed` costs one upsert per group, not one per row).
CREATE FUNCTION customer_tallies_add() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- Groups are written in key order, so two statements never lock the same tally rows
    -- in opposite orders.
    IF TG_OP = 'INSERT' THEN
        INSERT INTO customer_tallies AS t (program_id, status, referred, slot, customers)
        SELECT program_id, status, referrer_id IS NOT NULL, pg_backend_pid() % 16, count(*)
        FROM new_rows GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
        ON CONFLICT (program_id, status, referred, slot)
        DO UPDATE SET customers = t.customers + EXCLUDED.customers;
    ELSE
        INSERT INTO customer_tallies AS t (program_id, status, referred, slot, customers)
        SELECT program_id, status, referrer_id IS NOT NULL, pg_backend_pid() % 16, -count(*)
        FROM old_rows GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
        ON CONFLICT (program_id, status, referred, slot)
        DO UPDATE SET customers = t.customers + EXCLUDED.customers;
    END IF;
    RETURN NULL;
END
$$;

-- Updates: only those that move a customer to another group (delete, restore, a first or
-- removed referrer) run anything; the many others (names, counts) skip the trigger in its
-- WHEN clause without calling it.
CREATE FUNCTION customer_tallies_move() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO customer_tallies AS t (program_id, status, referred, slot, customers)
    SELECT program_id, status, referred, pg_backend_pid() % 16, delta
    FROM (VALUES (OLD.program_id, OLD.status, OLD.referrer_id IS NOT NULL, -1),
                 (NEW.program_id, NEW.status, NEW.referrer_id IS NOT NULL, 1))
         AS moves (program_id, status, referred, delta)
    ORDER BY 1, 2, 3
    ON CONFLICT (program_id, status, referred, slot)
    DO UPDATE SET customers = t.customers + EXCLUDED.customers;
    RETURN NULL;
END
$$;

CREATE TRIGGER customer_tallies_insert AFTER INSERT ON customers
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION customer_tallies_add();
CREATE TRIGGER customer_tallies_delete AFTER DELETE ON customers
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION customer_tallies_add();
CREATE TRIGGER customer_tallies_update AFTER UPDATE OF program_id, status, referrer_id ON customers
    FOR EACH ROW
    WHEN (OLD.program_id IS DISTINCT FROM NEW.program_id
          OR OLD.status IS DISTINCT FROM NEW.status
          OR (OLD.referrer_id IS NULL) <> (NEW.referrer_id IS NULL))
    EXECUTE FUNCTION customer_tallies_move();

INSERT INTO customer_tallies (program_id, status, referred, slot, customers)
SELECT program_id, status, referrer_id IS NOT NULL, 0, count(*)
FROM customers GROUP BY 1, 2, 3;

-- 2. Covering indexes for the list's two most used orders. A page is found by reading
--    only index entries (an index-only scan that can also check the referred and approved
--    filters), and just the rows shown are fetched from the table, however deep the page.
DROP INDEX customers_list_idx;
CREATE INDEX customers_list_idx ON customers (program_id, status, created_at DESC, id DESC)
    INCLUDE (referrer_id, approved);
DROP INDEX customers_referrals_idx;
CREATE INDEX customers_referrals_idx ON customers (program_id, status, referrals_count DESC, id DESC)
    INCLUDE (referrer_id, approved);
-- The new list index covers everything the dashboard's customer pass read from this one
-- (program, status, creation time, referrer, approved); one index fewer to write on every
-- signup and every referral counted.
DROP INDEX customers_dashboard_idx;

-- 3. Search without reading trigram indexes where the term's shape allows it (see
--    `search_arms` in src/domain/customers/listing.rs, which must agree with these):
--    a term with an `@` inside is looked up by the email's local part, reversed, as a
--    prefix (an email holds "local@domain" when its local part ends with "local" and its
--    domain starts with "domain")...
CREATE INDEX customers_email_local_idx
    ON customers (program_id, reverse(split_part(lower(email), '@', 1)) text_pattern_ops)
    WHERE email IS NOT NULL;
--    ...and a term with a character plain names (ids) never hold can only be in the
--    names (ids) that hold one: these partial indexes list just those rows.
CREATE INDEX customers_unusual_name_idx ON customers (program_id)
    WHERE (coalesce(name, '') || coalesce(surname, '')) ~ '[^A-Za-z ''-]';
CREATE INDEX customers_unusual_id_idx ON customers (program_id)
    WHERE external_id ~ '[^A-Za-z0-9_-]';
--    Statistics on the name expression let the planner see how few names are unusual
--    (without them it guesses "almost all" and reads the trigram index instead).
CREATE STATISTICS customers_name_chars ON ((coalesce(name, '') || coalesce(surname, ''))) FROM customers;
ANALYZE customers;
