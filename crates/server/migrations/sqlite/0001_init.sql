-- Tessera's schema on SQLite. Keep in step with ../postgres/0001_init.sql:
-- the same tables and columns, only the type names differ.
-- Times are seconds since the epoch; digests are SHA-256.

CREATE TABLE users (
    id            TEXT PRIMARY KEY,
    username      TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,          -- Argon2id PHC string
    scopes        TEXT NOT NULL,          -- space-separated
    disabled      BOOLEAN NOT NULL DEFAULT FALSE,
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL
);

CREATE TABLE clients (
    client_id     TEXT PRIMARY KEY,
    name          TEXT NOT NULL,
    secret_hash   BLOB,                   -- NULL: public client or private_key_jwt
    grants        TEXT NOT NULL,          -- space-separated grant types
    scopes        TEXT NOT NULL,
    audiences     TEXT NOT NULL,          -- space-separated
    jwks          TEXT,                   -- public keys for private_key_jwt
    access_ttl    INTEGER,                -- seconds; NULL: the server default
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL
);

CREATE TABLE signing_keys (
    kid           TEXT PRIMARY KEY,
    generation    INTEGER NOT NULL UNIQUE, -- one key per rotation, even with many instances
    alg           TEXT NOT NULL,
    sealed_key    BLOB NOT NULL,          -- PKCS#8 under AES-256-GCM with the master key
    public_jwk    TEXT NOT NULL,
    created_at    INTEGER NOT NULL,
    activate_at   INTEGER NOT NULL        -- published from creation, signs from here
);

CREATE TABLE refresh_families (
    id            TEXT PRIMARY KEY,
    client_id     TEXT NOT NULL REFERENCES clients(client_id) ON DELETE CASCADE,
    subject       TEXT NOT NULL,
    username      TEXT,
    scope         TEXT NOT NULL,
    auth_time     INTEGER,
    created_at    INTEGER NOT NULL,
    expires_at    INTEGER NOT NULL,
    revoked_at    INTEGER,
    revoked_reason TEXT
);

CREATE TABLE refresh_tokens (
    token_hash    BLOB PRIMARY KEY,
    family_id     TEXT NOT NULL REFERENCES refresh_families(id) ON DELETE CASCADE,
    created_at    INTEGER NOT NULL,
    expires_at    INTEGER NOT NULL,
    used_at       INTEGER                 -- set once, when it is rotated
);
CREATE INDEX refresh_tokens_family ON refresh_tokens(family_id);

CREATE TABLE revoked_access_tokens (
    jti           TEXT PRIMARY KEY,
    expires_at    INTEGER NOT NULL
);

CREATE TABLE used_assertions (
    issuer        TEXT NOT NULL,
    jti           TEXT NOT NULL,
    expires_at    INTEGER NOT NULL,
    PRIMARY KEY (issuer, jti)
);

CREATE TABLE audit_log (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    at            INTEGER NOT NULL,
    event         TEXT NOT NULL,
    client_id     TEXT,
    subject       TEXT,
    remote        TEXT,
    detail        TEXT
);
CREATE INDEX audit_log_at ON audit_log(at);
