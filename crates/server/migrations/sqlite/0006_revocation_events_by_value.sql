-- A token or session is revoked once: an append first looks for an event
-- of the same kind and value. Keep in step with
-- ../postgres/0005_revocation_events_by_value.sql.
CREATE INDEX revocation_events_value ON revocation_events(kind, value);
