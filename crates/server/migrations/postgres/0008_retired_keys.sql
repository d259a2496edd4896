-- When the server's maintenance first found a key's algorithm no longer
-- configured (the access-token algorithm changed, an ID-token algorithm
-- dropped): from then on, or from when its replacement started signing if
-- later, the key signs nothing, and it is removed once every token it
-- signed has expired. Keep in step with ../sqlite/0009_retired_keys.sql.
ALTER TABLE signing_keys ADD COLUMN retired_at BIGINT;
