-- The consent register: one row per consent or refusal; a withdrawal changes the row's status.
CREATE TABLE consents (
    id               TEXT PRIMARY KEY,
    child_id         TEXT NOT NULL REFERENCES children (id),
    -- active, withdrawn or refused
    status           TEXT NOT NULL,
    -- JSON: grantor, period and provisions, shaped like FHIR R4 Consent
    body             TEXT NOT NULL,
    recorded_by      TEXT NOT NULL,
    recorded_at      TEXT NOT NULL,
    updated_at       TEXT NOT NULL,
    withdrawn_reason TEXT
);
CREATE INDEX consents_child ON consents (child_id);

-- Break-glass grants and their review by an IG officer.
CREATE TABLE break_glass (
    id             TEXT PRIMARY KEY,
    user_id        TEXT NOT NULL,
    agency         TEXT NOT NULL,
    role           TEXT NOT NULL,
    child_id       TEXT NOT NULL REFERENCES children (id),
    purpose        TEXT NOT NULL,
    justification  TEXT NOT NULL,
    granted_at     TEXT NOT NULL,
    expires_at     TEXT NOT NULL,
    review_outcome TEXT,
    review_notes   TEXT,
    reviewed_by    TEXT,
    reviewed_at    TEXT
);
CREATE INDEX break_glass_user_child ON break_glass (user_id, child_id);
CREATE INDEX break_glass_pending ON break_glass (review_outcome);
