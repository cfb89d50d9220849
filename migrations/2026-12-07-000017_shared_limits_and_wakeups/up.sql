-- Limits shared by every server process on the database, and wake-ups for their workers.

-- One counter per limit, key and window (the API's per-token minute, the per-address
-- count of unknown API tokens). UNLOGGED: written on most API calls, so no WAL for it; a
-- crash or a failover empties it, which only lets clients through sooner. Never read on
-- a replica (unlogged tables are not replicated). Past windows are pruned.
CREATE UNLOGGED TABLE rate_windows (
    scope TEXT NOT NULL CHECK (scope IN ('api_token', 'unknown_token')),
    key TEXT NOT NULL,
    window_start TIMESTAMPTZ NOT NULL,
    hits INTEGER NOT NULL CHECK (hits > 0),
    PRIMARY KEY (scope, key, window_start)
);
CREATE INDEX rate_windows_start_idx ON rate_windows (window_start);

-- Work queued for a background worker notifies its channel in the transaction that
-- queues it (a NOTIFY is delivered at commit, and never for a rollback). The workers of
-- every process LISTEN (`db::listener`); polling stays as a slower fallback.
CREATE FUNCTION referdesk_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify(TG_ARGV[0], '');
    RETURN NULL;
END $$;

-- For statement triggers whose new rows are the transition table `added`: a statement
-- that inserted nothing (an event no subscription wants) notifies nobody.
CREATE FUNCTION referdesk_notify_added() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM added) THEN
        PERFORM pg_notify(TG_ARGV[0], '');
    END IF;
    RETURN NULL;
END $$;

-- Mail: a new message, or one queued again by hand for now.
CREATE TRIGGER mail_outbox_queued AFTER INSERT ON mail_outbox
    REFERENCING NEW TABLE AS added
    FOR EACH STATEMENT EXECUTE FUNCTION referdesk_notify_added('referdesk_mail');
CREATE TRIGGER mail_outbox_requeued AFTER UPDATE ON mail_outbox
    FOR EACH ROW WHEN (NEW.status = 'queued' AND NEW.next_attempt_at <= now() AND OLD.status <> 'queued')
    EXECUTE FUNCTION referdesk_notify('referdesk_mail');

-- Webhooks: new deliveries, or one made due now by hand (a claim or a retry moves
-- `next_attempt_at` into the future and notifies nobody).
CREATE TRIGGER webhook_deliveries_queued AFTER INSERT ON webhook_deliveries
    REFERENCING NEW TABLE AS added
    FOR EACH STATEMENT EXECUTE FUNCTION referdesk_notify_added('referdesk_webhooks');
CREATE TRIGGER webhook_deliveries_due_now AFTER UPDATE ON webhook_deliveries
    FOR EACH ROW WHEN (NEW.status = 'pending' AND NEW.next_attempt_at <= now()
                       AND NEW.next_attempt_at IS DISTINCT FROM OLD.next_attempt_at)
    EXECUTE FUNCTION referdesk_notify('referdesk_webhooks');

-- Rewards: one that becomes releasable with its hold already over (a reward still on hold
-- is found by the release's own timer, `credit::next_due`).
CREATE TRIGGER rewards_releasable AFTER UPDATE ON rewards
    FOR EACH ROW WHEN (NEW.hold_until <= now()
                       AND (NEW.status = 'approved' OR (NEW.status = 'pending' AND NOT NEW.needs_approval))
                       AND NEW.status IS DISTINCT FROM OLD.status)
    EXECUTE FUNCTION referdesk_notify('referdesk_rewards');
CREATE FUNCTION rewards_notify_added() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM added WHERE hold_until <= now()
               AND (status = 'approved' OR (status = 'pending' AND NOT needs_approval))) THEN
        PERFORM pg_notify('referdesk_rewards', '');
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER rewards_added AFTER INSERT ON rewards
    REFERENCING NEW TABLE AS added
    FOR EACH STATEMENT EXECUTE FUNCTION rewards_notify_added();
