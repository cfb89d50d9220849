-- When each periodic task last ran, shared by every server process on this database: a
-- process claims the task's row (FOR UPDATE SKIP LOCKED) and runs only when nobody ran it
-- within the interval, so several processes prune once, not once each.
CREATE TABLE maintenance_runs (
    task TEXT PRIMARY KEY,
    last_run_at TIMESTAMPTZ
);
INSERT INTO maintenance_runs (task) VALUES ('prune');
