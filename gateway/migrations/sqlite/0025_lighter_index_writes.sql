-- `source_records.match_key` (family name, given name and date of birth, normalised) was the
-- first matcher's exact key. Nothing has read it since records were matched by blocking keys
-- and scores, yet every write of a record computed it and kept its index up to date.
-- (The status index of `match_links` stays whole here: SQLite uses a partial index only for
-- queries that repeat its condition, and the review queue asks for one status.)
DROP INDEX source_records_match_key;
ALTER TABLE source_records DROP COLUMN match_key;
