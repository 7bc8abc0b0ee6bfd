-- A record's blocking keys are looked up by the record only to replace them
-- (`Matcher::write_keys`): an equality lookup, which a hash index on the local id answers as the
-- B-tree on (source, local_id) did, the source checked on the few rows it finds. The B-tree
-- took every key of a bulk write at a random place (the bulk path writes keys in the primary
-- key's order), a descent and text comparisons each: on 100,000 records it was more than half
-- of what writing their 700,000 keys cost PostgreSQL. A hash index puts each entry straight
-- into its bucket.
DROP INDEX match_keys_record;
CREATE INDEX match_keys_record ON match_keys USING hash (local_id);
