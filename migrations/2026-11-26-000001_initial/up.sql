-- The Referdesk schema. Invariants live here as well as in the domain code: a row that
-- breaks them cannot be written, whichever code path tries. Later changes are new
-- migrations after this one.
--
-- Sections: extensions, tables, functions, indexes, triggers, initial rows.

------------------------------------------------------------------------------------------
-- Extensions
------------------------------------------------------------------------------------------

-- Trigram indexes serve the customer search's `LIKE '%…%'`.
CREATE EXTENSION IF NOT EXISTS pg_trgm;

------------------------------------------------------------------------------------------
-- Tables
------------------------------------------------------------------------------------------

CREATE TABLE programs (
    id BIGSERIAL PRIMARY KEY,
    slug TEXT NOT NULL UNIQUE CHECK (slug ~ '^[a-z0-9][a-z0-9-]{0,62}$'),
    name TEXT NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    referral_base_url TEXT NOT NULL CHECK (referral_base_url ~ '^https?://'),
    link_param TEXT NOT NULL DEFAULT 'ref' CHECK (link_param ~ '^[A-Za-z0-9_.-]{1,64}$'),
    require_approval BOOLEAN NOT NULL DEFAULT FALSE,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    -- Fraud signal: a referrer with more new referrals than this in the last hour has
    -- their rewards held for review.
    rewards_max_referrals_per_hour INTEGER NOT NULL DEFAULT 20
        CHECK (rewards_max_referrals_per_hour BETWEEN 1 AND 100000),
    -- Support members may approve rewards up to this amount; larger ones need an admin.
    -- NULL: no threshold.
    rewards_support_approval_limit NUMERIC(20, 4)
        CHECK (rewards_support_approval_limit IS NULL OR rewards_support_approval_limit >= 0)
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

-- Failed sign-ins, counted per account (the typed email, cut to 254 characters), per
-- client address and per device cookie (`domain::team::sign_in`).
CREATE TABLE login_failures (
    id BIGSERIAL PRIMARY KEY,
    email TEXT NOT NULL,
    address TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    device TEXT,
    CONSTRAINT login_failures_email_length CHECK (char_length(email) <= 254)
);

-- Room left on each page (fillfactor) lets counting a referral update the referrer's row
-- in place, without new entries in the table's indexes (none of them holds the count).
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
) WITH (fillfactor = 85);

-- How many customers each program has per status and referred/not referred, kept by the
-- triggers on `customers` in the same transaction, so list totals are exact without
-- counting rows. Each group is spread over 16 slots (chosen by the writing connection) so
-- concurrent signups do not queue on one row; a slot may go negative, only sums mean
-- anything. `changes` only ever goes up: page marks (remembered positions of deep pages)
-- stay valid while a list's sum of changes is unchanged.
CREATE TABLE customer_tallies (
    program_id BIGINT NOT NULL REFERENCES programs (id),
    status TEXT NOT NULL CHECK (status IN ('active', 'deleted')),
    referred BOOLEAN NOT NULL,
    slot SMALLINT NOT NULL CHECK (slot BETWEEN 0 AND 15),
    customers BIGINT NOT NULL,
    changes BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (program_id, status, referred, slot)
);

-- The list's referral order, one narrow row per customer kept by the triggers on
-- `customers`. Keeping `referrals_count` out of every `customers` index lets counting a
-- referral update the referrer's row in place instead of writing a new entry into each of
-- the table's indexes.
CREATE TABLE referral_standings (
    customer_id BIGINT PRIMARY KEY,
    program_id BIGINT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('active', 'deleted')),
    referrals_count INTEGER NOT NULL,
    referrer_id BIGINT,
    approved BOOLEAN NOT NULL
);

-- Keys a customer used before. A retired key is never handed to another customer, so old
-- referral links keep pointing at the person who shared them.
CREATE TABLE retired_keys (
    program_id BIGINT NOT NULL,
    key TEXT NOT NULL,
    customer_id BIGINT NOT NULL,
    retired_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (program_id, key),
    -- One key checks both the customer and that it belongs to this program.
    CONSTRAINT retired_keys_customer_fkey
        FOREIGN KEY (program_id, customer_id) REFERENCES customers (program_id, id)
);

-- Extra links are retired (deleted_at) rather than deleted: their clicks stay, and their
-- code is never handed to someone else, so an old shared link cannot credit another
-- customer.
CREATE TABLE referral_links (
    id BIGSERIAL PRIMARY KEY,
    program_id BIGINT NOT NULL,
    customer_id BIGINT NOT NULL,
    code TEXT NOT NULL CHECK (code ~ '^[A-Za-z0-9_-]{1,64}$'),
    is_default BOOLEAN NOT NULL DEFAULT FALSE,
    clicks BIGINT NOT NULL DEFAULT 0 CHECK (clicks >= 0),
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    deleted_at TIMESTAMPTZ,
    UNIQUE (program_id, code),
    CONSTRAINT referral_links_customer_fkey
        FOREIGN KEY (program_id, customer_id) REFERENCES customers (program_id, id),
    CONSTRAINT referral_links_default_not_deleted CHECK (NOT (is_default AND deleted_at IS NOT NULL))
);

