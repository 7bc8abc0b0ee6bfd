-- Each blocking key carries the part its rule's large blocks are split by (the given name's
-- initial, the family name's initial or the birth year: `Split` in the matcher), as the third
-- column of the primary key: a search in a split block reads one range of the index for the
-- record's part and one for records without it, instead of every entry of the whole block
-- with the part computed from the form row by row. The keys are derived again on the next
-- start (`Matcher::rebuild`, whose version this schema goes with).
TRUNCATE match_keys;
ALTER TABLE match_keys ADD COLUMN part TEXT NOT NULL;
ALTER TABLE match_keys DROP CONSTRAINT match_keys_pkey;
ALTER TABLE match_keys ADD PRIMARY KEY (rule, key, part, source, local_id) INCLUDE (form);
