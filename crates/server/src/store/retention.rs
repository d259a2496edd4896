//! Pruning what no one can use or needs any more: audit events past their
//! retention, refresh tokens and families past their expiry (revoked
//! families a day after), revocation
//! events and used assertion ids past the tokens they can name.
//!
//! Each kind is deleted in small batches with a pause between them, so a
//! large backlog (a first prune after a long time, a retention shortened)
//! never holds the database's one writer (SQLite) or a large lock for
//! long: a request's write waits one batch at most.

use std::time::Duration;

use crate::db::{bounded, on_pool, Db, Pool};
use crate::Error;

/// Rows deleted by one statement at most.
pub const BATCH: i64 = 1000;

/// The pause between two batches, for the writes waiting behind them.
pub const PAUSE: Duration = Duration::from_millis(20);

/// What to keep.
#[derive(Clone, Copy, Debug)]
pub struct Retention {
    /// How long audit events are kept (seconds; `None`: for ever).
    pub audit: Option<i64>,
}

/// Rows deleted by one [`prune`], by kind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Pruned {
    /// Audit events.
    pub audit: u64,
    /// Refresh tokens, and families with all their tokens.
    pub refresh: u64,
    /// Revocation events, used assertion ids, spent codes, ended
    /// sessions, the audit writer's batch numbers.
    pub ids: u64,
}

impl Pruned {
    /// All rows deleted.
    pub fn total(&self) -> u64 {
        self.audit + self.refresh + self.ids
    }
}

/// What expires by the clock alone: (kind, statement deleting at most
/// `$2` rows that ended before `$1`). A refresh token past its own expiry
/// is refused whether or not its row is there; a family past its end has
/// no tokens left (none outlives its family), and a revoked family's are
/// deleted before it, so no cascade deletes more than a batch.
const EXPIRED: [(Kind, &str); 10] = [
    (
        Kind::Refresh,
        "DELETE FROM refresh_tokens WHERE token_hash IN \
         (SELECT token_hash FROM refresh_tokens WHERE expires_at < $1 LIMIT $2)",
    ),
    // The tokens of families revoked a day ago, in batches before their
    // families: a family's delete takes its tokens with it in the same
    // statement, and a family rotated a million times has a million
    // (each used token is kept until its own expiry).
    (
        Kind::Refresh,
        "DELETE FROM refresh_tokens WHERE token_hash IN \
         (SELECT t.token_hash FROM refresh_families f JOIN refresh_tokens t ON t.family_id = f.id \
         WHERE f.revoked_at < $1 - 86400 LIMIT $2)",
    ),
    (
        Kind::Refresh,
        "DELETE FROM refresh_families WHERE id IN \
         (SELECT id FROM refresh_families WHERE expires_at < $1 LIMIT $2)",
    ),
    // Revoked families (a logout, a reuse, a replayed code) a day after:
    // their tokens are refused as unknown as well as revoked, and they
    // were kept to their end, 90 days by default.
    (
        Kind::Refresh,
        "DELETE FROM refresh_families WHERE id IN \
         (SELECT id FROM refresh_families WHERE revoked_at < $1 - 86400 LIMIT $2)",
    ),
    (
        Kind::Ids,
        "DELETE FROM revocation_events WHERE id IN \
         (SELECT id FROM revocation_events WHERE keep_until < $1 LIMIT $2)",
    ),
    // The audit writer's batch numbers a day after: a batch is written
    // again within its backoff (5 s) of an attempt whose answer was lost.
    (
        Kind::Ids,
        "DELETE FROM audit_batches WHERE writer_seq IN \
         (SELECT writer_seq FROM audit_batches WHERE written_at < $1 - 86400 LIMIT $2)",
    ),
    (
        Kind::Ids,
        "DELETE FROM used_assertions WHERE (issuer, jti) IN \
         (SELECT issuer, jti FROM used_assertions WHERE expires_at < $1 LIMIT $2)",
    ),
    // A spent code is kept an hour past its expiry, so that a replay
    // within it still revokes what the code issued (and its pending
    // request, every sealing of which is answered within
    // `signin::pending::LONGEST` of the first, stays answered).
    (
        Kind::Ids,
        "DELETE FROM authorization_codes WHERE code_hash IN \
         (SELECT code_hash FROM authorization_codes WHERE expires_at < $1 - 3600 LIMIT $2)",
    ),
    // Sessions past their absolute end, and ended ones a day after (two
    // statements: each reads its own index). One past its end whose
    // refresh families (offline access: they live to `session_max`) are
    // still live is kept until they end: ending the session
    // (`tessera session end`, a logout) is what revokes them, and it
    // needs the row. A minute past its end: a family started as it ended
    // (by another clock than this one) is seen.
    (
        Kind::Ids,
        "DELETE FROM sessions WHERE sid IN \
         (SELECT s.sid FROM sessions s WHERE s.expires_at < $1 - 60 \
          AND NOT EXISTS (SELECT 1 FROM refresh_families f \
           WHERE f.sid = s.sid AND f.revoked_at IS NULL AND f.expires_at > $1) \
          LIMIT $2)",
    ),
    (
        Kind::Ids,
        "DELETE FROM sessions WHERE sid IN \
         (SELECT sid FROM sessions WHERE ended_at < $1 - 86400 LIMIT $2)",
    ),
];

/// Audit events older than `$1`, `$2` at most.
const OLD_AUDIT: &str = "DELETE FROM audit_log WHERE id IN \
    (SELECT id FROM audit_log WHERE at < $1 ORDER BY at LIMIT $2)";

#[derive(Clone, Copy)]
enum Kind {
    Refresh,
    Ids,
}

