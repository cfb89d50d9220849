-- The review side of rewards (SPEC §3.1): indexes for the hold release and the queue.

-- The hold release claims only what it will credit: approved rewards, and pending ones that
-- need no manual approval. Due rewards that wait for a reviewer stay out of this index, so
-- a long review queue does not slow every release pass.
CREATE INDEX rewards_release_idx ON rewards (hold_until, id)
    WHERE status = 'approved' OR (status = 'pending' AND NOT needs_approval);

-- The queue without a status filter: every reward of the program, oldest first.
CREATE INDEX rewards_program_created_idx ON rewards (program_id, created_at, id);
