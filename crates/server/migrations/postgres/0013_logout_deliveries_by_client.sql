-- A client whose back-channel endpoint fails has its other due logouts
-- put off with the one that failed (store/logouts.rs, put_off_client),
-- found through this index. Keep in step with
-- ../sqlite/0014_logout_deliveries_by_client.sql.
CREATE INDEX logout_deliveries_client ON logout_deliveries(client_id, next_attempt_at);
