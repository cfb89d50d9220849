-- Indexes that keep the dashboard and the audit log fast at a million customers. Each
-- dashboard figure is one aggregate that PostgreSQL answers from an index (mostly an
-- index-only scan) instead of reading the customers table.

-- Referred customers: the "share referred" total, referrals this week/month and the
-- 90-day referrals chart are range scans over this small partial index.
CREATE INDEX customers_referred_created_idx ON customers (program_id, status, created_at)
    WHERE referrer_id IS NOT NULL;

-- Unapproved customers are few; the approved share is active minus these.
CREATE INDEX customers_unapproved_idx ON customers (program_id, status)
    WHERE NOT approved;

-- Credits issued per unit: an index-only scan, already grouped by unit.
CREATE INDEX balance_transactions_credits_idx ON balance_transactions (program_id, amount_units, is_currency)
    INCLUDE (amount) WHERE kind = 'credit';

-- Invites sent.
CREATE INDEX invites_status_idx ON invites (program_id, status);

-- The audit log shows a program's events together with the program-less ones (sign-ins,
-- team changes); the latter need their own ordered index.
CREATE INDEX audit_events_global_idx ON audit_events (created_at DESC, id DESC)
    WHERE program_id IS NULL;
