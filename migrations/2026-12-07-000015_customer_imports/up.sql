-- Dashboard imports of customers: the uploaded file kept between the steps (map the
-- columns, dry run, import), the choices made, and the last report (its refused rows are
-- downloadable). `status` goes uploaded → importing → imported exactly once: the import
-- form sent twice (a double click, a reload) imports once.
CREATE TABLE customer_imports (
    id BIGSERIAL PRIMARY KEY,
    program_id BIGINT NOT NULL REFERENCES programs (id),
    member_id BIGINT REFERENCES team_members (id),
    file_name TEXT NOT NULL CHECK (length(file_name) <= 255),
    content BYTEA NOT NULL,
    mapping JSONB,
    mode TEXT NOT NULL DEFAULT 'create'
        CHECK (mode IN ('create', 'upsert_key', 'upsert_id', 'upsert_email')),
    policy TEXT NOT NULL DEFAULT 'all_or_nothing' CHECK (policy IN ('all_or_nothing', 'valid_rows')),
    status TEXT NOT NULL DEFAULT 'uploaded' CHECK (status IN ('uploaded', 'importing', 'imported', 'failed')),
    report JSONB,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    finished_at TIMESTAMPTZ
);

CREATE INDEX customer_imports_program_idx ON customer_imports (program_id, id DESC);