CREATE TABLE referral_clicks (
    id BIGSERIAL PRIMARY KEY,
    link_id BIGINT NOT NULL REFERENCES referral_links (id),
    referer TEXT,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE api_tokens (
    id BIGSERIAL PRIMARY KEY,
    program_id BIGINT NOT NULL REFERENCES programs (id),
    -- Says which system uses the token; unique among a program's live tokens.
    name TEXT NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
    token_hash TEXT NOT NULL UNIQUE,
    -- The first characters of the token, shown in lists so people can tell tokens apart.
    token_prefix TEXT NOT NULL,
    created_by BIGINT REFERENCES team_members (id),
    last_used_at TIMESTAMPTZ,
    revoked_at TIMESTAMPTZ,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    -- The one-time token of the form that created it: a form sent twice (a reload, a
    -- double click) creates one token.
    form_token UUID,
    -- Read-your-writes with replicas (REFERDESK_REPLICA_URL): the primary's write-ahead log
    -- position after the token's last write; the token's reads go to a replica only once it
    -- has replayed past it. Kept here, not in a process's memory, so that every server
    -- process behind a load balancer honours it. Never set without replicas.
    read_after_lsn BIGINT,
    CONSTRAINT api_tokens_form_token_key UNIQUE (form_token)
);

CREATE TABLE balance_transactions (
    id BIGSERIAL PRIMARY KEY,
    program_id BIGINT NOT NULL,
    customer_id BIGINT NOT NULL,
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
    UNIQUE (program_id, idempotency_key),
    CONSTRAINT balance_transactions_customer_fkey
        FOREIGN KEY (program_id, customer_id) REFERENCES customers (program_id, id)
);

-- Kept balances: one row per customer and unit, kept by the triggers on
-- `balance_transactions` in the same transaction as each booking, so a balance (and the
-- ledger's length) is one indexed row per unit however long the ledger grows.
-- `ledger::book` locks the customer before it reads a balance, so bookings of one customer
-- are serialised and a debit's check sees every earlier booking.
CREATE TABLE customer_balances (
    customer_id BIGINT NOT NULL REFERENCES customers (id),
    amount_units TEXT NOT NULL,
    is_currency BOOLEAN NOT NULL,
    -- Credits minus debits.
    balance NUMERIC NOT NULL,
    -- Credits only (the API's stats).
    credited NUMERIC NOT NULL,
    -- Ledger rows in this unit (the ledger's length); a row whose entries are all gone is
    -- removed.
    entries BIGINT NOT NULL CHECK (entries >= 0),
    PRIMARY KEY (customer_id, amount_units, is_currency)
);

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

-- The audit log records what happened and keeps no foreign keys to what it names: it
-- outlives a customer removed by hand (the event then shows without a link), and an
-- audited write does not lock the rows it names.
CREATE TABLE audit_events (
    id BIGSERIAL PRIMARY KEY,
    program_id BIGINT,
    actor_member_id BIGINT,
    actor_token_id BIGINT,
    -- Who did it, as shown in the log (kept even if the member is renamed).
    actor_label TEXT NOT NULL,
    action TEXT NOT NULL,
    subject_type TEXT NOT NULL,
    subject_id TEXT,
    customer_id BIGINT,
    before JSONB,
    after JSONB,
    address TEXT,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- When each periodic task last ran, shared by every server process on this database: a
-- process claims the task's row (FOR UPDATE SKIP LOCKED) and runs only when nobody ran it
-- within the interval, so several processes prune once, not once each.
CREATE TABLE maintenance_runs (
    task TEXT PRIMARY KEY,
    last_run_at TIMESTAMPTZ
);

-- Rewards (SPEC §3.1): transactions posted by the program's backend, reward rules, and the
-- rewards they fire, with their review life. The invariants are constraints: a rule fires
-- once per (rule, beneficiary, event) whichever code path tries.

-- A purchase (or other rewardable action) reported by the program's backend. `key` is the
-- integrator's identifier: a key books at most once per program; `request_hash` tells a
-- retry of the same request (answered with the existing row) from a different body under
-- the same key (refused).
CREATE TABLE transactions (
    id BIGSERIAL PRIMARY KEY,
    program_id BIGINT NOT NULL REFERENCES programs (id),
    customer_id BIGINT NOT NULL,
    key TEXT NOT NULL CHECK (length(key) BETWEEN 1 AND 255),
    amount NUMERIC(20, 4) NOT NULL CHECK (amount > 0 AND amount <= 100000000),
    amount_units TEXT NOT NULL CHECK (amount_units ~ '^[A-Z]{3}$'),
    action TEXT NOT NULL DEFAULT 'sale'
        CHECK (action IN ('sale', 'subscription', 'renewal', 'upgrade')),
    status TEXT NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'archived', 'deleted')),
    product_id TEXT CHECK (product_id IS NULL OR length(product_id) BETWEEN 1 AND 255),
    product_type TEXT CHECK (product_type IS NULL OR length(product_type) BETWEEN 1 AND 255),
    -- Whether the customer had a referrer when the transaction was booked.
    rewardable BOOLEAN NOT NULL,
    -- Why rules that looked at this transaction created no reward (limit reached, budget
    -- spent, below the minimum, …): [{"rule_id", "rule", "reason"}].
    reward_notes JSONB NOT NULL DEFAULT '[]' CHECK (jsonb_typeof(reward_notes) = 'array'),
    request_hash TEXT NOT NULL,
    actor_member_id BIGINT REFERENCES team_members (id),
    actor_token_id BIGINT REFERENCES api_tokens (id),
    archived_at TIMESTAMPTZ,
    deleted_at TIMESTAMPTZ,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (program_id, key),
    UNIQUE (program_id, id),
    CONSTRAINT transactions_customer_fkey
        FOREIGN KEY (program_id, customer_id) REFERENCES customers (program_id, id),
    CHECK (amount = round(amount, 2)),
    CHECK ((status = 'deleted') = (deleted_at IS NOT NULL)),
    CHECK ((status = 'archived') = (archived_at IS NOT NULL))
);

-- A reward rule of a program. An edit bumps `version`; each reward keeps a snapshot of the
-- rule as it was when it fired, so edits apply to future events only.
CREATE TABLE reward_rules (
    id BIGSERIAL PRIMARY KEY,
    program_id BIGINT NOT NULL REFERENCES programs (id),
    name TEXT NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    -- What fires it: the referred friend is created, is approved, or makes a sale.
    trigger TEXT NOT NULL CHECK (trigger IN ('customer_created', 'customer_approved', 'sale')),
    -- Sale triggers only: the friend's first sale, every sale, or the first `sale_count`.
    sale_scope TEXT CHECK (sale_scope IN ('first', 'every', 'first_n')),
    sale_count INTEGER CHECK (sale_count BETWEEN 1 AND 1000),
    -- Sale triggers only: sales within this many days of the friend's signup.
    within_days INTEGER CHECK (within_days BETWEEN 1 AND 3650),
    -- Sale triggers only: sales of at least this amount (in the sale's units).
    min_sale_amount NUMERIC(20, 4) CHECK (min_sale_amount > 0),
    -- Sale triggers only: sales of this product type.
    product_type TEXT CHECK (product_type IS NULL OR length(product_type) BETWEEN 1 AND 255),
    -- `fixed`: the amounts below in `amount_units`; `percent`: percent of the sale amount
    -- (sale triggers only, sales in `amount_units` only), rounded to the unit's decimals.
    amount_kind TEXT NOT NULL CHECK (amount_kind IN ('fixed', 'percent')),
    -- What each side earns; NULL: that side earns nothing.
    referrer_amount NUMERIC(20, 4) CHECK (referrer_amount > 0),
    friend_amount NUMERIC(20, 4) CHECK (friend_amount > 0),
    amount_units TEXT NOT NULL,
    is_currency BOOLEAN NOT NULL,
    -- Percent rules: the most one reward may be.
    max_reward NUMERIC(20, 4) CHECK (max_reward > 0),
    -- Limits: rewards per referrer in all and per calendar month, and the rule's budget
    -- (sum of its rewards not denied or voided, in `amount_units`).
    limit_per_referrer INTEGER CHECK (limit_per_referrer >= 1),
    limit_per_referrer_month INTEGER CHECK (limit_per_referrer_month >= 1),
    budget NUMERIC(20, 4) CHECK (budget > 0),
    hold_days INTEGER NOT NULL DEFAULT 0 CHECK (hold_days BETWEEN 0 AND 365),
    needs_approval BOOLEAN NOT NULL DEFAULT TRUE,
    enabled BOOLEAN NOT NULL DEFAULT TRUE,
    version INTEGER NOT NULL DEFAULT 1 CHECK (version >= 1),
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (program_id, id),
    CHECK (referrer_amount IS NOT NULL OR friend_amount IS NOT NULL),
    CHECK (trigger = 'sale' OR (sale_scope IS NULL AND sale_count IS NULL AND within_days IS NULL
                                AND min_sale_amount IS NULL AND product_type IS NULL
                                AND amount_kind = 'fixed')),
    CHECK (trigger <> 'sale' OR sale_scope IS NOT NULL),
    CHECK ((sale_scope = 'first_n') = (sale_count IS NOT NULL)),
    CHECK (amount_kind = 'percent' OR max_reward IS NULL),
    CHECK (amount_kind <> 'percent' OR (coalesce(referrer_amount, 0) <= 100 AND coalesce(friend_amount, 0) <= 100)),
    CHECK (CASE WHEN is_currency THEN amount_units ~ '^[A-Z]{3}$'
                ELSE length(amount_units) BETWEEN 1 AND 32 END)
);

-- A reward earned by a beneficiary (the referrer or the referred friend) when a rule fired.
-- `event_key` names the triggering event: `customer_created:<friend id>`,
-- `customer_approved:<friend id>` or `transaction:<transaction id>`.
CREATE TABLE rewards (
    id BIGSERIAL PRIMARY KEY,
    program_id BIGINT NOT NULL REFERENCES programs (id),
    rule_id BIGINT NOT NULL,
    -- The rule as it was when it fired (its columns as JSON, `version` included).
    rule_snapshot JSONB NOT NULL CHECK (jsonb_typeof(rule_snapshot) = 'object'),
    beneficiary_id BIGINT NOT NULL,
    role TEXT NOT NULL CHECK (role IN ('referrer', 'friend')),
    referrer_id BIGINT NOT NULL,
    friend_id BIGINT NOT NULL,
    transaction_id BIGINT,
    event_key TEXT NOT NULL,
    amount NUMERIC(20, 4) NOT NULL CHECK (amount > 0 AND amount <= 1000000),
    amount_units TEXT NOT NULL,
    is_currency BOOLEAN NOT NULL,
    -- pending (in hold or waiting for approval) → approved → credited; or denied; or voided.
    status TEXT NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'approved', 'credited', 'denied', 'voided')),
    hold_until TIMESTAMPTZ NOT NULL,
    -- The rule asked for manual approval, or a fraud signal holds it for review.
    needs_approval BOOLEAN NOT NULL,
    -- Fraud signals that hold it for review whatever the rule says:
    -- `same_email`, `disposable_email`, `referral_velocity`.
    flags TEXT[] NOT NULL DEFAULT '{}',
    -- The credit booked into the ledger (idempotency key `reward:<id>`).
    credit_entry_id BIGINT REFERENCES balance_transactions (id),
    credited_at TIMESTAMPTZ,
    -- Who approved or denied it, when, and why (denials need a reason).
    decided_by_member_id BIGINT REFERENCES team_members (id),
    decided_by_token_id BIGINT REFERENCES api_tokens (id),
    decided_at TIMESTAMPTZ,
    deny_reason TEXT CHECK (deny_reason IS NULL OR length(deny_reason) BETWEEN 1 AND 1000),
    void_reason TEXT CHECK (void_reason IS NULL OR length(void_reason) BETWEEN 1 AND 1000),
    -- A refund after the credit: `owed` while the balance could not cover the reversing
    -- debit (`reversal_owed` is what is still owed), `reversed` once booked in full,
    -- `written_off` when an admin gave up the rest.
    reversal TEXT CHECK (reversal IN ('owed', 'reversed', 'written_off')),
    reversal_owed NUMERIC(20, 4) CHECK (reversal_owed >= 0),
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    -- A rule fires at most once per beneficiary and triggering event.
    CONSTRAINT rewards_once_per_event UNIQUE (rule_id, beneficiary_id, event_key),
    CONSTRAINT rewards_rule_fkey
        FOREIGN KEY (program_id, rule_id) REFERENCES reward_rules (program_id, id),
    CONSTRAINT rewards_beneficiary_fkey
        FOREIGN KEY (program_id, beneficiary_id) REFERENCES customers (program_id, id),
    CONSTRAINT rewards_referrer_fkey
        FOREIGN KEY (program_id, referrer_id) REFERENCES customers (program_id, id),
    CONSTRAINT rewards_friend_fkey
        FOREIGN KEY (program_id, friend_id) REFERENCES customers (program_id, id),
    CONSTRAINT rewards_transaction_fkey
        FOREIGN KEY (program_id, transaction_id) REFERENCES transactions (program_id, id),
    CHECK (beneficiary_id = CASE role WHEN 'referrer' THEN referrer_id ELSE friend_id END),
    CHECK ((status = 'credited') = (credit_entry_id IS NOT NULL)),
    CHECK ((status = 'credited') = (credited_at IS NOT NULL)),
    CHECK ((status = 'denied') = (deny_reason IS NOT NULL)),
    CHECK ((status = 'voided') = (void_reason IS NOT NULL)),
    CHECK (reversal IS NULL OR status = 'credited'),
    CHECK ((reversal = 'owed') = (reversal_owed IS NOT NULL AND reversal_owed > 0)),
    CHECK (CASE WHEN is_currency THEN amount_units ~ '^[A-Z]{3}$' AND amount = round(amount, 2)
                ELSE length(amount_units) BETWEEN 1 AND 32 END)
);

-- How many rewards each program has per rule, status, fraud flag and reversal owed, and the
-- sum of their amounts, kept by the statement triggers on `rewards` in the same
-- transaction: the review queue's counts and the API list's total are a few rows read
-- instead of a count over every matching reward, and a rule's budget check reads the
-- running total of its rewards not denied or voided instead of summing every reward of
-- the rule (a denial or a void moves the amount out of the counted statuses at once; a
-- reversal leaves the reward credited, and counted). As with `customer_tallies`, each group
-- is spread over 16 slots (chosen by the writing connection) so concurrent writers do not
-- queue on one row; only sums mean anything.
CREATE TABLE reward_tallies (
    program_id BIGINT NOT NULL,
    rule_id BIGINT NOT NULL,
    status TEXT NOT NULL,
    flagged BOOLEAN NOT NULL,
    owed BOOLEAN NOT NULL,
    slot SMALLINT NOT NULL CHECK (slot BETWEEN 0 AND 15),
    rewards BIGINT NOT NULL,
    amount NUMERIC NOT NULL DEFAULT 0,
    PRIMARY KEY (program_id, rule_id, status, flagged, owed, slot)
);

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
    -- The one-time token of the form that created it: the same form sent twice (a double
    -- click, a re-post) makes one subscription, as `api_tokens.form_token` does for tokens.
    form_token UUID,
    CHECK (all_events OR cardinality(events) > 0),
    CONSTRAINT webhook_subscriptions_form_token_key UNIQUE (form_token)
);

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

-- Background jobs: long actions (bulk actions on customers, imports) that run in batches
-- inside the server, survive a restart and run once across several server processes.
-- A worker claims a job by taking its lease (`lease_owner`, `lease_until`) under
-- `FOR UPDATE SKIP LOCKED`; each batch commits its changes together with the counts and
-- the cursor it reached, so a resumed job continues after the last committed row.
CREATE TABLE jobs (
    id BIGSERIAL PRIMARY KEY,
    program_id BIGINT NOT NULL REFERENCES programs (id),
    -- The closed set of kinds (`domain::jobs::JobKind`); a new kind replaces this named
    -- constraint in its own migration.
    kind TEXT NOT NULL CONSTRAINT jobs_kind_check CHECK (kind IN (
        'customers.approve', 'customers.unapprove', 'customers.delete', 'customers.restore',
        'customers.invite', 'customers.credit', 'customers.import'
    )),
    status TEXT NOT NULL DEFAULT 'queued'
        CHECK (status IN ('queued', 'running', 'done', 'failed', 'cancelled')),
    -- Who started it, as the audit log names them.
    actor_member_id BIGINT REFERENCES team_members (id),
    actor_label TEXT NOT NULL,
    actor_address TEXT,
    params JSONB NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(params) = 'object'),
    -- The one-time token of the form that started it: a form sent twice starts one job.
    form_token UUID,
    total BIGINT NOT NULL DEFAULT 0 CHECK (total >= 0),
    done BIGINT NOT NULL DEFAULT 0 CHECK (done >= 0),
    skipped BIGINT NOT NULL DEFAULT 0 CHECK (skipped >= 0),
    -- Where the next batch starts; its shape belongs to the kind.
    cursor JSONB,
    lease_owner TEXT,
    lease_until TIMESTAMPTZ,
    -- Batches that failed in a row; reset by a batch that commits.
    failures INT NOT NULL DEFAULT 0 CHECK (failures >= 0),
    last_error TEXT,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    started_at TIMESTAMPTZ,
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    finished_at TIMESTAMPTZ,
    UNIQUE (program_id, form_token),
    CHECK ((status IN ('done', 'failed', 'cancelled')) = (finished_at IS NOT NULL))
);

