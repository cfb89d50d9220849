-- Customer lists stay quick at a million customers.
--
-- 1. Exact totals without counting rows. `customer_tallies` holds how many customers each
--    program has per status and referred/not referred, kept by statement-level triggers
--    in the same transaction as the rows they count, so a total is always exact. Each
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

CREATE FUNCTION customer_tallies_apply() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- Net change per group; groups are written in key order, so two statements never
    -- lock the same tally rows in opposite orders.
    IF TG_OP = 'INSERT' THEN
        INSERT INTO customer_tallies AS t (program_id, status, referred, slot, customers)
        SELECT program_id, status, referrer_id IS NOT NULL, pg_backend_pid() % 16, count(*)
        FROM new_rows GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
        ON CONFLICT (program_id, status, referred, slot)
        DO UPDATE SET customers = t.customers + EXCLUDED.customers;
    ELSIF TG_OP = 'UPDATE' THEN
        INSERT INTO customer_tallies AS t (program_id, status, referred, slot, customers)
        SELECT program_id, status, referred, pg_backend_pid() % 16, sum(delta)
        FROM (SELECT program_id, status, referrer_id IS NOT NULL AS referred, 1 AS delta FROM new_rows
              UNION ALL
              SELECT program_id, status, referrer_id IS NOT NULL, -1 FROM old_rows) AS changes
        GROUP BY 1, 2, 3 HAVING sum(delta) <> 0 ORDER BY 1, 2, 3
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

CREATE TRIGGER customer_tallies_insert AFTER INSERT ON customers
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION customer_tallies_apply();
CREATE TRIGGER customer_tallies_update AFTER UPDATE ON customers
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION customer_tallies_apply();
CREATE TRIGGER customer_tallies_delete AFTER DELETE ON customers
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION customer_tallies_apply();

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
