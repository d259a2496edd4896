-- The key settings the server last started with. The admin commands
-- (`tessera keys rotate`, `revoke`, `list`, `client add --id-token-alg`
-- and `--access-ttl`) act by them, not by the configuration they were
-- run with: a rotation from a shell without the server's configuration
-- announced its keys by the default `announce` (1h), however long the
-- server's guards cache the key set.
-- Keep in step with ../sqlite/0018_server_key_settings.sql.
CREATE TABLE server_key_settings (
    id                   INTEGER PRIMARY KEY CHECK (id = 1),
    algorithm            TEXT NOT NULL,
    id_token_algorithms  TEXT NOT NULL,
    announce_secs        BIGINT NOT NULL,
    jwks_max_age_secs    BIGINT NOT NULL,
    max_access_ttl_secs  BIGINT NOT NULL
);
