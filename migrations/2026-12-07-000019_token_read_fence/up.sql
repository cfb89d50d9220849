-- Read-your-writes for API tokens with replicas (REFERDESK_REPLICA_URL): the primary's
-- write-ahead log position after the token's last write. The token's reads go to a
-- replica only once it has replayed past it. Kept here, not in a process's memory, so
-- that every server process behind a load balancer honours it. Never set without replicas.
ALTER TABLE api_tokens ADD COLUMN read_after_lsn BIGINT;
