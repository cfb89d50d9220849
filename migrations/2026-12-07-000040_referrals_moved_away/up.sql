-- A referrer's timeline shows the referrals moved away from them: the referrer changes
-- whose "before" names them, looked up by program and key.
CREATE INDEX audit_events_referrer_left_idx
    ON audit_events (program_id, (before ->> 'referring_customer'), created_at DESC, id DESC)
    WHERE action = 'customer.change_referrer';
