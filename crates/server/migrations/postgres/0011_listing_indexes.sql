-- The admin listings read a page at a time after a cursor (`admin::Page`):
-- clients oldest first and sessions newest first, by their creation time
-- and id, each page a range of these indexes (without them every page
-- sorted the whole table). Keep in step with ../sqlite/0012_listing_indexes.sql.
CREATE INDEX clients_created ON clients(created_at, client_id);
CREATE INDEX sessions_created ON sessions(created_at, sid);
