-- Rewards: transactions posted by the program's backend, reward rules, and the rewards they
-- fire, with their review life (SPEC §3.1). As in the initial schema, the invariants are
-- constraints: a rule fires once per (rule, beneficiary, event) whichever code path tries.

------------------------------------------------------------------------------------------
-- Program settings for rewards
------------------------------------------------------------------------------------------

ALTER TABLE programs
    -- Fraud signal: a referrer with more new referrals than this in the last hour has
    -- their rewards held for review.
    ADD COLUMN rewards_max_referrals_per_hour INTEGER NOT NULL DEFAULT 20
        CHECK (rewards_max_referrals_per_hour BETWEEN 1 AND 100000),
    -- Support members may approve rewards up to this amount; larger ones need an admin.
    -- NULL: no threshold.
    ADD COLUMN rewards_support_approval_limit NUMERIC(20, 4)
        CHECK (rewards_support_approval_limit IS NULL OR rewards_support_approval_limit >= 0);

------------------------------------------------------------------------------------------
-- Tables
------------------------------------------------------------------------------------------

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

------------------------------------------------------------------------------------------
-- Indexes
------------------------------------------------------------------------------------------

CREATE INDEX transactions_program_idx ON transactions (program_id, created_at DESC, id DESC);
CREATE INDEX transactions_customer_idx ON transactions (customer_id, created_at DESC, id DESC);
CREATE INDEX reward_rules_program_idx ON reward_rules (program_id, trigger) WHERE enabled;
-- The review queue: oldest first per status.
CREATE INDEX rewards_queue_idx ON rewards (program_id, status, created_at, id);
CREATE INDEX rewards_flagged_idx ON rewards (program_id, created_at, id) WHERE flags <> '{}';
CREATE INDEX rewards_owed_idx ON rewards (program_id, created_at, id) WHERE reversal = 'owed';
CREATE INDEX rewards_beneficiary_idx ON rewards (beneficiary_id, created_at DESC, id DESC);
CREATE INDEX rewards_transaction_idx ON rewards (transaction_id) WHERE transaction_id IS NOT NULL;
CREATE INDEX rewards_friend_idx ON rewards (friend_id, rule_id);
-- Limits per referrer (in all, per month) read a rule's rewards of one referrer.
CREATE INDEX rewards_rule_referrer_idx ON rewards (rule_id, referrer_id, created_at);
-- The hold release: what falls due, oldest first.
CREATE INDEX rewards_due_idx ON rewards (hold_until, id) WHERE status IN ('pending', 'approved');
