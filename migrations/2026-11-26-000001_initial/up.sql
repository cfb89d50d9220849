-- Referdesk schema. Invariants live here as well as in the domain code: a row that breaks
-- them cannot be written, whichever code path tries.
CREATE EXTENSION IF NOT EXISTS pg_trgm;

CREATE TABLE programs (
    id BIGSERIAL PRIMARY KEY,
    slug TEXT NOT NULL UNIQUE CHECK (slug ~ '^[a-z0-9][a-z0-9-]{0,62}$'),
    name TEXT NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    referral_base_url TEXT NOT NULL CHECK (referral_base_url ~ '^https?://'),
    link_param TEXT NOT NULL DEFAULT 'ref' CHECK (link_param ~ '^[A-Za-z0-9_.-]{1,64}$'),
    require_approval BOOLEAN NOT NULL DEFAULT FALSE,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE team_members (
    id BIGSERIAL PRIMARY KEY,
    email TEXT NOT NULL CHECK (length(email) BETWEEN 3 AND 254 AND position('@' in email) > 1),
    name TEXT NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    role TEXT NOT NULL CHECK (role IN ('viewer', 'support', 'admin')),
    -- NULL until the member sets a password through a one-time link.
    password_hash TEXT,
    disabled BOOLEAN NOT NULL DEFAULT FALSE,
    last_sign_in_at TIMESTAMPTZ,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX team_members_email_key ON team_members (lower(email));

-- One-time links: the first-run setup link and set-password links. Only a hash is kept.
CREATE TABLE one_time_tokens (
    id BIGSERIAL PRIMARY KEY,
    token_hash TEXT NOT NULL UNIQUE,
    purpose TEXT NOT NULL CHECK (purpose IN ('setup', 'set_password')),
    member_id BIGINT REFERENCES team_members (id),
    expires_at TIMESTAMPTZ NOT NULL,
    used_at TIMESTAMPTZ,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    CHECK ((purpose = 'setup') = (member_id IS NULL))
);

-- Server-side sessions (actix-session store). The cookie holds a random key; the row is
-- found by the key's SHA-256, so a database dump does not hand out live sessions.
CREATE TABLE sessions (
    id TEXT PRIMARY KEY,
    member_id BIGINT REFERENCES team_members (id),
    state JSONB NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX sessions_member_idx ON sessions (member_id);
CREATE INDEX sessions_expires_idx ON sessions (expires_at);

CREATE TABLE login_failures (
    id BIGSERIAL PRIMARY KEY,
    email TEXT NOT NULL,
    address TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX login_failures_email_idx ON login_failures (email, created_at);
CREATE INDEX login_failures_address_idx ON login_failures (address, created_at);

CREATE TABLE customers (
    id BIGSERIAL PRIMARY KEY,
    program_id BIGINT NOT NULL REFERENCES programs (id),
    -- The integrator's own identifier, exposed as `id` in the API.
    external_id TEXT NOT NULL CHECK (length(external_id) BETWEEN 1 AND 255),
    key TEXT NOT NULL CHECK (key ~ '^[A-Za-z0-9_-]{1,64}$'),
    email TEXT CHECK (email IS NULL OR (length(email) BETWEEN 3 AND 254 AND position('@' in email) > 1)),
    name TEXT CHECK (name IS NULL OR length(name) <= 200),
    surname TEXT CHECK (surname IS NULL OR length(surname) <= 200),
    metadata JSONB NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(metadata) = 'object'),
    custom_fields JSONB NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(custom_fields) = 'object'),
    status TEXT NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'deleted')),
    approved BOOLEAN NOT NULL DEFAULT TRUE,
    referrer_id BIGINT,
    referrals_count INTEGER NOT NULL DEFAULT 0 CHECK (referrals_count >= 0),
    deleted_at TIMESTAMPTZ,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (program_id, id),
    UNIQUE (program_id, external_id),
    UNIQUE (program_id, key),
    -- A referrer belongs to the same program; nobody refers themselves.
    FOREIGN KEY (program_id, referrer_id) REFERENCES customers (program_id, id),
    CHECK (referrer_id IS NULL OR referrer_id <> id),
    CHECK ((status = 'deleted') = (deleted_at IS NOT NULL))
);
CREATE UNIQUE INDEX customers_email_key ON customers (program_id, lower(email)) WHERE email IS NOT NULL;
CREATE INDEX customers_list_idx ON customers (program_id, status, created_at DESC, id DESC);
CREATE INDEX customers_referrer_idx ON customers (referrer_id, created_at DESC) WHERE referrer_id IS NOT NULL;
CREATE INDEX customers_referrals_idx ON customers (program_id, referrals_count DESC, id DESC);
CREATE INDEX customers_email_trgm ON customers USING gin (lower(email) gin_trgm_ops);
CREATE INDEX customers_name_trgm ON customers USING gin (lower(coalesce(name, '') || ' ' || coalesce(surname, '')) gin_trgm_ops);

-- Keys a customer used before. A retired key is never handed to another customer, so old
-- referral links keep pointing at the person who shared them.
CREATE TABLE retired_keys (
    program_id BIGINT NOT NULL REFERENCES programs (id),
    key TEXT NOT NULL,
    customer_id BIGINT NOT NULL REFERENCES customers (id),
    retired_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (program_id, key)
);

