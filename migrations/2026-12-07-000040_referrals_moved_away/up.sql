-- A referrer's timeline shows the referrals moved away from them: the referrer changes
-- whose "before" names them, by program and key. Partial, so it holds only referrer
-- changes; the query writes the action into its SQL (`timeline::LeftReferrer`) so that a
-- cached statement's generic plan can use it.
CREATE INDEX audit_events_referrer_left_idx
    ON audit_events (program_id, (before ->> 'referring_customer'), created_at DESC, id DESC)
    WHERE action = 'customer.change_referrer';
