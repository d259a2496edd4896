-- The browser a session was started in (a digest of its browser cookie):
-- a logout there ends every session of that browser, also one started by
-- a second login sent at the same moment, whose cookie the browser did
-- not keep. Keep in step with ../postgres/0010_sessions_of_a_browser.sql.
ALTER TABLE sessions ADD COLUMN browser_hash BLOB;
CREATE INDEX sessions_browser ON sessions(browser_hash) WHERE browser_hash IS NOT NULL;
