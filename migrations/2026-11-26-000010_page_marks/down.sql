DROP TRIGGER customer_tallies_reordered ON customers;
DROP FUNCTION customer_tallies_reordered();

CREATE OR REPLACE FUNCTION customer_tallies_add() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
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

CREATE OR REPLACE FUNCTION customer_tallies_move() RETURNS trigger LANGUAGE plpgsql AS $$
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

ALTER TABLE customer_tallies DROP COLUMN changes;
