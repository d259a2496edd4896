-- The longest access-token lifetime any start of the server has allowed
-- (seconds): raised at every start before the first token is minted, never
-- lowered. The events that cut tokens off (users, clients, sessions) are
-- kept at least this long past the cut, whatever configuration the
-- appender runs with: an admin command without the server's file, or a
-- server whose max_access_ttl was lowered while longer tokens still live.
-- Keep in step with ../sqlite/0008_longest_access_ttl.sql.
CREATE TABLE longest_access_ttl (
    id      INTEGER PRIMARY KEY CHECK (id = 1),
    seconds BIGINT NOT NULL
);
