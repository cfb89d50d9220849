DROP INDEX IF EXISTS audit_events_global_idx;
DROP INDEX IF EXISTS invites_status_idx;
DROP INDEX IF EXISTS balance_transactions_credits_idx;
DROP INDEX IF EXISTS customers_dashboard_idx;
