-- Every status, kind, role and purpose column lists its values in a CHECK, matching the
-- Rust enum that reads and writes it (`db::text_enum!`). `referral_standings` copies
-- `customers.status` through triggers and was the one without its list.
ALTER TABLE referral_standings
    ADD CONSTRAINT referral_standings_status_check CHECK (status IN ('active', 'deleted'));
