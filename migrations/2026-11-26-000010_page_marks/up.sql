-- Deep page numbers read from remembered positions ("page marks", see
-- src/domain/customers/page_marks.rs). A mark is only valid while no customer has joined
-- or left the list it was taken from, so every tally slot also counts the changes made to
-- it: the sum of `changes` over a list's groups goes up with every insert, delete, status
-- or referrer move (in the same transaction, by the same triggers), and never down.
ALTER TABLE customer_tallies ADD COLUMN changes BIGINT NOT NULL DEFAULT 0;

CREATE OR REPLACE FUNCTION customer_tallies_add() RETURNS trigger LANGUAGE plpgsql AS $$
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

CREATE OR REPLACE FUNCTION customer_tallies_move() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO customer_tallies AS t (program_id, status, referred, slot, customers, changes)
    SELECT program_id, status, referred, pg_backend_pid() % 16, delta, 1
    FROM (VALUES (OLD.program_id, OLD.status, OLD.referrer_id IS NOT NULL, -1),
                 (NEW.program_id, NEW.status, NEW.referrer_id IS NOT NULL, 1))
         AS moves (program_id, status, referred, delta)
    ORDER BY 1, 2, 3
    ON CONFLICT (program_id, status, referred, slot)
    DO UPDATE SET customers = t.customers + EXCLUDED.customers,
                  changes = t.changes + EXCLUDED.changes;
    RETURN NULL;
END
$$;

-- Customers' creation times are never changed by Referdesk; marks rely on it (the list by
-- creation date keeps its order while nobody joins or leaves it). Anything else that
-- changes one (a hand-run UPDATE) counts as a change too.
CREATE FUNCTION customer_tallies_reordered() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO customer_tallies AS t (program_id, status, referred, slot, customers, changes)
    VALUES (NEW.program_id, NEW.status, NEW.referrer_id IS NOT NULL, pg_backend_pid() % 16, 0, 1)
    ON CONFLICT (program_id, status, referred, slot) DO UPDATE SET changes = t.changes + 1;
    RETURN NULL;
END
$$;
CREATE TRIGGER customer_tallies_reordered AFTER UPDATE OF created_at ON customers
    FOR EACH ROW
    WHEN (OLD.created_at IS DISTINCT FROM NEW.created_at)
    EXECUTE FUNCTION customer_tallies_reordered();
