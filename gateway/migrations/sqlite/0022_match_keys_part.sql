-- Each blocking key carries the part its rule's large blocks are split by (the given name's
-- initial, the family name's initial or the birth year: `Split` in the matcher), as the third
-- column of the primary key: a search in a split block reads one range of the table for the
-- record's part and one for records without it, instead of every row of the whole block with
-- the part computed from the form row by row. The keys are derived again on the next start
-- (`Matcher::rebuild`, whose version this schema goes with).
DROP TABLE match_keys;
CREATE TABLE match_keys (
    rule     TEXT NOT NULL,
    key      TEXT NOT NULL,
    part     TEXT NOT NULL,
    source   TEXT NOT NULL,
    local_id TEXT NOT NULL,
    form     TEXT NOT NULL,
    PRIMARY KEY (rule, key, part, source, local_id)
) WITHOUT ROWID;
CREATE INDEX match_keys_record ON match_keys (source, local_id);
