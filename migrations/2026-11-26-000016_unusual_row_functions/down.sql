DROP STATISTICS customers_unusual_id;
DROP STATISTICS customers_unusual_name;
DROP INDEX customers_unusual_id_idx;
DROP INDEX customers_unusual_name_idx;
CREATE INDEX customers_unusual_name_idx ON customers (program_id)
    WHERE (coalesce(name, '') || coalesce(surname, '')) ~ '[^A-Za-z ''-]';
CREATE INDEX customers_unusual_id_idx ON customers (program_id)
    WHERE external_id ~ '[^A-Za-z0-9_-]';
CREATE STATISTICS customers_name_chars ON ((coalesce(name, '') || coalesce(surname, ''))) FROM customers;
DROP FUNCTION customer_id_is_unusual(TEXT);
DROP FUNCTION customer_name_is_unusual(TEXT, TEXT);
ANALYZE customers;
