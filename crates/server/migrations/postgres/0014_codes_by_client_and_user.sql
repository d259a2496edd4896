-- The codes of a client and of a user, found by index: deleting a client
-- locks its codes (store/codes.rs LOCK_CODES_OF_CLIENT), deleting a user
-- cascades to them, and without an index each scanned the whole table
-- while the instance's code writer waited behind its locks. Keep in step
-- with ../sqlite/0016_codes_by_client_and_user.sql.
CREATE INDEX authorization_codes_client ON authorization_codes(client_id);
CREATE INDEX authorization_codes_user ON authorization_codes(user_id);
