-- The reward tallies keep the sum of the amounts too, so that a rule's budget check reads
-- the running total of its rewards that are not denied or voided (a few tally rows) rather
-- than summing every reward of the rule. Kept by the same statement triggers, in the same
-- transaction as the rewards they count: a denial or a void moves the amount out of the
-- counted statuses at once; a reversal leaves the reward credited, and counted.
ALTER TABLE reward_tallies ADD COLUMN amount NUMERIC NOT NULL DEFAULT 0;

CREATE OR REPLACE FUNCTION rewards_tallied_insert() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO reward_tallies AS t (program_id, rule_id, status, flagged, owed, slot, rewards, amount)
    SELECT program_id, rule_id, status, flags <> '{}', reversal IS NOT DISTINCT FROM 'owed',
           pg_backend_pid() % 16, count(*), sum(amount)
    FROM new_rows GROUP BY 1, 2, 3, 4, 5 ORDER BY 1, 2, 3, 4, 5
    ON CONFLICT (program_id, rule_id, status, flagged, owed, slot)
    DO UPDATE SET rewards = t.rewards + EXCLUDED.rewards, amount = t.amount + EXCLUDED.amount;
    RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION rewards_tallied_delete() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO reward_tallies AS t (program_id, rule_id, status, flagged, owed, slot, rewards, amount)
    SELECT program_id, rule_id, status, flags <> '{}', reversal IS NOT DISTINCT FROM 'owed',
           pg_backend_pid() % 16, -count(*), -sum(amount)
    FROM old_rows GROUP BY 1, 2, 3, 4, 5 ORDER BY 1, 2, 3, 4, 5
    ON CONFLICT (program_id, rule_id, status, flagged, owed, slot)
    DO UPDATE SET rewards = t.rewards + EXCLUDED.rewards, amount = t.amount + EXCLUDED.amount;
    RETURN NULL;
END
$$;

-- An update moves a reward between groups when a grouped column changes, and changes a
-- group's sum when its amount changes (a revived reward may be worth another amount).
CREATE OR REPLACE FUNCTION rewards_tallied_update() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO reward_tallies AS t (program_id, rule_id, status, flagged, owed, slot, rewards, amount)
    SELECT program_id, rule_id, status, flagged, owed, pg_backend_pid() % 16, sum(delta), sum(amount)
    FROM (
        SELECT program_id, rule_id, status, flags <> '{}' AS flagged,
               reversal IS NOT DISTINCT FROM 'owed' AS owed, 1 AS delta, amount
        FROM new_rows
        UNION ALL
        SELECT program_id, rule_id, status, flags <> '{}', reversal IS NOT DISTINCT FROM 'owed', -1, -amount
        FROM old_rows
    ) changes
    GROUP BY 1, 2, 3, 4, 5
    HAVING sum(delta) <> 0 OR sum(amount) <> 0
    ORDER BY 1, 2, 3, 4, 5
    ON CONFLICT (program_id, rule_id, status, flagged, owed, slot)
    DO UPDATE SET rewards = t.rewards + EXCLUDED.rewards, amount = t.amount + EXCLUDED.amount;
    RETURN NULL;
END
$$;

-- The amounts of the rewards written before this step (writers wait meanwhile). Only the
-- sums over slots mean anything, so they go to slot 0.
LOCK TABLE rewards IN SHARE MODE;
INSERT INTO reward_tallies AS t (program_id, rule_id, status, flagged, owed, slot, rewards, amount)
SELECT program_id, rule_id, status, flags <> '{}', reversal IS NOT DISTINCT FROM 'owed', 0, 0, sum(amount)
FROM rewards GROUP BY 1, 2, 3, 4, 5
ON CONFLICT (program_id, rule_id, status, flagged, owed, slot)
DO UPDATE SET amount = t.amount + EXCLUDED.amount;
