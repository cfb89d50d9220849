DROP TRIGGER jobs_queued ON jobs;
