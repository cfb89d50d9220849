ALTER TABLE referral_links DROP CONSTRAINT referral_links_default_not_deleted;
ALTER TABLE referral_links DROP COLUMN deleted_at;
DROP INDEX customers_email_sort_idx;
DROP INDEX customers_name_sort_idx;
DROP INDEX customers_external_id_trgm;
DROP INDEX customers_key_trgm;
