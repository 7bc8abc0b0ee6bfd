-- Records imported from `file` sources (school census exports, CTF, CIN census, SSDA903), kept
-- so that views are served from the last good import and a re-import can apply only what changed.
CREATE TABLE import_records (
    source      TEXT NOT NULL,
    local_id    TEXT NOT NULL,
    -- SHA-256 of `record`, compared on re-import: an unchanged record is not rewritten.
    digest      TEXT NOT NULL,
    -- JSON: {record: {local_id, identifiers, demographics}, items: [...]}.
    record      TEXT NOT NULL,
    imported_at TEXT NOT NULL,
    PRIMARY KEY (source, local_id)
);

-- One row per import attempt, applied or rejected: the administrator's history of a source.
CREATE TABLE import_runs (
    id          TEXT PRIMARY KEY,
    source      TEXT NOT NULL,
    started_at  TEXT NOT NULL,
    finished_at TEXT NOT NULL,
    -- applied, unchanged or rejected.
    outcome     TEXT NOT NULL,
    -- JSON: [{name, sha256, bytes}] of the files read; an identical set skips parsing.
    files       TEXT NOT NULL,
    added       BIGINT NOT NULL,
    changed     BIGINT NOT NULL,
    removed     BIGINT NOT NULL,
    unchanged   BIGINT NOT NULL,
    flagged     BIGINT NOT NULL,
    -- JSON array of tolerated oddities (stray text), or the rejection reason.
    notes       TEXT NOT NULL
);
CREATE INDEX import_runs_source ON import_runs (source, started_at);
