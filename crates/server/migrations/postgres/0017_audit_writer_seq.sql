-- Each event the audit writer writes in a batch carries its number in
-- that writer's sequence (a random start per writer, one number after
-- another): a batch written again because the answer to its first write
-- was lost (a connection cut at COMMIT, a write that outlasted its
-- timeout and committed all the same) adds nothing the second time.
-- Events written in a change's own transaction have none (NULLs are
-- never equal in a unique index).
-- Keep in step with ../sqlite/0019_audit_writer_seq.sql.
ALTER TABLE audit_log ADD COLUMN writer_seq BIGINT;
CREATE UNIQUE INDEX audit_log_writer_seq ON audit_log(writer_seq);
