-- Who may change a store and its items: the `sub` of the token that made
-- it. Stores made before have none: only `store:admin` changes them.
ALTER TABLE stores ADD COLUMN owner TEXT;
