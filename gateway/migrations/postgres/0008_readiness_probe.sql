-- One row that /readyz writes to, so that readiness means the database takes writes (a
-- write-locked or read-only database answers SELECT 1 and still cannot keep an audit log).
CREATE TABLE readiness_probe (
    id BIGINT PRIMARY KEY,
    checked_at TEXT NOT NULL
);
INSERT INTO readiness_probe (id, checked_at) VALUES (1, '1970-01-01T00:00:00Z');
