-- The revocation feed: every revocation a resource server must hear of, in
-- the order it committed. Keep in step with ../sqlite/0005_revocation_feed.sql.
--
-- `id` is the feed's cursor. Writers take a transaction-scoped advisory
-- lock before they append (store/revocation.rs), so ids commit in
-- order and a reader that saw id N never later finds a smaller one.
CREATE TABLE revocation_events (
    id            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind          TEXT NOT NULL,
    value         TEXT NOT NULL,
    issued_before BIGINT,
    keep_until    BIGINT NOT NULL,
    created_at    BIGINT NOT NULL
);
CREATE INDEX revocation_events_keep_until ON revocation_events(keep_until);

INSERT INTO revocation_events (kind, value, issued_before, keep_until, created_at)
    SELECT 'token', jti, NULL, expires_at + 300, CAST(extract(epoch FROM now()) AS BIGINT)
    FROM revoked_access_tokens ORDER BY expires_at;
DROP TABLE revoked_access_tokens;