CREATE TABLE referral_links (
    id BIGSERIAL PRIMARY KEY,
    program_id BIGINT NOT NULL REFERENCES programs (id),
    customer_id BIGINT NOT NULL REFERENCES customers (id),
    code TEXT NOT NULL CHECK (code ~ '^[A-Za-z0-9_-]{1,64}$'),
    is_default BOOLEAN NOT NULL DEFAULT FALSE,
    clicks BIGINT NOT NULL DEFAULT 0 CHECK (clicks >= 0),
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (program_id, code)
);
CREATE UNIQUE INDEX referral_links_one_default ON referral_links (customer_id) WHERE is_default;
CREATE INDEX referral_links_customer_idx ON referral_links (customer_id);

CREATE TABLE referral_clicks (
    id BIGSERIAL PRIMARY KEY,
    link_id BIGINT NOT NULL REFERENCES referral_links (id),
    referer TEXT,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX referral_clicks_link_idx ON referral_clicks (link_id, created_at);

CREATE TABLE api_tokens (
    id BIGSERIAL PRIMARY KEY,
    program_id BIGINT NOT NULL REFERENCES programs (id),
    name TEXT NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
    token_hash TEXT NOT NULL UNIQUE,
    -- The first characters of the token, shown in lists so people can tell tokens apart.
    token_prefix TEXT NOT NULL,
    created_by BIGINT REFERENCES team_members (id),
    last_used_at TIMESTAMPTZ,
    revoked_at TIMESTAMPTZ,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE balance_transactions (
    id BIGSERIAL PRIMARY KEY,
    program_id BIGINT NOT NULL REFERENCES programs (id),
    customer_id BIGINT NOT NULL REFERENCES customers (id),
    kind TEXT NOT NULL CHECK (kind IN ('credit', 'debit')),
    amount NUMERIC(20, 4) NOT NULL CHECK (amount > 0 AND amount <= 1000000),
    amount_units TEXT NOT NULL,
    is_currency BOOLEAN NOT NULL,
    note TEXT CHECK (note IS NULL OR length(note) <= 1000),
    actor_member_id BIGINT REFERENCES team_members (id),
    actor_token_id BIGINT REFERENCES api_tokens (id),
    idempotency_key TEXT CHECK (idempotency_key IS NULL OR length(idempotency_key) BETWEEN 1 AND 255),
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    CHECK (CASE WHEN is_currency THEN amount_units ~ '^[A-Z]{3}$' AND amount = round(amount, 2)
                ELSE length(amount_units) BETWEEN 1 AND 32 END),
    UNIQUE (program_id, idempotency_key)
);
CREATE INDEX balance_transactions_customer_idx ON balance_transactions (customer_id, created_at DESC, id DESC);
CREATE INDEX balance_transactions_program_idx ON balance_transactions (program_id, created_at);

CREATE TABLE invites (
    id BIGSERIAL PRIMARY KEY,
    program_id BIGINT NOT NULL REFERENCES programs (id),
    customer_id BIGINT REFERENCES customers (id),
    email TEXT NOT NULL CHECK (length(email) BETWEEN 3 AND 254 AND position('@' in email) > 1),
    name TEXT CHECK (name IS NULL OR length(name) <= 200),
    personalization JSONB NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(personalization) = 'object'),
    status TEXT NOT NULL DEFAULT 'queued' CHECK (status IN ('queued', 'sent', 'failed')),
    last_error TEXT,
    sent_at TIMESTAMPTZ,
    actor_member_id BIGINT REFERENCES team_members (id),
    actor_token_id BIGINT REFERENCES api_tokens (id),
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX invites_program_idx ON invites (program_id, created_at DESC);
CREATE INDEX invites_customer_idx ON invites (customer_id, created_at DESC) WHERE customer_id IS NOT NULL;
-- One pending invite per address and program.
CREATE UNIQUE INDEX invites_pending_key ON invites (program_id, lower(email)) WHERE status = 'queued';

-- Rendered messages waiting for the mail worker. Written in the same transaction as the
-- invite, so a message is never lost and never sent twice.
CREATE TABLE mail_outbox (
    id BIGSERIAL PRIMARY KEY,
    invite_id BIGINT REFERENCES invites (id),
    recipient TEXT NOT NULL,
    subject TEXT NOT NULL,
    body_text TEXT NOT NULL,
    body_html TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'queued' CHECK (status IN ('queued', 'sent', 'failed')),
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    last_error TEXT,
    sent_at TIMESTAMPTZ,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX mail_outbox_due_idx ON mail_outbox (next_attempt_at) WHERE status = 'queued';

CREATE TABLE audit_events (
    id BIGSERIAL PRIMARY KEY,
    program_id BIGINT REFERENCES programs (id),
    actor_member_id BIGINT REFERENCES team_members (id),
    actor_token_id BIGINT REFERENCES api_tokens (id),
    -- Who did it, as shown in the log (kept even if the member is renamed).
    actor_label TEXT NOT NULL,
    action TEXT NOT NULL,
    subject_type TEXT NOT NULL,
    subject_id TEXT,
    customer_id BIGINT REFERENCES customers (id),
    before JSONB,
    after JSONB,
    address TEXT,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX audit_events_program_idx ON audit_events (program_id, created_at DESC, id DESC);
CREATE INDEX audit_events_customer_idx ON audit_events (customer_id, created_at DESC) WHERE customer_id IS NOT NULL;
CREATE INDEX audit_events_member_idx ON audit_events (actor_member_id, created_at DESC);
