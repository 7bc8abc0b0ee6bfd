-- `source_records.match_key` (family name, given name and date of birth, normalised) was the
-- first matcher's exact key. Nothing has read it since records were matched by blocking keys
-- and scores, yet every write of a record computed it and kept its index up to date: about a
-- tenth of what PostgreSQL spent writing a census's records into the index.
DROP INDEX source_records_match_key;
ALTER TABLE source_records DROP COLUMN match_key;
-- Links are looked up by status alone only for the few a person has to see or has decided:
-- the review queue (`review`) and the pairings never to propose again (`rejected`, `split`).
-- An active or superseded link is found by its record or its child. Indexing every link's
-- status put each of a census's links into an index of one value.
DROP INDEX match_links_status;
CREATE INDEX match_links_status ON match_links (status)
    WHERE status IN ('review', 'rejected', 'split');
