CREATE OR REPLACE FUNCTION rewards_tallied_insert() RETURNS trigger LANGUAGE plpgsql AS $$
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

CREATE OR REPLACE FUNCTION rewards_tallied_delete() RETURNS trigger LANGUAGE plpgsql AS $$
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

CREATE OR REPLACE FUNCTION rewards_tallied_update() RETURNS trigger LANGUAGE plpgsql AS $$
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

ALTER TABLE reward_tallies DROP COLUMN amount;
