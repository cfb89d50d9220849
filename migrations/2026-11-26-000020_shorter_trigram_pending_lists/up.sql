-- Shorter pending lists for the trigram indexes: 256 kB instead of 1 MB (migration 000013).
--
-- A search through a trigram index reads the index's whole pending list (the entries of
-- recent signups not yet merged into it) besides the posting lists it looks up. Measured
-- on the load test's database, a partial email search took 0.52 ms with 7 pending pages,
-- 0.64 ms with 45 and 0.86 ms with 109 (a 1 MB list is 128 pages): in the load test, the
-- partial search run after a round of API signups did 1,466 req/s instead of 1,670–1,840.
-- Autovacuum, which also merges the lists, reaches a large `customers` table only after
-- a fifth of its rows were added, so between merges a busy program's lists stay long and
-- a search by a plain word (which reads all four indexes) paid up to four of them.
-- A signup that overflows a list merges it; a quarter of the size means merges four times
-- as often, each a quarter as long.
ALTER INDEX customers_email_trgm SET (gin_pending_list_limit = 256);
ALTER INDEX customers_name_trgm SET (gin_pending_list_limit = 256);
ALTER INDEX customers_key_trgm SET (gin_pending_list_limit = 256);
ALTER INDEX customers_external_id_trgm SET (gin_pending_list_limit = 256);
