-- Customer search covers key and id as well as email and name, case-insensitively and by
-- partial match; these trigram indexes serve `lower(key) LIKE '%…%'` like the existing ones
-- serve email and name.
CREATE INDEX customers_key_trgm ON customers USING gin (lower(key) gin_trgm_ops);
CREATE INDEX customers_external_id_trgm ON customers USING gin (lower(external_id) gin_trgm_ops);

-- Sorting the list by name (the same expression the name search uses) and by email
-- without sorting the whole program.
CREATE INDEX customers_name_sort_idx
    ON customers (program_id, lower(coalesce(name, '') || ' ' || coalesce(surname, '')), id);
CREATE INDEX customers_email_sort_idx ON customers (program_id, lower(email), id);

-- Extra referral links are retired rather than deleted: their clicks stay, and their code
-- is never handed to someone else (an old shared link must not start crediting another
-- customer).
ALTER TABLE referral_links ADD COLUMN deleted_at TIMESTAMPTZ;
ALTER TABLE referral_links ADD CONSTRAINT referral_links_default_not_deleted
    CHECK (NOT (is_default AND deleted_at IS NOT NULL));
