DROP INDEX audit_events_member_idx;
CREATE INDEX audit_events_member_idx ON audit_events (actor_member_id, created_at DESC);
