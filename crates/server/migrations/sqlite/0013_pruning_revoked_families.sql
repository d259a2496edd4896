-- Revoked refresh families are pruned a day after their revocation
-- (store/retention.rs), found through this index. Keep in step with
-- ../postgres/0012_pruning_revoked_families.sql.
CREATE INDEX refresh_families_revoked ON refresh_families(revoked_at) WHERE revoked_at IS NOT NULL;
