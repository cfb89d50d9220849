DROP TRIGGER rewards_tallied_insert ON rewards;
DROP TRIGGER rewards_tallied_update ON rewards;
DROP TRIGGER rewards_tallied_delete ON rewards;
DROP TRIGGER rewards_tallied_truncate ON rewards;
DROP FUNCTION rewards_tallied_insert();
DROP FUNCTION rewards_tallied_update();
DROP FUNCTION rewards_tallied_delete();
DROP FUNCTION rewards_tallied_truncate();
DROP TABLE reward_tallies;
