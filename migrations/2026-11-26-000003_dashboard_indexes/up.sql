-- Indexes that keep the dashboard and the audit log fast at a million customers: each
-- dashboard figure comes from one aggregate that PostgreSQL can answer from an index
-- (index-only scans) instead of visiting every customer row of every program.

-- All customer figures (active, referred, approved, new and referred per period) are
-- computed in ONE pass over a program's active customers; this covering index lets that
-- pass, and the 90-day chart's date range, read only the program's own index entries.
CREATE INDEX customers_dashboard_idx ON customers (program_id, status, created_at)
    INCLUDE (referrer_id, approved);

-- Credits issued per unit: an index-only scan, already grouped by unit.
CREATE INDEX balance_transactions_credits_idx ON balance_transactions (program_id, amount_units, is_currency)
    INCLUDE (amount) WHERE kind = 'credit';

-- Invites sent.
CREATE INDEX invites_status_idx ON invites (program_id, status);

-- The audit log shows a program's events together with the program-less ones (sign-ins,
-- team changes); the latter need their own ordered index.
CREATE INDEX audit_events_global_idx ON audit_events (created_at DESC, id DESC)
    WHERE program_id IS NULL;
