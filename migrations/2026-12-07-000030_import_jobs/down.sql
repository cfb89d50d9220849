DROP TABLE job_phases;
ALTER TABLE customer_imports DROP COLUMN job_id;
DELETE FROM jobs WHERE kind = 'customers.import';
ALTER TABLE jobs DROP CONSTRAINT jobs_kind_check;
ALTER TABLE jobs ADD CONSTRAINT jobs_kind_check CHECK (kind IN (
    'customers.approve', 'customers.unapprove', 'customers.delete', 'customers.restore',
    'customers.invite', 'customers.credit'
));
