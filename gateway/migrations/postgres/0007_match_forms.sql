-- Each blocking key carries its record's matching form (the normalised fields the matcher
-- compares, `Record::form`), and the primary key's index includes it: a search reads its
-- candidates with an index-only scan of the keys it blocks on, instead of fetching and
-- re-normalising every candidate's source record. The keys are derived again from
-- `source_records` on the next start (`Matcher::rebuild`), with the name counts.
TRUNCATE match_keys;
ALTER TABLE match_keys ADD COLUMN form TEXT NOT NULL;
ALTER TABLE match_keys DROP CONSTRAINT match_keys_pkey;
ALTER TABLE match_keys ADD PRIMARY KEY (rule, key, source, local_id) INCLUDE (form);
DELETE FROM match_terms WHERE comparison = '_counted';
