-- Indexes for what the maintenance prunes every minute (store/retention.rs)
-- and for the cascades of deleting a client or a user: without them each
-- of those statements read its whole table, and on SQLite held the one
-- writer meanwhile. Authorization codes get no client or user index: they
-- are gone an hour after their minute, deletes are rare, and every code
-- issued would pay for it. Keep in step with ../sqlite/0010_indexes_for_pruning.sql.
CREATE INDEX refresh_tokens_expires ON refresh_tokens(expires_at);
CREATE INDEX refresh_families_expires ON refresh_families(expires_at);
CREATE INDEX refresh_families_client ON refresh_families(client_id);
CREATE INDEX refresh_families_username ON refresh_families(username) WHERE username IS NOT NULL;
CREATE INDEX used_assertions_expires ON used_assertions(expires_at);
CREATE INDEX authorization_codes_expires ON authorization_codes(expires_at);
CREATE INDEX sessions_expires ON sessions(expires_at);
CREATE INDEX sessions_ended ON sessions(ended_at) WHERE ended_at IS NOT NULL;
CREATE INDEX consents_client ON consents(client_id);
CREATE INDEX session_clients_client ON session_clients(client_id);
