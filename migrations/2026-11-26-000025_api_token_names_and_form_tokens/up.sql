-- A token's name says which system uses it, so among a program's live tokens it names one
-- (case aside). A revoked token keeps its name, and the name may be given again.
-- Live duplicates from before get their id appended, the oldest keeping the name.
UPDATE api_tokens AS t
SET name = left(t.name, 80) || ' (' || t.id || ')'
WHERE t.revoked_at IS NULL
  AND EXISTS (
    SELECT 1 FROM api_tokens AS older
    WHERE older.program_id = t.program_id
      AND older.revoked_at IS NULL
      AND lower(older.name) = lower(t.name)
      AND older.id < t.id
  );
CREATE UNIQUE INDEX api_tokens_live_name ON api_tokens (program_id, lower(name)) WHERE revoked_at IS NULL;

-- The one-time token of the form that created it: the same form sent twice (a reload, a
-- double click) creates one token.
ALTER TABLE api_tokens ADD COLUMN form_token UUID;
ALTER TABLE api_tokens ADD CONSTRAINT api_tokens_form_token_key UNIQUE (form_token);
