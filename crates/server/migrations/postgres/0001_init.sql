-- Tessera's schema on PostgreSQL. Keep in step with ../sqlite/0001_init.sql:
-- the same tables and columns, only the type names differ.
-- Times are seconds since the epoch; digests are SHA-256.

CREATE TABLE users (
    id            TEXT PRIMARY KEY,
    username      TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,          -- Argon2id PHC string
    scopes        TEXT NOT NULL,          -- space-separated
    disabled      BOOLEAN NOT NULL DEFAULT FALSE,
    created_at    BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL
);

CREATE TABLE clients (
    client_id     TEXT PRIMARY KEY,
    name          TEXT NOT NULL,
    secret_hash   BYTEA,                   -- NULL: public client or private_key_jwt
    grants        TEXT NOT NULL,          -- space-separated grant types
    scopes        TEXT NOT NULL,
    audiences     TEXT NOT NULL,          -- space-separated
    jwks          TEXT,                   -- public keys for private_key_jwt
    access_ttl    BIGINT,                -- seconds; NULL: the server default
    created_at    BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL
);

CREATE TABLE signing_keys (
    kid           TEXT PRIMARY KEY,
    generation    BIGINT NOT NULL UNIQUE, -- one key per rotation, even with many instances
    alg           TEXT NOT NULL,
    sealed_key    BYTEA NOT NULL,          -- PKCS#8 under AES-256-GCM with the master key
    public_jwk    TEXT NOT NULL,
    created_at    BIGINT NOT NULL,
    activate_at   BIGINT NOT NULL        -- published from creation, signs from here
);

CREATE TABLE refresh_families (
    id            TEXT PRIMARY KEY,
    client_id     TEXT NOT NULL REFERENCES clients(client_id) ON DELETE CASCADE,
    subject       TEXT NOT NULL,
    username      TEXT,
    scope         TEXT NOT NULL,
    auth_time     BIGINT,
    created_at    BIGINT NOT NULL,
    expires_at    BIGINT NOT NULL,
    revoked_at    BIGINT,
    revoked_reason TEXT
);

CREATE TABLE refresh_tokens (
    token_hash    BYTEA PRIMARY KEY,
    family_id     TEXT NOT NULL REFERENCES refresh_families(id) ON DELETE CASCADE,
    created_at    BIGINT NOT NULL,
    expires_at    BIGINT NOT NULL,
    used_at       BIGINT                 -- set once, when it is rotated
);
CREATE INDEX refresh_tokens_family ON refresh_tokens(family_id);

CREATE TABLE revoked_access_tokens (
    jti           TEXT PRIMARY KEY,
    expires_at    BIGINT NOT NULL
);

CREATE TABLE used_assertions (
    issuer        TEXT NOT NULL,
    jti           TEXT NOT NULL,
    expires_at    BIGINT NOT NULL,
    PRIMARY KEY (issuer, jti)
);

CREATE TABLE audit_log (
    id            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at            BIGINT NOT NULL,
    event         TEXT NOT NULL,
    client_id     TEXT,
    subject       TEXT,
    remote        TEXT,
    detail        TEXT
);
CREATE INDEX audit_log_at ON audit_log(at);
