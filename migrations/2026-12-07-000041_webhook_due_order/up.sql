-- The delivery worker claims due deliveries in (next_attempt_at, id) order. A burst of
-- events queued by one statement shares one next_attempt_at, so an index on the time alone
-- made every claim sort the whole burst to find its first few rows; with the id in the
-- index a claim reads only the rows it takes.
CREATE INDEX webhook_deliveries_due_order_idx ON webhook_deliveries (next_attempt_at, id)
    WHERE status = 'pending';
DROP INDEX webhook_deliveries_due_idx;
