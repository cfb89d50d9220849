DROP TRIGGER referral_standings_update ON customers;
DROP TRIGGER referral_standings_delete ON customers;
DROP TRIGGER referral_standings_insert ON customers;
DROP FUNCTION referral_standings_move();
DROP FUNCTION referral_standings_add();
ALTER TABLE customers RESET (fillfactor);
CREATE INDEX customers_referrals_idx ON customers (program_id, status, referrals_count DESC, id DESC)
    INCLUDE (referrer_id, approved);
CREATE INDEX customers_referred_referrals_idx
    ON customers (program_id, status, referrals_count DESC, id DESC)
    INCLUDE (referrer_id, approved)
    WHERE referrer_id IS NOT NULL;
DROP TABLE referral_standings;
