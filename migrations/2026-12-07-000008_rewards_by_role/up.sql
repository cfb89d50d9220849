-- The customer page's reward panels read a customer's rewards per role (earned as referrer,
-- as friend), newest first, and count them: with the role in the index, a top referrer's
-- thousands of referrer rewards are not read to find that none was earned as a friend.
CREATE INDEX rewards_beneficiary_role_idx ON rewards (beneficiary_id, role, created_at DESC, id DESC);
