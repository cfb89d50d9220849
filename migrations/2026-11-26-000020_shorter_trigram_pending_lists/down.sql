ALTER INDEX customers_email_trgm SET (gin_pending_list_limit = 1024);
ALTER INDEX customers_name_trgm SET (gin_pending_list_limit = 1024);
ALTER INDEX customers_key_trgm SET (gin_pending_list_limit = 1024);
ALTER INDEX customers_external_id_trgm SET (gin_pending_list_limit = 1024);
