-- The access-token algorithm the server started with before the last
-- change of `keys.algorithm`: until the new algorithm's first key has been
-- announced for `keys.announce`, access tokens are signed by that
-- algorithm's active key, which verifiers have and accept, not by a key
-- they may not have fetched yet. It may be an ID-token algorithm still
-- configured (RS256 → ES256 with RS256 ID tokens): without this record
-- the server could not tell it from one access tokens never had.
-- Keep in step with ../postgres/0018_previous_access_algorithm.sql.
ALTER TABLE server_key_settings ADD COLUMN previous_algorithm TEXT;
