DROP TABLE job_skipped_rows;
DROP TABLE jobs;
