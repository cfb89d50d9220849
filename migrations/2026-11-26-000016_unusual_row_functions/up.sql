-- Planning a search without reading every statistic's values through a regex.
--
-- A search term with a character plain ids (names) never hold is looked up in the few rows
-- the partial indexes `customers_unusual_id_idx` / `customers_unusual_name_idx` list
-- (see `search_arms` in src/domain/customers/listing.rs). Their predicates were regexes,
-- written out in every such search: to estimate how many rows a regex keeps, PostgreSQL
-- runs it over the column's (or the expression's) statistics sample on every planning —
-- 0.15 ms per arm, more than half of planning a partial email search (0.55 ms, planned
-- per call because the term decides the plan).
--
-- The same tests as functions, used as `f(...) IS TRUE` in the index predicates and in the
-- searches: PostgreSQL estimates such a test from the function's statistics (below) by
-- looking up `true` among their most common values, and proves the partial index usable by
-- comparing the two expressions. PL/pgSQL, so the planner never inlines them back into a
-- regex. They must agree with `is_plain_id_char` / `is_plain_name_char` in listing.rs.
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

DROP INDEX customers_unusual_id_idx;
DROP INDEX customers_unusual_name_idx;
DROP STATISTICS customers_name_chars;
CREATE INDEX customers_unusual_id_idx ON customers (program_id)
    WHERE customer_id_is_unusual(external_id) IS TRUE;
CREATE INDEX customers_unusual_name_idx ON customers (program_id)
    WHERE customer_name_is_unusual(name, surname) IS TRUE;
-- Without these the planner guesses that half the rows are unusual and reads the trigram
-- index instead of the short partial one.
CREATE STATISTICS customers_unusual_id ON (customer_id_is_unusual(external_id)) FROM customers;
CREATE STATISTICS customers_unusual_name ON (customer_name_is_unusual(name, surname)) FROM customers;
ANALYZE customers;
