-- Ties a database to one master key: a constant sealed under it, written
-- once (the first start that finds none), opened by every later start
-- before it writes a key. Two instances set up at once with different
-- master keys cannot both store keys. Keep in step with
-- ../postgres/0006_master_key_check.sql.
CREATE TABLE master_key_check (
    id     INTEGER PRIMARY KEY CHECK (id = 1),
    sealed BLOB NOT NULL
);
