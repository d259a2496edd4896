-- The time the last maintenance deleted by. SQLite has no clock of its
-- own to compare this host's with: a start whose clock runs hours ahead
-- (a clock kept in local time, before NTP has set it) catches up from
-- this at twice the rate time passes, rather than deleting at once the
-- revocation events and used assertions still needed (serve.rs,
-- `maintain`).
CREATE TABLE maintenance_clock (
    id  INTEGER PRIMARY KEY CHECK (id = 1),
    at  INTEGER NOT NULL
);
