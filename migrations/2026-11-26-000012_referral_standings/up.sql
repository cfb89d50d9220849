-- Counting a referral without rewriting every index of `customers`.
--
-- Every signup with a referrer adds one to the referrer's `referrals_count`. While that
-- count was part of two `customers` indexes (the list's referral order), PostgreSQL could
-- not update the row in place (a HOT update): it wrote a new entry for the referrer into
-- each of the table's indexes, four of them trigram indexes — as much index work as the
-- signup's own insert. The referral order now lives in `referral_standings`, one narrow row
-- per customer kept by triggers in the same transaction as the change (so it is always
-- exact), and no `customers` index holds the count any more. With room left on each page
-- (fillfactor), the referrer's row is then updated in place.
CREATE TABLE referral_standings (
    customer_id BIGINT PRIMARY KEY,
    program_id BIGINT NOT NULL,
    status TEXT NOT NULL,
    referrals_count INTEGER NOT NULL,
    referrer_id BIGINT,
    approved BOOLEAN NOT NULL
);

INSERT INTO referral_standings (customer_id, program_id, status, referrals_count, referrer_id, approved)
SELECT id, program_id, status, referrals_count, referrer_id, approved FROM customers;

-- The list sorted by referrals, read from the index alone (the same orders and filters as
-- the two `customers` indexes it replaces).
CREATE INDEX referral_standings_order_idx
    ON referral_standings (program_id, status, referrals_count DESC, customer_id DESC)
    INCLUDE (referrer_id, approved);
CREATE INDEX referral_standings_referred_idx
    ON referral_standings (program_id, status, referrals_count DESC, customer_id DESC)
    INCLUDE (referrer_id, approved)
    WHERE referrer_id IS NOT NULL;

DROP INDEX customers_referrals_idx;
DROP INDEX customers_referred_referrals_idx;

-- Room on each page for the updated row. Pages written before this migration fill up as
-- they are; `VACUUM FULL customers` (which locks the table) rewrites them with the room.
ALTER TABLE customers SET (fillfactor = 85);

-- Inserts and deletes: once per statement, from its transition table.
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
CREATE TRIGGER referral_standings_insert AFTER INSERT ON customers
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION referral_standings_add();
CREATE TRIGGER referral_standings_delete AFTER DELETE ON customers
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION referral_standings_add();

-- Updates: only those that change a standing column run anything (names, emails and the
-- like skip the trigger in its WHEN clause).
CREATE FUNCTION referral_standings_move() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE referral_standings
    SET customer_id = NEW.id, program_id = NEW.program_id, status = NEW.status,
        referrals_count = NEW.referrals_count, referrer_id = NEW.referrer_id,
        approved = NEW.approved
    WHERE customer_id = OLD.id;
    RETURN NULL;
END
$$;
CREATE TRIGGER referral_standings_update
    AFTER UPDATE OF id, program_id, status, referrals_count, referrer_id, approved ON customers
    FOR EACH ROW
    WHEN (OLD.id IS DISTINCT FROM NEW.id
          OR OLD.program_id IS DISTINCT FROM NEW.program_id
          OR OLD.status IS DISTINCT FROM NEW.status
          OR OLD.referrals_count IS DISTINCT FROM NEW.referrals_count
          OR OLD.referrer_id IS DISTINCT FROM NEW.referrer_id
          OR OLD.approved IS DISTINCT FROM NEW.approved)
    EXECUTE FUNCTION referral_standings_move();

ANALYZE referral_standings;
