-- Events written by an API token or by the system name no team member, and every signup
-- through the API writes one: those rows took an entry in this index that no query can
-- use (the audit log's member filter and the foreign key's check both look for one
-- member, `actor_member_id = $1`, which implies IS NOT NULL). Only members' events now.
DROP INDEX audit_events_member_idx;
CREATE INDEX audit_events_member_idx ON audit_events (actor_member_id, created_at DESC)
    WHERE actor_member_id IS NOT NULL;
