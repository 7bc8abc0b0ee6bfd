-- Probabilistic identity matching (see linkage.rs).

-- Every link of a source record to a child, and every proposal a person must decide on. Rows
-- are never deleted: a link that ends keeps its row, which is the child's link history.
CREATE TABLE match_links (
    id            TEXT PRIMARY KEY,
    source        TEXT NOT NULL,
    local_id      TEXT NOT NULL,
    child_id      TEXT NOT NULL REFERENCES children (id),
    -- active: the record's current link; review: a proposed link awaiting a person;
    -- rejected: a proposal a person turned down; superseded: a link replaced by another;
    -- split: a link a person undid. The matcher never proposes a rejected or split pairing again.
    status        TEXT NOT NULL,
    -- identifier:<kind>, probabilistic, new, manual, or legacy (made before this table existed).
    method        TEXT NOT NULL,
    probability   DOUBLE PRECISION,
    match_weight  DOUBLE PRECISION,
    model_version TEXT,
    -- JSON: [{comparison, level, weight}], one per comparison, as scored.
    explanation   TEXT NOT NULL,
    -- The person whose decision the row carries, and the decision: confirmed, rejected, split.
    decided_by    TEXT,
    decision      TEXT,
    reason        TEXT,
    created_at    TEXT NOT NULL,
    decided_at    TEXT,
    ended_at      TEXT
);
CREATE INDEX match_links_record ON match_links (source, local_id);
CREATE INDEX match_links_child ON match_links (child_id);
CREATE INDEX match_links_status ON match_links (status);

-- Blocking keys of every source record: where the matcher looks for candidates.
CREATE TABLE match_keys (
    rule     TEXT NOT NULL,
    key      TEXT NOT NULL,
    source   TEXT NOT NULL,
    local_id TEXT NOT NULL,
    PRIMARY KEY (rule, key, source, local_id)
);
CREATE INDEX match_keys_record ON match_keys (source, local_id);
