DROP INDEX IF EXISTS rewards_program_created_idx;
DROP INDEX IF EXISTS rewards_release_idx;
