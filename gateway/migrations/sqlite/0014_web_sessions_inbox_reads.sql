-- Web sessions: a signed-in browser. The cookie carries a random id; only its SHA-256 is kept, so
-- a copy of the database signs nobody in. The principal is kept as user, agency and role and
-- checked against the configuration on every request, as a token's claims are. `csrf` is the
-- synchroniser token every form of the session carries. A session ends when unused for the idle
-- timeout (`last_seen_at`) or at `expires_at`, whichever comes first; sign-out deletes the row.
CREATE TABLE web_sessions (
    id_hash       TEXT PRIMARY KEY,
    user_id       TEXT NOT NULL,
    agency        TEXT NOT NULL,
    role          TEXT NOT NULL,
    display_name  TEXT NOT NULL,
    csrf          TEXT NOT NULL,
    created_at    BIGINT NOT NULL,
    last_seen_at  BIGINT NOT NULL,
    expires_at    BIGINT NOT NULL
);
CREATE INDEX web_sessions_expiry ON web_sessions (expires_at);

-- Which inbox items a person has read. An item sent to a role is read or unread for each of the
-- role's people separately.
CREATE TABLE inbox_reads (
    delivery_id TEXT NOT NULL,
    agency      TEXT NOT NULL,
    user_id     TEXT NOT NULL,
    read_at     TEXT NOT NULL,
    PRIMARY KEY (delivery_id, agency, user_id)
);

-- OpenID Connect sign-ins under way: the browser holds `state` in a cookie; the row (keyed by its
-- SHA-256) keeps the nonce and the PKCE verifier until the provider sends the browser back, and
-- is used once.
CREATE TABLE web_logins (
    state_hash  TEXT PRIMARY KEY,
    nonce       TEXT NOT NULL,
    verifier    TEXT NOT NULL,
    created_at  BIGINT NOT NULL
);
