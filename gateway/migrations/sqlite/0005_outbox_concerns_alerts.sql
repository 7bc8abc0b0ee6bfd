-- The outbox: every concern, alert and notification leaves through here, so nothing is lost when
-- a receiver is down or the gateway stops. A row is `pending` until delivered, `delivered` once a
-- receiver (or the recipient's inbox) has it, `dead` when its attempts ran out; an administrator
-- can retry a dead row. A claimed row's `next_attempt_at` is pushed to the end of its lease, so a
-- worker that dies mid-delivery only delays the row, never loses it.
CREATE TABLE outbox (
    id              TEXT PRIMARY KEY,
    topic           TEXT NOT NULL,
    subject         TEXT NOT NULL,
    child_id        TEXT,
    recipient       TEXT NOT NULL,
    channel         TEXT NOT NULL,
    webhook         TEXT,
    payload         TEXT NOT NULL,
    state           TEXT NOT NULL,
    attempts        INTEGER NOT NULL,
    next_attempt_at TEXT NOT NULL,
    lease_owner     TEXT,
    last_error      TEXT,
    created_at      TEXT NOT NULL,
    delivered_at    TEXT
);
CREATE INDEX outbox_due ON outbox (state, next_attempt_at);
CREATE INDEX outbox_subject ON outbox (subject);

-- Inboxes: a delivery to a person (`user_id`) or to a role in an agency (`role`). Keyed by the
-- delivery id, so a redelivery never shows twice.
CREATE TABLE inbox (
    delivery_id  TEXT PRIMARY KEY,
    agency       TEXT NOT NULL,
    role         TEXT,
    user_id      TEXT,
    topic        TEXT NOT NULL,
    subject      TEXT NOT NULL,
    child_id     TEXT,
    payload      TEXT NOT NULL,
    delivered_at TEXT NOT NULL
);
CREATE INDEX inbox_user ON inbox (agency, user_id, delivered_at);
CREATE INDEX inbox_role ON inbox (agency, role, delivered_at);

-- Concerns: written once, never updated. Progress and addenda go to concern_log.
CREATE TABLE concerns (
    id              TEXT PRIMARY KEY,
    submitted_at    TEXT NOT NULL,
    submitted_by    TEXT NOT NULL,
    agency          TEXT NOT NULL,
    role            TEXT NOT NULL,
    idempotency_key TEXT,
    request_hash    TEXT NOT NULL,
    child_id        TEXT,
    matched_on      TEXT NOT NULL,
    child_status    TEXT NOT NULL,
    category        TEXT NOT NULL,
    urgency         TEXT NOT NULL,
    body            TEXT NOT NULL
);
CREATE UNIQUE INDEX concerns_idempotency ON concerns (agency, submitted_by, idempotency_key);
CREATE INDEX concerns_child ON concerns (child_id);

-- Who a concern went to, and how far each recipient has taken it.
CREATE TABLE concern_recipients (
    concern_id TEXT NOT NULL REFERENCES concerns (id),
    recipient  TEXT NOT NULL,
    agency     TEXT NOT NULL,
    role       TEXT,
    user_id    TEXT,
    channel    TEXT NOT NULL,
    rule       TEXT NOT NULL,
    state      TEXT NOT NULL,
    outcome    TEXT,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (concern_id, recipient)
);

-- Every step and addendum of a concern, append-only.
CREATE TABLE concern_log (
    id         TEXT PRIMARY KEY,
    concern_id TEXT NOT NULL REFERENCES concerns (id),
    at         TEXT NOT NULL,
    kind       TEXT NOT NULL,
    recipient  TEXT,
    by_user    TEXT NOT NULL,
    by_agency  TEXT NOT NULL,
    by_role    TEXT NOT NULL,
    state      TEXT,
    outcome    TEXT,
    text       TEXT
);
CREATE INDEX concern_log_concern ON concern_log (concern_id, at);

-- Events pushed by partner systems, as received (after validation).
CREATE TABLE events (
    id          TEXT PRIMARY KEY,
    received_at TEXT NOT NULL,
    kind        TEXT NOT NULL,
    agency      TEXT NOT NULL,
    source_ref  TEXT,
    child_id    TEXT,
    matched_on  TEXT NOT NULL,
    body        TEXT NOT NULL
);
CREATE UNIQUE INDEX events_source_ref ON events (agency, source_ref);
CREATE INDEX events_child ON events (child_id);

-- Attendance marks per child and period; a feed sent twice replaces, never adds.
CREATE TABLE attendance_marks (
    child_id  TEXT NOT NULL,
    from_date TEXT NOT NULL,
    to_date   TEXT NOT NULL,
    possible  INTEGER NOT NULL,
    attended  INTEGER NOT NULL,
    PRIMARY KEY (child_id, from_date, to_date)
);

-- Alerts raised; the unique key is what makes "one alert per child per window" hold across
-- retries, replays and several gateway nodes.
CREATE TABLE alerts (
    id         TEXT PRIMARY KEY,
    rule       TEXT NOT NULL,
    child_id   TEXT NOT NULL,
    window_key TEXT NOT NULL,
    raised_at  TEXT NOT NULL,
    detail     TEXT NOT NULL
);
CREATE UNIQUE INDEX alerts_once ON alerts (rule, child_id, window_key);

-- Subscriptions to a child's (or a cohort's) events and alerts.
CREATE TABLE subscriptions (
    id         TEXT PRIMARY KEY,
    created_at TEXT NOT NULL,
    user_id    TEXT NOT NULL,
    agency     TEXT NOT NULL,
    role       TEXT NOT NULL,
    kinds      TEXT NOT NULL,
    channel    TEXT NOT NULL,
    webhook    TEXT
);
CREATE TABLE subscription_children (
    subscription_id TEXT NOT NULL REFERENCES subscriptions (id),
    child_id        TEXT NOT NULL,
    PRIMARY KEY (subscription_id, child_id)
);
CREATE INDEX subscription_children_child ON subscription_children (child_id);
