ALTER INDEX customers_email_trgm RESET (gin_pending_list_limit);
ALTER INDEX customers_name_trgm RESET (gin_pending_list_limit);
ALTER INDEX customers_key_trgm RESET (gin_pending_list_limit);
ALTER INDEX customers_external_id_trgm RESET (gin_pending_list_limit);
