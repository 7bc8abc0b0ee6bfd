-- The area report (`read::area::data`) looks up the child of each of 100,000 pupils' records by
-- source and local id. Through the primary key's index each look-up then reads the record's row
-- in the table, a second B-tree descent to a page elsewhere in the file; with the child in the
-- index the look-up ends there. SQLite's planner prefers the primary key's index for an
-- equality on the whole key, so the report names this one (`INDEXED BY`). PostgreSQL reads the
-- same join as one hash join over both tables and has no use for it.
CREATE INDEX source_records_child_of ON source_records (source, local_id, child_id);
