-- How many rewards each program has per rule, status, fraud flag and reversal owed, kept by
-- statement triggers on `rewards` in the same transaction, so the review queue's counts and
-- the API list's total are a few rows read instead of a count over every matching reward.
-- As with `customer_tallies`, each group is spread over 16 slots (chosen by the writing
-- connection) so concurrent writers do not queue on one row; only sums mean anything.
CREATE TABLE reward_tallies (
    program_id BIGINT NOT NULL,
    rule_id BIGINT NOT NULL,
    status TEXT NOT NULL,
    flagged BOOLEAN NOT NULL,
    owed BOOLEAN NOT NULL,
    slot SMALLINT NOT NULL CHECK (slot BETWEEN 0 AND 15),
    rewards BIGINT NOT NULL,
    PRIMARY KEY (program_id, rule_id, status, flagged, owed, slot)
);

-- A transition table exists only for the events that have it, so each event gets a
-- function of its own that names only its tables.
CREATE FUNCTION rewards_tallied_insert() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO reward_tallies AS t (program_id, rule_id, status, flagged, owed, slot, rewards)
    SELECT program_id, rule_id, status, flags <> '{}', reversal IS NOT DISTINCT FROM 'owed',
           pg_backend_pid() % 16, count(*)
    FROM new_rows GROUP BY 1, 2, 3, 4, 5 ORDER BY 1, 2, 3, 4, 5
    ON CONFLICT (program_id, rule_id, status, flagged, owed, slot)
    DO UPDATE SET rewards = t.rewards + EXCLUDED.rewards;
    RETURN NULL;
END
$$;

CREATE FUNCTION rewards_tallied_delete() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO reward_tallies AS t (program_id, rule_id, status, flagged, owed, slot, rewards)
    SELECT program_id, rule_id, status, flags <> '{}', reversal IS NOT DISTINCT FROM 'owed',
           pg_backend_pid() % 16, -count(*)
    FROM old_rows GROUP BY 1, 2, 3, 4, 5 ORDER BY 1, 2, 3, 4, 5
    ON CONFLICT (program_id, rule_id, status, flagged, owed, slot)
    DO UPDATE SET rewards = t.rewards + EXCLUDED.rewards;
    RETURN NULL;
END
$$;

CREATE FUNCTION rewards_tallied_truncate() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM reward_tallies;
    RETURN NULL;
END
$$;

-- An update moves a reward between groups only when one of the grouped columns changes.
CREATE FUNCTION rewards_tallied_update() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO reward_tallies AS t (program_id, rule_id, status, flagged, owed, slot, rewards)
    SELECT program_id, rule_id, status, flagged, owed, pg_backend_pid() % 16, sum(delta)
    FROM (
        SELECT program_id, rule_id, status, flags <> '{}' AS flagged,
               reversal IS NOT DISTINCT FROM 'owed' AS owed, 1 AS delta
        FROM new_rows
        UNION ALL
        SELECT program_id, rule_id, status, flags <> '{}', reversal IS NOT DISTINCT FROM 'owed', -1
        FROM old_rows
    ) changes
    GROUP BY 1, 2, 3, 4, 5
    HAVING sum(delta) <> 0
    ORDER BY 1, 2, 3, 4, 5
    ON CONFLICT (program_id, rule_id, status, flagged, owed, slot)
    DO UPDATE SET rewards = t.rewards + EXCLUDED.rewards;
    RETURN NULL;
END
$$;

CREATE TRIGGER rewards_tallied_insert AFTER INSERT ON rewards
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION rewards_tallied_insert();
CREATE TRIGGER rewards_tallied_update AFTER UPDATE ON rewards
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION rewards_tallied_update();
CREATE TRIGGER rewards_tallied_delete AFTER DELETE ON rewards
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION rewards_tallied_delete();
CREATE TRIGGER rewards_tallied_truncate AFTER TRUNCATE ON rewards
    FOR EACH STATEMENT EXECUTE FUNCTION rewards_tallied_truncate();

-- Rewards written before this step.
INSERT INTO reward_tallies (program_id, rule_id, status, flagged, owed, slot, rewards)
SELECT program_id, rule_id, status, flags <> '{}', reversal IS NOT DISTINCT FROM 'owed', 0, count(*)
FROM rewards GROUP BY 1, 2, 3, 4, 5;
