-- Kept balances: one row per customer and unit, kept by triggers on `balance_transactions`
-- in the same transaction as each booking, so a balance (and the ledger's length) is one
-- indexed row per unit however long the ledger grows. Set-based (once per statement, from
-- its transition table), so a bulk insert costs one upsert per customer and unit.
-- `ledger::book` locks the customer before it reads a balance, so bookings of one customer
-- are serialised and a debit's check sees every earlier booking.
CREATE TABLE customer_balances (
    customer_id BIGINT NOT NULL REFERENCES customers (id),
    amount_units TEXT NOT NULL,
    is_currency BOOLEAN NOT NULL,
    -- Credits minus debits.
    balance NUMERIC NOT NULL,
    -- Credits only (the API's stats).
    credited NUMERIC NOT NULL,
    -- Ledger rows in this unit (the ledger's length); a row whose entries are all gone is
    -- removed.
    entries BIGINT NOT NULL CHECK (entries >= 0),
    PRIMARY KEY (customer_id, amount_units, is_currency)
);

-- Inserts add to the balances, in key order so that two statements never lock the same
-- balance rows in opposite orders.
CREATE FUNCTION customer_balances_keep() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- Rows taken back first (an update takes back the old rows and adds the new ones).
    -- The application only ever appends; these keep balances exact after hand edits.
    IF TG_OP IN ('DELETE', 'UPDATE') THEN
        UPDATE customer_balances b
        SET balance = b.balance - g.balance, credited = b.credited - g.credited,
            entries = b.entries - g.entries
        FROM (SELECT customer_id, amount_units, is_currency,
                     sum(CASE WHEN kind = 'credit' THEN amount ELSE -amount END) AS balance,
                     coalesce(sum(amount) FILTER (WHERE kind = 'credit'), 0) AS credited,
                     count(*) AS entries
              FROM old_rows GROUP BY 1, 2, 3) g
        WHERE (b.customer_id, b.amount_units, b.is_currency) = (g.customer_id, g.amount_units, g.is_currency);
        DELETE FROM customer_balances b
        WHERE b.entries = 0
          AND (b.customer_id, b.amount_units, b.is_currency) IN
              (SELECT customer_id, amount_units, is_currency FROM old_rows);
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        INSERT INTO customer_balances AS b (customer_id, amount_units, is_currency, balance, credited, entries)
        SELECT customer_id, amount_units, is_currency,
               sum(CASE WHEN kind = 'credit' THEN amount ELSE -amount END),
               coalesce(sum(amount) FILTER (WHERE kind = 'credit'), 0),
               count(*)
        FROM new_rows GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
        ON CONFLICT (customer_id, amount_units, is_currency)
        DO UPDATE SET balance = b.balance + EXCLUDED.balance,
                      credited = b.credited + EXCLUDED.credited,
                      entries = b.entries + EXCLUDED.entries;
    END IF;
    RETURN NULL;
END
$$;

-- A TRUNCATE fires no row or statement trigger: without this, a hand-run TRUNCATE of the
-- ledger would leave balances of entries that are gone. DELETE, not TRUNCATE: a
-- `TRUNCATE customers CASCADE` is truncating the balances itself as this runs.
CREATE FUNCTION customer_balances_truncated() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM customer_balances;
    RETURN NULL;
END
$$;

-- (PostgreSQL allows transition tables only on single-event triggers: one trigger each.)
CREATE TRIGGER customer_balances_insert AFTER INSERT ON balance_transactions
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION customer_balances_keep();
CREATE TRIGGER customer_balances_update AFTER UPDATE ON balance_transactions
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION customer_balances_keep();
CREATE TRIGGER customer_balances_delete AFTER DELETE ON balance_transactions
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION customer_balances_keep();
CREATE TRIGGER customer_balances_truncated AFTER TRUNCATE ON balance_transactions
    FOR EACH STATEMENT EXECUTE FUNCTION customer_balances_truncated();

-- The balances of the ledger written so far. Bookings wait meanwhile (the lock), so none
-- is missed or counted twice.
LOCK TABLE balance_transactions IN SHARE MODE;
INSERT INTO customer_balances (customer_id, amount_units, is_currency, balance, credited, entries)
SELECT customer_id, amount_units, is_currency,
       sum(CASE WHEN kind = 'credit' THEN amount ELSE -amount END),
       coalesce(sum(amount) FILTER (WHERE kind = 'credit'), 0),
       count(*)
FROM balance_transactions GROUP BY 1, 2, 3;

-- The activity panel's 50 newest events of a customer, in the order shown (ties by id)
-- straight from the index, rather than every event of the customer sorted.
DROP INDEX audit_events_customer_idx;
CREATE INDEX audit_events_customer_idx ON audit_events (customer_id, created_at DESC, id DESC)
    WHERE customer_id IS NOT NULL;

-- When a customer's data was erased (the page's notice), from the few erasure events
-- rather than by reading every event of the customer.
CREATE INDEX audit_events_erasures_idx ON audit_events (customer_id, created_at)
    WHERE action = 'customer.erase';

ANALYZE customer_balances;
