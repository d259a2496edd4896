-- The codes of a client and of a user, found by index: deleting either
-- cascades to them, which without an index scanned the whole table. Keep
-- in step with ../postgres/0014_codes_by_client_and_user.sql.
CREATE INDEX authorization_codes_client ON authorization_codes(client_id);
CREATE INDEX authorization_codes_user ON authorization_codes(user_id);
