-- The dashboard's imports run as background jobs (kind 'customers.import'): the upload
-- names the job that imports it, and a job that works in one long transaction (an
-- import: all its rows or none) reports the phase it is in through `job_phases`.
ALTER TABLE jobs DROP CONSTRAINT jobs_kind_check;
ALTER TABLE jobs ADD CONSTRAINT jobs_kind_check CHECK (kind IN (
    'customers.approve', 'customers.unapprove', 'customers.delete', 'customers.restore',
    'customers.invite', 'customers.credit', 'customers.import'
));

-- The job that imports (or imported) the upload; the last one when it was tried again.
ALTER TABLE customer_imports ADD COLUMN job_id BIGINT REFERENCES jobs (id);
CREATE INDEX customer_imports_job_idx ON customer_imports (job_id) WHERE job_id IS NOT NULL;

-- Where a one-transaction job stands: its step, and the units of that step done so far.
-- Written on a connection of its own while the job's transaction is open (its changes
-- are not visible until it commits), so the row is inserted with the job and only ever
-- updated afterwards: an update that keeps `job_id` needs no lock on the job's row, which
-- the running batch holds.
CREATE TABLE job_phases (
    job_id BIGINT PRIMARY KEY REFERENCES jobs (id) ON DELETE CASCADE,
    step INT NOT NULL DEFAULT 0 CHECK (step >= 0),
    steps INT NOT NULL DEFAULT 0 CHECK (steps >= 0),
    label TEXT NOT NULL,
    done BIGINT NOT NULL DEFAULT 0 CHECK (done >= 0),
    -- 0: the step's size is not known (one set-based statement).
    total BIGINT NOT NULL DEFAULT 0 CHECK (total >= 0),
    started_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
