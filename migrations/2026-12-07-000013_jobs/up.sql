-- Background jobs: long actions (bulk actions on customers, imports) that run in batches
-- inside the server, survive a restart and run once across several server processes.
-- A worker claims a job by taking its lease (`lease_owner`, `lease_until`) under
-- `FOR UPDATE SKIP LOCKED`; each batch commits its changes together with the counts and
-- the cursor it reached, so a resumed job continues after the last committed row.
CREATE TABLE jobs (
    id BIGSERIAL PRIMARY KEY,
    program_id BIGINT NOT NULL REFERENCES programs (id),
    -- The closed set of kinds (`domain::jobs::JobKind`); a new kind replaces this named
    -- constraint in its own migration.
    kind TEXT NOT NULL CONSTRAINT jobs_kind_check CHECK (kind IN (
        'customers.approve', 'customers.unapprove', 'customers.delete', 'customers.restore',
        'customers.invite', 'customers.credit'
    )),
    status TEXT NOT NULL DEFAULT 'queued'
        CHECK (status IN ('queued', 'running', 'done', 'failed', 'cancelled')),
    -- Who started it, as the audit log names them.
    actor_member_id BIGINT REFERENCES team_members (id),
    actor_label TEXT NOT NULL,
    actor_address TEXT,
    params JSONB NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(params) = 'object'),
    -- The one-time token of the form that started it: a form sent twice starts one job.
    form_token UUID,
    total BIGINT NOT NULL DEFAULT 0 CHECK (total >= 0),
    done BIGINT NOT NULL DEFAULT 0 CHECK (done >= 0),
    skipped BIGINT NOT NULL DEFAULT 0 CHECK (skipped >= 0),
    -- Where the next batch starts; its shape belongs to the kind.
    cursor JSONB,
    lease_owner TEXT,
    lease_until TIMESTAMPTZ,
    -- Batches that failed in a row; reset by a batch that commits.
    failures INT NOT NULL DEFAULT 0 CHECK (failures >= 0),
    last_error TEXT,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    started_at TIMESTAMPTZ,
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    finished_at TIMESTAMPTZ,
    UNIQUE (program_id, form_token),
    CHECK ((status IN ('done', 'failed', 'cancelled')) = (finished_at IS NOT NULL))
);

-- The worker's claim reads only unfinished jobs.
CREATE INDEX jobs_unfinished_idx ON jobs (id) WHERE status IN ('queued', 'running');
-- The program's recent jobs, newest first.
CREATE INDEX jobs_program_idx ON jobs (program_id, id DESC);

-- The rows a job left alone, and why: shown on the job page and downloadable as CSV.
CREATE TABLE job_skipped_rows (
    id BIGSERIAL PRIMARY KEY,
    job_id BIGINT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    -- The line of an imported file, when the job reads one.
    line BIGINT,
    customer_key TEXT,
    email TEXT,
    reason TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE INDEX job_skipped_rows_job_idx ON job_skipped_rows (job_id, id);
