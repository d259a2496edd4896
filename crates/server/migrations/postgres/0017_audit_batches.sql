-- The batches the audit writer wrote, by the number each batch was given
-- (its writer's sequence: a random start per writer, a number per event
-- taken one after another), written in the batch's own transaction: a
-- batch written again because the answer to its first write was lost (a
-- connection cut at COMMIT, a write that outlasted its timeout and
-- committed all the same) finds its number here and adds nothing. Kept a
-- day (the maintenance deletes them after).
-- Keep in step with ../sqlite/0019_audit_batches.sql.
CREATE TABLE audit_batches (
    writer_seq  BIGINT PRIMARY KEY,
    written_at  BIGINT NOT NULL
);
CREATE INDEX audit_batches_written_at ON audit_batches(written_at);
