-- Each blocking key carries its record's matching form (the normalised fields the matcher
-- compares, `Record::form`), in a table stored in key order (WITHOUT ROWID): a search reads
-- its candidates from the few pages holding the keys it blocks on, instead of fetching and
-- re-normalising every candidate's source record. The keys are derived again from
-- `source_records` on the next start (`Matcher::rebuild`), with the name counts.
DROP TABLE match_keys;
CREATE TABLE match_keys (
    rule     TEXT NOT NULL,
    key      TEXT NOT NULL,
    source   TEXT NOT NULL,
    local_id TEXT NOT NULL,
    form     TEXT NOT NULL,
    PRIMARY KEY (rule, key, source, local_id)
) WITHOUT ROWID;
CREATE INDEX match_keys_record ON match_keys (source, local_id);
DELETE FROM match_terms WHERE comparison = '_counted';
