-- Webhooks: subscriptions, the outbox of events (written in the transaction of the change
-- they describe), one delivery per event and subscription, and the log of its attempts.

CREATE TABLE webhook_subscriptions (
    id BIGSERIAL PRIMARY KEY,
    program_id BIGINT NOT NULL REFERENCES programs (id) ON DELETE CASCADE,
    -- The public identifier (`key` in /v1/webhooks).
    key TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
    url TEXT NOT NULL CHECK (length(url) BETWEEN 1 AND 2000),
    -- Every event, including those added in later versions.
    all_events BOOLEAN NOT NULL DEFAULT false,
    events TEXT[] NOT NULL DEFAULT '{}',
    is_active BOOLEAN NOT NULL DEFAULT true,
    secret TEXT NOT NULL,
    -- After a rotation the old secret signs too, until `previous_secret_until`.
    previous_secret TEXT,
    previous_secret_until TIMESTAMPTZ,
    -- The first failed attempt since the last success; auto-disable looks at it.
    failing_since TIMESTAMPTZ,
    -- Set when the subscription was disabled because it kept failing (the dashboard's notice).
    auto_disabled_at TIMESTAMPTZ,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    CHECK (all_events OR cardinality(events) > 0)
);
CREATE INDEX webhook_subscriptions_program_idx ON webhook_subscriptions (program_id, id);

CREATE TABLE webhook_events (
    -- The stable event id (`webhook-id`, `id` in the body): receivers deduplicate on it.
    id UUID PRIMARY KEY,
    program_id BIGINT NOT NULL REFERENCES programs (id) ON DELETE CASCADE,
    event TEXT NOT NULL CHECK (event IN (
        'customer.created', 'customer.updated', 'customer.deleted',
        'transaction.created', 'transaction.updated', 'transaction.deleted',
        'reward.created', 'reward.approved', 'reward.paid', 'reward.denied', 'reward.voided',
        'balance.credited', 'referral.created', 'webhook.test')),
    -- The customer the event is about, for the customer page's link (no foreign key, as
    -- in the audit log: the log outlives a customer removed by hand).
    customer_id BIGINT,
    data JSONB NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX webhook_events_created_idx ON webhook_events (created_at);

CREATE TABLE webhook_deliveries (
    id BIGSERIAL PRIMARY KEY,
    event_id UUID NOT NULL REFERENCES webhook_events (id) ON DELETE CASCADE,
    subscription_id BIGINT NOT NULL REFERENCES webhook_subscriptions (id) ON DELETE CASCADE,
    event TEXT NOT NULL,
    customer_id BIGINT,
    status TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts INTEGER NOT NULL DEFAULT 0,
    -- When it is due; a claim moves it past the lease, so an attempt whose process died
    -- becomes due again by itself.
    next_attempt_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    -- Set while a process delivers it (until the lease ends).
    claimed_until TIMESTAMPTZ,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (event_id, subscription_id)
);
CREATE INDEX webhook_deliveries_due_idx ON webhook_deliveries (next_attempt_at) WHERE status = 'pending';
CREATE INDEX webhook_deliveries_claimed_idx ON webhook_deliveries (subscription_id, claimed_until)
    WHERE status = 'pending' AND claimed_until IS NOT NULL;
CREATE INDEX webhook_deliveries_failed_idx ON webhook_deliveries (subscription_id, updated_at)
    WHERE status = 'failed';
CREATE INDEX webhook_deliveries_finished_idx ON webhook_deliveries (updated_at) WHERE status <> 'pending';

CREATE TABLE webhook_attempts (
    id BIGSERIAL PRIMARY KEY,
    delivery_id BIGINT NOT NULL REFERENCES webhook_deliveries (id) ON DELETE CASCADE,
    subscription_id BIGINT NOT NULL REFERENCES webhook_subscriptions (id) ON DELETE CASCADE,
    event_id UUID NOT NULL,
    event TEXT NOT NULL,
    customer_id BIGINT,
    outcome TEXT NOT NULL CHECK (outcome IN ('success', 'failure')),
    status_code INTEGER,
    duration_ms INTEGER NOT NULL,
    -- The first 2 KiB of the answer.
    response TEXT,
    error TEXT,
    -- When the delivery is tried again (none: delivered, or given up).
    next_retry_at TIMESTAMPTZ,
    attempted_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
-- The delivery log pages by id within a subscription, and by customer.
CREATE INDEX webhook_attempts_log_idx ON webhook_attempts (subscription_id, id DESC);
CREATE INDEX webhook_attempts_event_idx ON webhook_attempts (subscription_id, event, id DESC);
CREATE INDEX webhook_attempts_outcome_idx ON webhook_attempts (subscription_id, outcome, id DESC);
CREATE INDEX webhook_attempts_customer_idx ON webhook_attempts (customer_id, id DESC)
    WHERE customer_id IS NOT NULL;
CREATE INDEX webhook_attempts_delivery_idx ON webhook_attempts (delivery_id);
CREATE INDEX webhook_attempts_time_idx ON webhook_attempts (attempted_at);