-- The rows a job left alone, and why: shown on the job page and downloadable as CSV.
CREATE TABLE job_skipped_rows (
    id BIGSERIAL PRIMARY KEY,
    job_id BIGINT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    -- The line of an imported file, when the job reads one.
    line BIGINT,
    customer_key TEXT,
    email TEXT,
    reason TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Where a one-transaction job (an import: all its rows or none) stands: its step, and the
-- units of that step done so far. Written on a connection of its own while the job's
-- transaction is open (its changes are not visible until it commits), so the row is
-- inserted with the job and only ever updated afterwards: an update that keeps `job_id`
-- needs no lock on the job's row, which the running batch holds.
CREATE TABLE job_phases (
    job_id BIGINT PRIMARY KEY REFERENCES jobs (id) ON DELETE CASCADE,
    step INT NOT NULL DEFAULT 0 CHECK (step >= 0),
    steps INT NOT NULL DEFAULT 0 CHECK (steps >= 0),
    label TEXT NOT NULL,
    done BIGINT NOT NULL DEFAULT 0 CHECK (done >= 0),
    -- 0: the step's size is not known (one set-based statement).
    total BIGINT NOT NULL DEFAULT 0 CHECK (total >= 0),
    started_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Dashboard imports of customers: the uploaded file kept between the steps (map the
-- columns, dry run, import), the choices made, and the last report (its refused rows are
-- downloadable). `status` goes uploaded → importing → imported exactly once: the import
-- form sent twice (a double click, a reload) imports once. The import itself runs as a
-- background job (kind 'customers.import').
CREATE TABLE customer_imports (
    id BIGSERIAL PRIMARY KEY,
    program_id BIGINT NOT NULL REFERENCES programs (id),
    member_id BIGINT REFERENCES team_members (id),
    file_name TEXT NOT NULL CHECK (length(file_name) <= 255),
    content BYTEA NOT NULL,
    mapping JSONB,
    mode TEXT NOT NULL DEFAULT 'create'
        CHECK (mode IN ('create', 'upsert_key', 'upsert_id', 'upsert_email')),
    policy TEXT NOT NULL DEFAULT 'all_or_nothing' CHECK (policy IN ('all_or_nothing', 'valid_rows')),
    status TEXT NOT NULL DEFAULT 'uploaded' CHECK (status IN ('uploaded', 'importing', 'imported', 'failed')),
    report JSONB,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    finished_at TIMESTAMPTZ,
    -- The job that imports (or imported) the upload; the last one when it was tried again.
    job_id BIGINT REFERENCES jobs (id)
);

-- Limits shared by every server process on the database: one counter per limit, key and
-- window (the API's per-token minute, the per-address count of unknown API tokens).
-- UNLOGGED: written on most API calls, so no WAL for it; a crash or a failover empties it,
-- which only lets clients through sooner. Never read on a replica (unlogged tables are not
-- replicated). Past windows are pruned.
CREATE UNLOGGED TABLE rate_windows (
    scope TEXT NOT NULL CHECK (scope IN ('api_token', 'unknown_token')),
    key TEXT NOT NULL,
    window_start TIMESTAMPTZ NOT NULL,
    hits INTEGER NOT NULL CHECK (hits > 0),
    PRIMARY KEY (scope, key, window_start)
);

------------------------------------------------------------------------------------------
-- Functions
------------------------------------------------------------------------------------------

-- Whether a customer's id (name) holds a character plain ids (names) never hold; a search
-- term with such a character is looked up only among the rows the partial indexes
-- `customers_unusual_id_idx` / `customers_unusual_name_idx` list. As functions, used as
-- `f(...) IS TRUE` in the index predicates and in the searches, the planner estimates them
-- from their statistics (below) instead of running a regex over a sample at every planning;
-- PL/pgSQL, so it never inlines them back into the regex. They must agree with
-- `is_plain_id_char` / `is_plain_name_char` in the customer search.
CREATE FUNCTION customer_id_is_unusual(external_id TEXT) RETURNS BOOLEAN
    LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
BEGIN
    RETURN external_id ~ '[^A-Za-z0-9_-]';
END
$$;
CREATE FUNCTION customer_name_is_unusual(name TEXT, surname TEXT) RETURNS BOOLEAN
    LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
BEGIN
    RETURN (coalesce(name, '') || coalesce(surname, '')) ~ '[^A-Za-z ''-]';
END
$$;

-- Inserts and deletes of customers: once per statement, from its transition table, so a
-- bulk import costs one upsert per tally group rather than one per row.
CREATE FUNCTION customers_counted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- Tally groups are written in key order, so two statements never lock the same tally
    -- rows in opposite orders.
    IF TG_OP = 'INSERT' THEN
        INSERT INTO customer_tallies AS t (program_id, status, referred, slot, customers, changes)
        SELECT program_id, status, referrer_id IS NOT NULL, pg_backend_pid() % 16, count(*), count(*)
        FROM new_rows GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
        ON CONFLICT (program_id, status, referred, slot)
        DO UPDATE SET customers = t.customers + EXCLUDED.customers,
                      changes = t.changes + EXCLUDED.changes;
        INSERT INTO referral_standings (customer_id, program_id, status, referrals_count, referrer_id, approved)
        SELECT id, program_id, status, referrals_count, referrer_id, approved FROM new_rows;
    ELSE
        INSERT INTO customer_tallies AS t (program_id, status, referred, slot, customers, changes)
        SELECT program_id, status, referrer_id IS NOT NULL, pg_backend_pid() % 16, -count(*), count(*)
        FROM old_rows GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
        ON CONFLICT (program_id, status, referred, slot)
        DO UPDATE SET customers = t.customers + EXCLUDED.customers,
                      changes = t.changes + EXCLUDED.changes;
        DELETE FROM referral_standings s USING old_rows o WHERE s.customer_id = o.id;
    END IF;
    RETURN NULL;
END
$$;

-- An update that moves a customer to another tally group (deleted, restored, a referrer
-- set or removed).
CREATE FUNCTION customer_tallies_move() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO customer_tallies AS t (program_id, status, referred, slot, customers, changes)
    SELECT program_id, status, referred, pg_backend_pid() % 16, delta, 1
    FROM (VALUES (OLD.program_id, OLD.status, OLD.referrer_id IS NOT NULL, -1),
                 (NEW.program_id, NEW.status, NEW.referrer_id IS NOT NULL, 1))
         AS moves (program_id, status, referred, delta)
    ORDER BY 1, 2, 3
    ON CONFLICT (program_id, status, referred, slot)
    DO UPDATE SET customers = t.customers + EXCLUDED.customers,
                  changes = t.changes + EXCLUDED.changes;
    RETURN NULL;
END
$$;

-- Page marks rely on the list by creation date keeping its order; Referdesk never changes
-- a creation time, so one changed by hand counts as a change of the list.
CREATE FUNCTION customer_tallies_reordered() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO customer_tallies AS t (program_id, status, referred, slot, customers, changes)
    VALUES (NEW.program_id, NEW.status, NEW.referrer_id IS NOT NULL, pg_backend_pid() % 16, 0, 1)
    ON CONFLICT (program_id, status, referred, slot) DO UPDATE SET changes = t.changes + 1;
    RETURN NULL;
END
$$;

CREATE FUNCTION referral_standings_move() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE referral_standings
    SET customer_id = NEW.id, program_id = NEW.program_id, status = NEW.status,
        referrals_count = NEW.referrals_count, referrer_id = NEW.referrer_id,
        approved = NEW.approved
    WHERE customer_id = OLD.id;
    RETURN NULL;
END
$$;

-- A TRUNCATE fires no row or statement trigger: without this, a hand-run
-- `TRUNCATE customers CASCADE` would leave the tallies and standings counting customers
-- that are gone. Changes are bumped, never reset, as page marks require.
CREATE FUNCTION customers_truncated() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    TRUNCATE referral_standings;
    UPDATE customer_tallies SET customers = 0, changes = changes + 1;
    RETURN NULL;
END
$$;

-- Kept balances, on every change of `balance_transactions`: once per statement, from its
-- transition tables, so a bulk insert costs one upsert per customer and unit. Balances are
-- written in key order, so two statements never lock the same balance rows in opposite
-- orders.
CREATE FUNCTION customer_balances_keep() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- Rows taken back first (an update takes back the old rows and adds the new ones).
    -- The application only ever appends; these keep balances exact after hand edits.
    IF TG_OP IN ('DELETE', 'UPDATE') THEN
        UPDATE customer_balances b
        SET balance = b.balance - g.balance, credited = b.credited - g.credited,
            entries = b.entries - g.entries
        FROM (SELECT customer_id, amount_units, is_currency,
                     sum(CASE WHEN kind = 'credit' THEN amount ELSE -amount END) AS balance,
                     coalesce(sum(amount) FILTER (WHERE kind = 'credit'), 0) AS credited,
                     count(*) AS entries
              FROM old_rows GROUP BY 1, 2, 3) g
        WHERE (b.customer_id, b.amount_units, b.is_currency) = (g.customer_id, g.amount_units, g.is_currency);
        DELETE FROM customer_balances b
        WHERE b.entries = 0
          AND (b.customer_id, b.amount_units, b.is_currency) IN
              (SELECT customer_id, amount_units, is_currency FROM old_rows);
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        INSERT INTO customer_balances AS b (customer_id, amount_units, is_currency, balance, credited, entries)
        SELECT customer_id, amount_units, is_currency,
               sum(CASE WHEN kind = 'credit' THEN amount ELSE -amount END),
               coalesce(sum(amount) FILTER (WHERE kind = 'credit'), 0),
               count(*)
        FROM new_rows GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
        ON CONFLICT (customer_id, amount_units, is_currency)
        DO UPDATE SET balance = b.balance + EXCLUDED.balance,
                      credited = b.credited + EXCLUDED.credited,
                      entries = b.entries + EXCLUDED.entries;
    END IF;
    RETURN NULL;
END
$$;

-- A TRUNCATE fires no row or statement trigger: without this, a hand-run TRUNCATE of the
-- ledger would leave balances of entries that are gone. DELETE, not TRUNCATE: a
-- `TRUNCATE customers CASCADE` is truncating the balances itself as this runs.
CREATE FUNCTION customer_balances_truncated() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM customer_balances;
    RETURN NULL;
END
$$;

-- Reward tallies, on every change of `rewards`. A transition table exists only for the
-- events that have it, so each event gets a function of its own that names only its
-- tables; groups are written in key order, as for the customer tallies.
CREATE FUNCTION rewards_tallied_insert() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO reward_tallies AS t (program_id, rule_id, status, flagged, owed, slot, rewards, amount)
    SELECT program_id, rule_id, status, flags <> '{}', reversal IS NOT DISTINCT FROM 'owed',
           pg_backend_pid() % 16, count(*), sum(amount)
    FROM new_rows GROUP BY 1, 2, 3, 4, 5 ORDER BY 1, 2, 3, 4, 5
    ON CONFLICT (program_id, rule_id, status, flagged, owed, slot)
    DO UPDATE SET rewards = t.rewards + EXCLUDED.rewards, amount = t.amount + EXCLUDED.amount;
    RETURN NULL;
END
$$;

CREATE FUNCTION rewards_tallied_delete() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO reward_tallies AS t (program_id, rule_id, status, flagged, owed, slot, rewards, amount)
    SELECT program_id, rule_id, status, flags <> '{}', reversal IS NOT DISTINCT FROM 'owed',
           pg_backend_pid() % 16, -count(*), -sum(amount)
    FROM old_rows GROUP BY 1, 2, 3, 4, 5 ORDER BY 1, 2, 3, 4, 5
    ON CONFLICT (program_id, rule_id, status, flagged, owed, slot)
    DO UPDATE SET rewards = t.rewards + EXCLUDED.rewards, amount = t.amount + EXCLUDED.amount;
    RETURN NULL;
END
$$;

-- An update moves a reward between groups when a grouped column changes, and changes a
-- group's sum when its amount changes (a revived reward may be worth another amount).
CREATE FUNCTION rewards_tallied_update() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO reward_tallies AS t (program_id, rule_id, status, flagged, owed, slot, rewards, amount)
    SELECT program_id, rule_id, status, flagged, owed, pg_backend_pid() % 16, sum(delta), sum(amount)
    FROM (
        SELECT program_id, rule_id, status, flags <> '{}' AS flagged,
               reversal IS NOT DISTINCT FROM 'owed' AS owed, 1 AS delta, amount
        FROM new_rows
        UNION ALL
        SELECT program_id, rule_id, status, flags <> '{}', reversal IS NOT DISTINCT FROM 'owed', -1, -amount
        FROM old_rows
    ) changes
    GROUP BY 1, 2, 3, 4, 5
    HAVING sum(delta) <> 0 OR sum(amount) <> 0
    ORDER BY 1, 2, 3, 4, 5
    ON CONFLICT (program_id, rule_id, status, flagged, owed, slot)
    DO UPDATE SET rewards = t.rewards + EXCLUDED.rewards, amount = t.amount + EXCLUDED.amount;
    RETURN NULL;
END
$$;

CREATE FUNCTION rewards_tallied_truncate() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM reward_tallies;
    RETURN NULL;
END
$$;

-- Work queued for a background worker notifies its channel (the trigger's argument) in the
-- transaction that queues it: a NOTIFY is delivered at commit, and never for a rollback.
-- The workers of every process LISTEN (`db::listener`); polling stays as a slower fallback.
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

-- New rewards wake the hold release only when one is releasable with its hold already
-- over (a reward still on hold is found by the release's own timer, `credit::next_due`).
CREATE FUNCTION rewards_notify_added() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM added WHERE hold_until <= now()
               AND (status = 'approved' OR (status = 'pending' AND NOT needs_approval))) THEN
        PERFORM pg_notify('referdesk_rewards', '');
    END IF;
    RETURN NULL;
END $$;

------------------------------------------------------------------------------------------
-- Indexes
------------------------------------------------------------------------------------------

CREATE UNIQUE INDEX team_members_email_key ON team_members (lower(email));

CREATE INDEX sessions_member_idx ON sessions (member_id);
CREATE INDEX sessions_expires_idx ON sessions (expires_at);

CREATE INDEX login_failures_email_idx ON login_failures (email, created_at);
CREATE INDEX login_failures_address_idx ON login_failures (address, created_at);
CREATE INDEX login_failures_device_idx ON login_failures (device, created_at) WHERE device IS NOT NULL;

-- customers: uniqueness, the list's orders, search and the dashboard.
CREATE UNIQUE INDEX customers_email_key ON customers (program_id, lower(email)) WHERE email IS NOT NULL;
-- The list by creation date, and the dashboard's pass over recent customers: covering, so a
-- page is found (and the referred and approved filters checked) from index entries alone.
CREATE INDEX customers_list_idx ON customers (program_id, status, created_at DESC, id DESC)
    INCLUDE (referrer_id, approved);
CREATE INDEX customers_referrer_idx ON customers (referrer_id, created_at DESC) WHERE referrer_id IS NOT NULL;
-- Sorting by name (the expression the name search uses) and by email.
CREATE INDEX customers_name_sort_idx
    ON customers (program_id, lower(coalesce(name, '') || ' ' || coalesce(surname, '')), id);
CREATE INDEX customers_email_sort_idx ON customers (program_id, lower(email), id);
-- The dashboard's customers awaiting approval; a partial index is written only for them.
CREATE INDEX customers_unapproved_idx ON customers (program_id) WHERE NOT approved AND status = 'active';

-- Search by partial match, case-insensitively. Short pending lists (256 kB): a signup that
-- overflows one merges it into the index while it waits, and a search reads the whole list.
CREATE INDEX customers_email_trgm ON customers USING gin (lower(email) gin_trgm_ops)
    WITH (gin_pending_list_limit = 256);
CREATE INDEX customers_name_trgm
    ON customers USING gin (lower(coalesce(name, '') || ' ' || coalesce(surname, '')) gin_trgm_ops)
    WITH (gin_pending_list_limit = 256);
CREATE INDEX customers_key_trgm ON customers USING gin (lower(key) gin_trgm_ops)
    WITH (gin_pending_list_limit = 256);
CREATE INDEX customers_external_id_trgm ON customers USING gin (lower(external_id) gin_trgm_ops)
    WITH (gin_pending_list_limit = 256);
-- Searches that need no trigram index (the customer search picks them by the term's
-- shape): a term with an `@` inside by the email's local part, reversed, as a prefix...
CREATE INDEX customers_email_local_idx
    ON customers (program_id, reverse(split_part(lower(email), '@', 1)) text_pattern_ops)
    WHERE email IS NOT NULL;
-- ...and a term with an unusual character among just the rows that hold one.
CREATE INDEX customers_unusual_id_idx ON customers (program_id)
    WHERE customer_id_is_unusual(external_id) IS TRUE;
CREATE INDEX customers_unusual_name_idx ON customers (program_id)
    WHERE customer_name_is_unusual(name, surname) IS TRUE;
-- Without these the planner guesses that half the rows are unusual and reads the trigram
-- index instead of the short partial one.
CREATE STATISTICS customers_unusual_id ON (customer_id_is_unusual(external_id)) FROM customers;
CREATE STATISTICS customers_unusual_name ON (customer_name_is_unusual(name, surname)) FROM customers;

-- The list sorted by referrals, from the index alone; the second serves "referred
-- customers only", whose biggest referrers are rare among the biggest overall.
CREATE INDEX referral_standings_order_idx
    ON referral_standings (program_id, status, referrals_count DESC, customer_id DESC)
    INCLUDE (referrer_id, approved);
CREATE INDEX referral_standings_referred_idx
    ON referral_standings (program_id, status, referrals_count DESC, customer_id DESC)
    INCLUDE (referrer_id, approved)
    WHERE referrer_id IS NOT NULL;

CREATE UNIQUE INDEX referral_links_one_default ON referral_links (customer_id) WHERE is_default;
CREATE INDEX referral_links_customer_idx ON referral_links (customer_id);

CREATE INDEX referral_clicks_link_idx ON referral_clicks (link_id, created_at);
-- The dashboard's referral funnel counts clicks over a date range.
CREATE INDEX referral_clicks_created_idx ON referral_clicks (created_at);

-- A token's name, case aside, names one of the program's live tokens; a revoked token
-- keeps its name and the name may be given again.
CREATE UNIQUE INDEX api_tokens_live_name ON api_tokens (program_id, lower(name)) WHERE revoked_at IS NULL;

CREATE INDEX balance_transactions_customer_idx ON balance_transactions (customer_id, created_at DESC, id DESC);
CREATE INDEX balance_transactions_program_idx ON balance_transactions (program_id, created_at);
-- The dashboard's credits per unit: index-only, already grouped by unit.
CREATE INDEX balance_transactions_credits_idx ON balance_transactions (program_id, amount_units, is_currency)
    INCLUDE (amount) WHERE kind = 'credit';

CREATE INDEX invites_program_idx ON invites (program_id, created_at DESC);
CREATE INDEX invites_customer_idx ON invites (customer_id, created_at DESC) WHERE customer_id IS NOT NULL;
CREATE INDEX invites_status_idx ON invites (program_id, status);
-- One pending invite per address and program.
CREATE UNIQUE INDEX invites_pending_key ON invites (program_id, lower(email)) WHERE status = 'queued';

CREATE INDEX mail_outbox_due_idx ON mail_outbox (next_attempt_at) WHERE status = 'queued';

CREATE INDEX audit_events_program_idx ON audit_events (program_id, created_at DESC, id DESC);
-- The activity panel's 50 newest events of a customer, in the order shown (ties by id)
-- straight from the index, rather than every event of the customer sorted.
CREATE INDEX audit_events_customer_idx ON audit_events (customer_id, created_at DESC, id DESC)
    WHERE customer_id IS NOT NULL;
-- Only members' events: those of tokens and of the system are never looked up by member.
CREATE INDEX audit_events_member_idx ON audit_events (actor_member_id, created_at DESC)
    WHERE actor_member_id IS NOT NULL;
-- The program-less events (sign-ins, team changes) shown alongside every program's log.
CREATE INDEX audit_events_global_idx ON audit_events (created_at DESC, id DESC)
    WHERE program_id IS NULL;
-- When a customer's data was erased (the page's notice), from the few erasure events
-- rather than by reading every event of the customer.
CREATE INDEX audit_events_erasures_idx ON audit_events (customer_id, created_at)
    WHERE action = 'customer.erase';
-- A referrer's timeline shows the referrals moved away from them: the referrer changes
-- whose "before" names them, by program and key. Partial, so it holds only referrer
-- changes; the query writes the action into its SQL (`timeline::LeftReferrer`) so that a
-- cached statement's generic plan can use it.
CREATE INDEX audit_events_referrer_left_idx
    ON audit_events (program_id, (before ->> 'referring_customer'), created_at DESC, id DESC)
    WHERE action = 'customer.change_referrer';

CREATE INDEX transactions_program_idx ON transactions (program_id, created_at DESC, id DESC);
CREATE INDEX transactions_customer_idx ON transactions (customer_id, created_at DESC, id DESC);

CREATE INDEX reward_rules_program_idx ON reward_rules (program_id, trigger) WHERE enabled;

-- The review queue: oldest first per status, or of every status.
CREATE INDEX rewards_queue_idx ON rewards (program_id, status, created_at, id);
CREATE INDEX rewards_program_created_idx ON rewards (program_id, created_at, id);
CREATE INDEX rewards_flagged_idx ON rewards (program_id, created_at, id) WHERE flags <> '{}';
CREATE INDEX rewards_owed_idx ON rewards (program_id, created_at, id) WHERE reversal = 'owed';
CREATE INDEX rewards_beneficiary_idx ON rewards (beneficiary_id, created_at DESC, id DESC);
-- The customer page's reward panels read a customer's rewards per role (earned as referrer,
-- as friend), newest first, and count them: with the role in the index, a top referrer's
-- thousands of referrer rewards are not read to find that none was earned as a friend.
CREATE INDEX rewards_beneficiary_role_idx ON rewards (beneficiary_id, role, created_at DESC, id DESC);
CREATE INDEX rewards_transaction_idx ON rewards (transaction_id) WHERE transaction_id IS NOT NULL;
CREATE INDEX rewards_friend_idx ON rewards (friend_id, rule_id);
-- Limits per referrer (in all, per month) read a rule's rewards of one referrer.
CREATE INDEX rewards_rule_referrer_idx ON rewards (rule_id, referrer_id, created_at);
-- The hold release: what falls due, oldest first.
CREATE INDEX rewards_due_idx ON rewards (hold_until, id) WHERE status IN ('pending', 'approved');
-- The hold release claims only what it will credit: approved rewards, and pending ones that
-- need no manual approval. Due rewards that wait for a reviewer stay out of this index, so
-- a long review queue does not slow every release pass.
CREATE INDEX rewards_release_idx ON rewards (hold_until, id)
    WHERE status = 'approved' OR (status = 'pending' AND NOT needs_approval);
-- The dashboard's referral funnel counts credited rewards over a date range.
CREATE INDEX rewards_credited_idx ON rewards (program_id, credited_at) WHERE status = 'credited';

CREATE INDEX webhook_subscriptions_program_idx ON webhook_subscriptions (program_id, id);
CREATE INDEX webhook_events_created_idx ON webhook_events (created_at);
-- The delivery worker claims due deliveries in (next_attempt_at, id) order. A burst of
-- events queued by one statement shares one next_attempt_at: with the id in the index a
-- claim reads only the rows it takes instead of sorting the whole burst.
CREATE INDEX webhook_deliveries_due_order_idx ON webhook_deliveries (next_attempt_at, id)
    WHERE status = 'pending';
CREATE INDEX webhook_deliveries_claimed_idx ON webhook_deliveries (subscription_id, claimed_until)
    WHERE status = 'pending' AND claimed_until IS NOT NULL;
CREATE INDEX webhook_deliveries_failed_idx ON webhook_deliveries (subscription_id, updated_at)
    WHERE status = 'failed';
CREATE INDEX webhook_deliveries_finished_idx ON webhook_deliveries (updated_at) WHERE status <> 'pending';
-- The delivery log pages by id within a subscription, and by customer.
CREATE INDEX webhook_attempts_log_idx ON webhook_attempts (subscription_id, id DESC);
CREATE INDEX webhook_attempts_event_idx ON webhook_attempts (subscription_id, event, id DESC);
CREATE INDEX webhook_attempts_outcome_idx ON webhook_attempts (subscription_id, outcome, id DESC);
CREATE INDEX webhook_attempts_customer_idx ON webhook_attempts (customer_id, id DESC)
    WHERE customer_id IS NOT NULL;
CREATE INDEX webhook_attempts_delivery_idx ON webhook_attempts (delivery_id);
CREATE INDEX webhook_attempts_time_idx ON webhook_attempts (attempted_at);

-- The worker's claim reads only unfinished jobs.
CREATE INDEX jobs_unfinished_idx ON jobs (id) WHERE status IN ('queued', 'running');
-- The program's recent jobs, newest first.
CREATE INDEX jobs_program_idx ON jobs (program_id, id DESC);
CREATE INDEX job_skipped_rows_job_idx ON job_skipped_rows (job_id, id);

CREATE INDEX customer_imports_program_idx ON customer_imports (program_id, id DESC);
CREATE INDEX customer_imports_job_idx ON customer_imports (job_id) WHERE job_id IS NOT NULL;

CREATE INDEX rate_windows_start_idx ON rate_windows (window_start);

------------------------------------------------------------------------------------------
-- Triggers
------------------------------------------------------------------------------------------

-- On customers: they keep customer_tallies and referral_standings exact.

CREATE TRIGGER customers_counted_insert AFTER INSERT ON customers
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION customers_counted();
CREATE TRIGGER customers_counted_delete AFTER DELETE ON customers
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION customers_counted();
-- The WHEN clauses let the many updates that change nothing counted (names, emails)
-- skip the function call.
CREATE TRIGGER customer_tallies_update AFTER UPDATE OF program_id, status, referrer_id ON customers
    FOR EACH ROW
    WHEN (OLD.program_id IS DISTINCT FROM NEW.program_id
          OR OLD.status IS DISTINCT FROM NEW.status
          OR (OLD.referrer_id IS NULL) <> (NEW.referrer_id IS NULL))
    EXECUTE FUNCTION customer_tallies_move();
CREATE TRIGGER customer_tallies_reordered AFTER UPDATE OF created_at ON customers
    FOR EACH ROW
    WHEN (OLD.created_at IS DISTINCT FROM NEW.created_at)
    EXECUTE FUNCTION customer_tallies_reordered();
CREATE TRIGGER referral_standings_update
    AFTER UPDATE OF id, program_id, status, referrals_count, referrer_id, approved ON customers
    FOR EACH ROW
    WHEN (OLD.id IS DISTINCT FROM NEW.id
          OR OLD.program_id IS DISTINCT FROM NEW.program_id
          OR OLD.status IS DISTINCT FROM NEW.status
          OR OLD.referrals_count IS DISTINCT FROM NEW.referrals_count
          OR OLD.referrer_id IS DISTINCT FROM NEW.referrer_id
          OR OLD.approved IS DISTINCT FROM NEW.approved)
    EXECUTE FUNCTION referral_standings_move();
CREATE TRIGGER customers_truncated AFTER TRUNCATE ON customers
    FOR EACH STATEMENT EXECUTE FUNCTION customers_truncated();

-- On balance_transactions: they keep customer_balances exact. (PostgreSQL allows
-- transition tables only on single-event triggers: one trigger each.)
CREATE TRIGGER customer_balances_insert AFTER INSERT ON balance_transactions
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION customer_balances_keep();
CREATE TRIGGER customer_balances_update AFTER UPDATE ON balance_transactions
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION customer_balances_keep();
CREATE TRIGGER customer_balances_delete AFTER DELETE ON balance_transactions
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION customer_balances_keep();
CREATE TRIGGER customer_balances_truncated AFTER TRUNCATE ON balance_transactions
    FOR EACH STATEMENT EXECUTE FUNCTION customer_balances_truncated();

-- On rewards: they keep reward_tallies exact.
CREATE TRIGGER rewards_tallied_insert AFTER INSERT ON rewards
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION rewards_tallied_insert();
CREATE TRIGGER rewards_tallied_update AFTER UPDATE ON rewards
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION rewards_tallied_update();
CREATE TRIGGER rewards_tallied_delete AFTER DELETE ON rewards
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION rewards_tallied_delete();
CREATE TRIGGER rewards_tallied_truncate AFTER TRUNCATE ON rewards
    FOR EACH STATEMENT EXECUTE FUNCTION rewards_tallied_truncate();

-- Wake-ups: work queued for a background worker notifies its channel, so every path that
-- queues work, present or future, announces it (`db::listener`).
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
CREATE TRIGGER rewards_added AFTER INSERT ON rewards
    REFERENCING NEW TABLE AS added
    FOR EACH STATEMENT EXECUTE FUNCTION rewards_notify_added();
-- Jobs: a new job queued for the background (polling stays as a slower fallback for
-- expired leases).
CREATE TRIGGER jobs_queued AFTER INSERT ON jobs
    REFERENCING NEW TABLE AS added
    FOR EACH STATEMENT EXECUTE FUNCTION referdesk_notify_added('referdesk_jobs');

------------------------------------------------------------------------------------------
-- Initial rows
------------------------------------------------------------------------------------------

INSERT INTO maintenance_runs (task) VALUES ('prune');

-- Statistics from the start (empty ones included), so the planner does not guess sizes
-- for the tables the list and the balances read.
ANALYZE customers;
ANALYZE referral_standings;
ANALYZE customer_balances;
