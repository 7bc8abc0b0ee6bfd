-- What the area report counts of each imported record (`read::area::facts`): derived when the
-- import writes the record, in the same transaction, so that a report reads one narrow row per
-- pupil instead of parsing every record's JSON. A record the report cannot read has no row.
CREATE TABLE area_facts (
    source     TEXT NOT NULL,
    local_id   TEXT NOT NULL,
    -- The `import_records` digest the facts were derived from.
    digest     TEXT NOT NULL,
    -- The URN the record names (`education.enrolment` / `school_urn`), if it names one.
    school     TEXT,
    -- As imported: the area is drawn when a report is read (districts, or the configured wards).
    postcode   TEXT,
    -- JSON [[year, term, possible sessions, attended sessions], …]: the academic year by its
    -- first calendar year, terms 1 autumn, 2 spring, 3 summer.
    attendance TEXT NOT NULL,
    -- JSON [[year, term, permanent], …]: suspensions (false) and permanent exclusions (true) by
    -- the term they started in.
    exclusions TEXT NOT NULL,
    -- Attendance rows whose term or sessions could not be read, counted nowhere.
    unplaced   BIGINT NOT NULL,
    PRIMARY KEY (source, local_id)
);

-- Sources with records imported before `area_facts` existed: the first report derives their
-- facts (`facts::backfill`) and takes the source off this list in the same transaction.
CREATE TABLE area_facts_pending (
    source TEXT PRIMARY KEY
);
INSERT INTO area_facts_pending (source) SELECT DISTINCT source FROM import_records;

-- Whoever changes or removes an imported record (an import, an erasure, a retention sweep),
-- its facts go with the old record in the same statement, so they are never stale: at worst
-- missing, until the writer derives the new ones (the import does, in its transaction).
CREATE FUNCTION area_facts_forget_removed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM area_facts f USING removed r
     WHERE f.source = r.source AND f.local_id = r.local_id;
    RETURN NULL;
END
$$;
CREATE TRIGGER import_records_removed AFTER DELETE ON import_records
    REFERENCING OLD TABLE AS removed
    FOR EACH STATEMENT EXECUTE FUNCTION area_facts_forget_removed();

CREATE FUNCTION area_facts_forget_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM area_facts WHERE source = OLD.source AND local_id = OLD.local_id;
    RETURN NULL;
END
$$;
CREATE TRIGGER import_records_changed AFTER UPDATE ON import_records
    FOR EACH ROW
    WHEN (OLD.digest IS DISTINCT FROM NEW.digest OR OLD.record IS DISTINCT FROM NEW.record
          OR OLD.source IS DISTINCT FROM NEW.source OR OLD.local_id IS DISTINCT FROM NEW.local_id)
    EXECUTE FUNCTION area_facts_forget_changed();
