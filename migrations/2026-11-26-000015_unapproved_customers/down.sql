DROP INDEX customers_unapproved_idx;
