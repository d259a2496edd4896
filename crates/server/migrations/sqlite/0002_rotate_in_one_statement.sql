-- A refresh rotation on SQLite in one statement: the UPDATE that marks the
-- presented token used also names its successor, and this trigger inserts
-- the successor row within the same statement (so within the same
-- implicit transaction: both happen or neither does).
ALTER TABLE refresh_tokens ADD COLUMN successor_hash BLOB;
ALTER TABLE refresh_tokens ADD COLUMN successor_expires_at INTEGER;

CREATE TRIGGER refresh_tokens_successor
AFTER UPDATE OF successor_hash ON refresh_tokens
WHEN OLD.successor_hash IS NULL AND NEW.successor_hash IS NOT NULL
BEGIN
    INSERT INTO refresh_tokens (token_hash, family_id, created_at, expires_at)
    VALUES (NEW.successor_hash, NEW.family_id, NEW.used_at, NEW.successor_expires_at);
END;
