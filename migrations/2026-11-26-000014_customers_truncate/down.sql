DROP TRIGGER customers_truncated ON customers;
DROP FUNCTION customers_truncated();
