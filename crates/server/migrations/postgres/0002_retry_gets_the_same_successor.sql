-- A rotated refresh token keeps its successor, sealed under the master key,
-- for the refresh grace window only: a retry inside it (a lost response, two
-- tabs racing) gets the same successor instead of a second live branch.
ALTER TABLE refresh_tokens ADD COLUMN successor_sealed BYTEA;
CREATE INDEX refresh_tokens_sealed ON refresh_tokens(used_at) WHERE successor_sealed IS NOT NULL;
