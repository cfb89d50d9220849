DROP INDEX audit_events_customer_idx;
CREATE INDEX audit_events_customer_idx ON audit_events (customer_id, created_at DESC) WHERE customer_id IS NOT NULL;
DROP TRIGGER customer_balances_truncated ON balance_transactions;
DROP TRIGGER customer_balances_delete ON balance_transactions;
DROP TRIGGER customer_balances_update ON balance_transactions;
DROP TRIGGER customer_balances_insert ON balance_transactions;
DROP FUNCTION customer_balances_truncated();
DROP FUNCTION customer_balances_keep();
DROP TABLE customer_balances;
