-- Data-quality counts over time, one row per source and day (the last report taken that day):
-- what a data team watches fall as records are cleaned at source. Counts only, never a record.
CREATE TABLE quality_snapshots (
    day                 TEXT NOT NULL,
    source              TEXT NOT NULL,
    records             BIGINT NOT NULL,
    -- Records with at least one field that disagrees with another source's record of the child.
    disagreeing_records BIGINT NOT NULL,
    -- Field disagreements, counted once per record and field.
    disagreements       BIGINT NOT NULL,
    invalid_identifiers BIGINT NOT NULL,
    in_review           BIGINT NOT NULL,
    -- Pairs of this source's records that are likely the same child.
    duplicate_pairs     BIGINT NOT NULL,
    taken_at            TEXT NOT NULL,
    PRIMARY KEY (day, source)
);
