-- The revocation feed: every revocation a resource server must hear of, in
-- the order it committed. Keep in step with ../postgres/0004_revocation_feed.sql.
--
-- `id` is the feed's cursor (a subscriber resumes after the last id it
-- saw): AUTOINCREMENT, so an id is never reused after the newest rows are
-- pruned. `kind` is token (value: jti), user (sub), client (client_id) or
-- session (sid); `issued_before` cuts a user's or client's tokens;
-- `keep_until` is when no token the event can refuse is still valid.
CREATE TABLE revocation_events (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    kind          TEXT NOT NULL,
    value         TEXT NOT NULL,
    issued_before INTEGER,
    keep_until    INTEGER NOT NULL,
    created_at    INTEGER NOT NULL
);
CREATE INDEX revocation_events_keep_until ON revocation_events(keep_until);

-- Revoked access tokens become events of the feed (their `exp` plus the
-- longest leeway a verifier allows, 300 s).
INSERT INTO revocation_events (kind, value, issued_before, keep_until, created_at)
    SELECT 'token', jti, NULL, expires_at + 300, CAST(strftime('%s', 'now') AS INTEGER)
    FROM revoked_access_tokens ORDER BY expires_at;
DROP TABLE revoked_access_tokens;
