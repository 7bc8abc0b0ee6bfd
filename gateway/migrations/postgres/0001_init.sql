-- The master child index: a Weft child, and the source records linked to it.
CREATE TABLE children (
    id         TEXT PRIMARY KEY,
    created_at TEXT NOT NULL
);

CREATE TABLE source_records (
    source       TEXT NOT NULL,
    local_id     TEXT NOT NULL,
    child_id     TEXT REFERENCES children (id),
    -- JSON: [{kind, value, valid, problem}] as the source gave them; invalid ones are kept, flagged.
    identifiers  TEXT NOT NULL,
    -- JSON demographics as the source gave them.
    demographics TEXT NOT NULL,
    -- Normalised family|given|birth date, for exact demographic matching.
    match_key    TEXT,
    -- How the link was made: identifier:<kind>, demographics, new.
    link_method  TEXT,
    updated_at   TEXT NOT NULL,
    PRIMARY KEY (source, local_id)
);
CREATE INDEX source_records_child ON source_records (child_id);
CREATE INDEX source_records_match_key ON source_records (match_key);

-- Verified identifiers only: the deterministic linking keys.
CREATE TABLE record_identifiers (
    kind     TEXT NOT NULL,
    value    TEXT NOT NULL,
    source   TEXT NOT NULL,
    local_id TEXT NOT NULL,
    PRIMARY KEY (kind, value, source, local_id)
);

-- The audit log: append-only, each entry's hash covers the previous entry's hash.
CREATE TABLE audit_log (
    seq       BIGINT PRIMARY KEY,
    at        TEXT NOT NULL,
    user_id   TEXT NOT NULL,
    agency    TEXT NOT NULL,
    role      TEXT NOT NULL,
    action    TEXT NOT NULL,
    child_id  TEXT,
    purpose   TEXT,
    outcome   TEXT NOT NULL,
    detail    TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash      TEXT NOT NULL
);
CREATE INDEX audit_log_child ON audit_log (child_id);
CREATE INDEX audit_log_user ON audit_log (user_id);
CREATE INDEX audit_log_at ON audit_log (at);

-- The head of the chain, so that removing the newest entries is detected too. Its row lock also
-- serialises appenders across gateway nodes.
CREATE TABLE audit_head (
    id   INTEGER PRIMARY KEY CHECK (id = 1),
    seq  BIGINT NOT NULL,
    hash TEXT NOT NULL
);
INSERT INTO audit_head (id, seq, hash)
VALUES (1, 0, '0000000000000000000000000000000000000000000000000000000000000000');
