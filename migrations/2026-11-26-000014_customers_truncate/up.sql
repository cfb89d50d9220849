-- The tallies (customer_tallies) and the referral order (referral_standings) are kept by
-- row and statement triggers, which a TRUNCATE does not fire: a hand-run
-- `TRUNCATE customers CASCADE` would leave them counting customers that are gone. This
-- trigger empties both with it. A tally's change count only ever goes up (page marks rely
-- on it), so the counts are bumped rather than reset.
CREATE FUNCTION customers_truncated() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    TRUNCATE referral_standings;
    UPDATE customer_tallies SET customers = 0, changes = changes + 1;
    RETURN NULL;
END
$$;
CREATE TRIGGER customers_truncated AFTER TRUNCATE ON customers
    FOR EACH STATEMENT EXECUTE FUNCTION customers_truncated();
