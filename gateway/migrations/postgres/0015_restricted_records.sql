-- Whether the source marks a record restricted (NHS R/V, a refuge, a protected address): 1 or 0,
-- written whenever the record is indexed or re-indexed, so a lifted restriction is cleared by the
-- next pass. A child is restricted while any record linked to it is (derived through
-- `source_records.child_id`, so a split or a merge carries it with the records). The index then
-- holds back a restricted child's location where it shows one before any source is asked: a
-- search's postcode district, the review queue's addresses.
ALTER TABLE source_records ADD COLUMN restricted BIGINT NOT NULL DEFAULT 0;
