-- The dashboard's referral funnel counts clicks and credited rewards over a date range;
-- without these it would read every click of the program and every reward.
CREATE INDEX referral_clicks_created_idx ON referral_clicks (created_at);
CREATE INDEX rewards_credited_idx ON rewards (program_id, credited_at) WHERE status = 'credited';
