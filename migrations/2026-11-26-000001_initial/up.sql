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
CREATE INDEX audit_events_customer_idx ON audit_events (customer_id, created_at DESC) WHERE customer_id IS NOT NULL;
-- Only members' events: those of tokens and of the system are never looked up by member.
CREATE INDEX audit_events_member_idx ON audit_events (actor_member_id, created_at DESC)
    WHERE actor_member_id IS NOT NULL;
-- The program-less events (sign-ins, team changes) shown alongside every program's log.
CREATE INDEX audit_events_global_idx ON audit_events (created_at DESC, id DESC)
    WHERE program_id IS NULL;

------------------------------------------------------------------------------------------
-- Triggers (all on customers: they keep customer_tallies and referral_standings exact)
------------------------------------------------------------------------------------------

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

------------------------------------------------------------------------------------------
-- Initial rows
------------------------------------------------------------------------------------------

INSERT INTO maintenance_runs (task) VALUES ('prune');

-- Statistics from the start (empty ones included), so the planner does not guess sizes
-- for the tables the list reads.
ANALYZE customers;
ANALYZE referral_standings;
