-- The issuer the server last started as. The admin commands check what
-- they register by it (redirect and logout URIs: plain http only beside
-- a server on plain http) when they are run without the server's
-- configuration, whose default issuer (http://127.0.0.1:8080) would let
-- through what the server itself refuses.
-- Keep in step with ../sqlite/0017_server_issuer.sql.
CREATE TABLE server_issuer (
    id      INTEGER PRIMARY KEY CHECK (id = 1),
    issuer  TEXT NOT NULL
);
