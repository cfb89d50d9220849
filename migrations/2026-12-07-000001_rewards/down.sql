DROP TABLE rewards;
DROP TABLE reward_rules;
DROP TABLE transactions;
ALTER TABLE programs
    DROP COLUMN rewards_max_referrals_per_hour,
    DROP COLUMN rewards_support_approval_limit;
