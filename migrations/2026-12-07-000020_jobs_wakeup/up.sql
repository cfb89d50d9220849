-- Jobs: a new job queued for the background (the job threads of every process LISTEN, as
-- the other workers do; polling stays as a slower fallback for expired leases).
CREATE TRIGGER jobs_queued AFTER INSERT ON jobs
    REFERENCING NEW TABLE AS added
    FOR EACH STATEMENT EXECUTE FUNCTION referdesk_notify_added('referdesk_jobs');
