DROP INDEX rewards_credited_idx;
DROP INDEX referral_clicks_created_idx;
