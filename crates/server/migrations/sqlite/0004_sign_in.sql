-- Sign-in for people: the authorization code flow, OpenID Connect sessions,
-- consent and logout. Keep in step with ../postgres/0003_sign_in.sql.

-- Profile claims (OpenID Connect Core §5.1) of the `profile` and `email` scopes.
ALTER TABLE users ADD COLUMN name TEXT;
ALTER TABLE users ADD COLUMN email TEXT;
ALTER TABLE users ADD COLUMN email_verified BOOLEAN NOT NULL DEFAULT FALSE;

-- What a client registers for the code flow; lists are space-separated.
ALTER TABLE clients ADD COLUMN redirect_uris TEXT NOT NULL DEFAULT '';
ALTER TABLE clients ADD COLUMN post_logout_redirect_uris TEXT NOT NULL DEFAULT '';
ALTER TABLE clients ADD COLUMN backchannel_logout_uri TEXT;
ALTER TABLE clients ADD COLUMN id_token_alg TEXT;         -- NULL: RS256
ALTER TABLE clients ADD COLUMN first_party BOOLEAN NOT NULL DEFAULT FALSE;

-- A person's sign-in at this server, shared by every instance. The cookie
-- holds a random value; only its digest is kept. `sid` is the public id
-- (ID tokens, logout tokens, `tessera session list`).
CREATE TABLE sessions (
    id_hash       BLOB PRIMARY KEY,
    sid           TEXT NOT NULL UNIQUE,
    user_id       TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    auth_time     INTEGER NOT NULL,
    created_at    INTEGER NOT NULL,
    last_seen     INTEGER NOT NULL,
    expires_at    INTEGER NOT NULL,   -- absolute end
    ended_at      INTEGER
);
CREATE INDEX sessions_user ON sessions(user_id);

-- The clients a session has signed in to, for back-channel logout.
CREATE TABLE session_clients (
    sid           TEXT NOT NULL REFERENCES sessions(sid) ON DELETE CASCADE,
    client_id     TEXT NOT NULL REFERENCES clients(client_id) ON DELETE CASCADE,
    PRIMARY KEY (sid, client_id)
);

-- Authorization codes: stored hashed, single use, 60 seconds.
CREATE TABLE authorization_codes (
    code_hash     BLOB PRIMARY KEY,
    client_id     TEXT NOT NULL REFERENCES clients(client_id) ON DELETE CASCADE,
    user_id       TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    sid           TEXT NOT NULL,
    redirect_uri  TEXT NOT NULL,
    code_challenge TEXT NOT NULL,
    nonce         TEXT,
    scope         TEXT NOT NULL,
    auth_time     INTEGER NOT NULL,
    created_at    INTEGER NOT NULL,
    expires_at    INTEGER NOT NULL,
    used_at       INTEGER,
    replayed_at   INTEGER,
    family_id     TEXT,               -- what its first use issued, to revoke on replay
    access_jti    TEXT,
    access_expires_at INTEGER,
    request_hash  BLOB                 -- the pending request it answers (signin/pending.rs)
);
-- A pending request is answered once.
CREATE UNIQUE INDEX authorization_codes_request ON authorization_codes(request_hash);

-- Remembered consent, per user and client.
CREATE TABLE consents (
    user_id       TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    client_id     TEXT NOT NULL REFERENCES clients(client_id) ON DELETE CASCADE,
    scope         TEXT NOT NULL,
    granted_at    INTEGER NOT NULL,
    PRIMARY KEY (user_id, client_id)
);

-- Refresh-token families started by a sign-in end with its session.
ALTER TABLE refresh_families ADD COLUMN sid TEXT;
CREATE INDEX refresh_families_sid ON refresh_families(sid) WHERE sid IS NOT NULL;

-- Back-channel logouts still to deliver (OpenID Connect Back-Channel
-- Logout 1.0), retried with backoff. The logout token is signed when it is
-- sent, so whoever ends a session (the command line too) needs no keys.
CREATE TABLE logout_deliveries (
    id            TEXT PRIMARY KEY,
    client_id     TEXT NOT NULL,
    uri           TEXT NOT NULL,
    sid           TEXT NOT NULL,
    subject       TEXT NOT NULL,
    attempts      INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,
    created_at    INTEGER NOT NULL
);
CREATE INDEX logout_deliveries_next ON logout_deliveries(next_attempt_at);