/// The time the last maintenance deleted by, on SQLite (`None` on
/// PostgreSQL, whose own clock the maintenance compares with, or before
/// any maintenance).
pub async fn last_maintenance(db: &Db) -> Result<Option<i64>, Error> {
    let Pool::Sqlite(p) = db.write() else {
        return Ok(None);
    };
    let row: Option<(i64,)> = sqlx::query_as("SELECT at FROM maintenance_clock WHERE id = 1")
        .fetch_optional(p)
        .await?;
    Ok(row.map(|(at,)| at))
}

/// Record that the maintenance deleted by `at` (SQLite; never moved back).
pub async fn record_maintenance(db: &Db, at: i64) -> Result<(), Error> {
    let Pool::Sqlite(p) = db.write() else {
        return Ok(());
    };
    sqlx::query(
        "INSERT INTO maintenance_clock (id, at) VALUES (1, $1) \
         ON CONFLICT (id) DO UPDATE SET at = MAX(at, excluded.at)",
    )
    .bind(at)
    .execute(p)
    .await?;
    Ok(())
}

/// The time to delete by: `following` (the clock the maintenance follows)
/// unless that runs ahead of the last maintenance's time (`last`) by more
/// than twice the time passed since this start (`elapsed`, seconds):
/// then the latter. A start whose clock is hours ahead so deletes what
/// those hours would at twice the rate time passes, and NTP has set the
/// clock right long before; a start after a pause catches up as fast.
pub fn held_back(following: i64, last: Option<i64>, elapsed: i64) -> i64 {
    match last {
        Some(last) => following.min(last.saturating_add(elapsed.saturating_mul(2))),
        None => following,
    }
}

/// Delete, in batches, everything `retention` and the clock say is over
/// at `at` (seconds).
pub async fn prune(db: &Db, at: i64, retention: Retention) -> Result<Pruned, Error> {
    let mut pruned = Pruned::default();
    if let Some(keep) = retention.audit {
        pruned.audit = in_batches(db, OLD_AUDIT, at.saturating_sub(keep)).await?;
    }
    for (kind, sql) in EXPIRED {
        let deleted = in_batches(db, sql, at).await?;
        match kind {
            Kind::Refresh => pruned.refresh += deleted,
            Kind::Ids => pruned.ids += deleted,
        }
    }
    Ok(pruned)
}

/// Run `sql` (which deletes at most `$2` rows older than `$1`) until it
/// deletes less than a batch.
async fn in_batches(db: &Db, sql: &str, before: i64) -> Result<u64, Error> {
    let mut total = 0;
    loop {
        // Each batch bounded (a connection whose answer the network lost):
        // a hung one would stop this instance's pruning for good.
        let deleted = bounded("a pruning batch", async {
            Ok(on_pool!(db.write(), p => sqlx::query(sql)
                .bind(before).bind(BATCH).execute(p).await.map(|r| r.rows_affected()))?)
        })
        .await?;
        total += deleted;
        if deleted < u64::try_from(BATCH).unwrap_or(u64::MAX) {
            return Ok(total);
        }
        tokio::time::sleep(PAUSE).await;
    }
}

#[cfg(test)]
mod tests {
    use super::{held_back, last_maintenance, record_maintenance, EXPIRED, OLD_AUDIT};
    use crate::db::{Db, Pool};

    /// Each pruning statement, run every minute by every instance, finds
    /// its rows through an index: none reads its whole table (SQLite's
    /// plan says `SCAN` for that).
    #[tokio::test]
    async fn pruning_reads_indexes_not_whole_tables() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("tessera.db").display());
        let db = Db::connect(&url, 1).await.unwrap();
        let Pool::Sqlite(pool) = db.write() else {
            unreachable!("a SQLite database")
        };
        let statements = EXPIRED.iter().map(|(_, sql)| *sql).chain([OLD_AUDIT]);
        for sql in statements {
            let plan: Vec<(i64, i64, i64, String)> =
                sqlx::query_as(&format!("EXPLAIN QUERY PLAN {sql}"))
                    .bind(0_i64)
                    .bind(10_i64)
                    .fetch_all(pool)
                    .await
                    .unwrap();
            let steps: Vec<&str> = plan.iter().map(|(_, _, _, step)| step.as_str()).collect();
            assert!(
                !steps.iter().any(|step| step.starts_with("SCAN ")),
                "{sql}: {steps:?}"
            );
        }
        db.close().await;
    }

    /// A start whose clock is hours ahead of the last maintenance deletes
    /// by a time that catches up at twice the rate time passes; one whose
    /// clock is right, or that has no record, by its clock.
    #[test]
    fn a_clock_ahead_at_start_deletes_by_a_time_held_back() {
        let last = Some(1_000_000);
        let hours_ahead = 1_000_000 + 5 * 3600;
        assert_eq!(held_back(hours_ahead, last, 0), 1_000_000);
        assert_eq!(held_back(hours_ahead, last, 60), 1_000_120);
        assert_eq!(held_back(hours_ahead, last, 3 * 3600), hours_ahead);
        assert_eq!(held_back(1_000_030, last, 60), 1_000_030, "a right clock");
        assert_eq!(held_back(hours_ahead, None, 0), hours_ahead, "no record");
    }

    /// The record only moves forward, and is none on a new database.
    #[tokio::test]
    async fn the_maintenance_time_is_recorded_and_never_moves_back() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("tessera.db").display());
        let db = Db::connect(&url, 1).await.unwrap();
        assert_eq!(last_maintenance(&db).await.unwrap(), None);
        record_maintenance(&db, 500).await.unwrap();
        record_maintenance(&db, 400).await.unwrap();
        assert_eq!(last_maintenance(&db).await.unwrap(), Some(500));
        record_maintenance(&db, 600).await.unwrap();
        assert_eq!(last_maintenance(&db).await.unwrap(), Some(600));
        db.close().await;
    }
}
