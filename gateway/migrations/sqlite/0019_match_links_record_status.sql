-- A record's active link (and its open proposal) is looked up by source, local id and status.
-- Without statistics (SQLite never has them unless ANALYZE runs) SQLite's planner chose the
-- index on status alone for those lookups, so each one scanned every active link: an export of
-- the index, and each incremental placement, grew with the square of the index. With the status
-- in the record's index every such lookup is one index range on either store.
DROP INDEX match_links_record;
CREATE INDEX match_links_record ON match_links (source, local_id, status);
