//! Back-channel logouts waiting to be delivered (OpenID Connect
//! Back-Channel Logout 1.0 §2.7), queued with the end of a session and
//! retried with backoff by the server (`signin::backchannel`).

use crate::db::{on_pool, Db};
use crate::store::audit::{record_in, InChange};
use crate::Error;

/// One delivery: tell `client_id` at `uri` that session `sid` of
/// `subject` ended.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct Delivery {
    /// Its id.
    pub id: String,
    /// The client.
    pub client_id: String,
    /// Its `backchannel_logout_uri`.
    pub uri: String,
    /// The session.
    pub sid: String,
    /// The user's `sub`.
    pub subject: String,
    /// Attempts so far.
    pub attempts: i64,
}

/// Deliveries due at `at`, oldest first (to look at: [`claim`] takes
/// them for an attempt).
pub async fn due(db: &Db, at: i64, limit: i64) -> Result<Vec<Delivery>, Error> {
    let due = on_pool!(db.read(), p => sqlx::query_as::<_, Delivery>(
        "SELECT id, client_id, uri, sid, subject, attempts FROM logout_deliveries \
         WHERE next_attempt_at <= $1 ORDER BY next_attempt_at, id LIMIT $2"
    ).bind(at).bind(limit).fetch_all(p).await)?;
    Ok(due)
}

/// Deliveries of one client taken first in one round: a client with a
/// flood of logouts queued has these first, then the others' come, and
/// only then more of its own fill the round.
pub const PER_CLIENT: i64 = 10;

/// The oldest due deliveries a round chooses from (a bound on what the
/// choice reads, whatever the backlog).
const CANDIDATES: i64 = 1000;

/// Take up to `limit` deliveries due at `at`, for one attempt: the oldest
/// [`PER_CLIENT`] of each client first, oldest first, then the oldest of
/// the rest: each is put off until
/// `lease_until` in the same statement, so no other instance (nor this
/// one's next round) takes it while the attempt runs, and one that is
/// never reported (the process died) comes due again then. On PostgreSQL
/// rows another instance is taking are skipped, not waited for.
pub async fn claim(db: &Db, at: i64, lease_until: i64, limit: i64) -> Result<Vec<Delivery>, Error> {
    // On PostgreSQL the rows are picked once (materialized CTEs): a
    // subquery with SKIP LOCKED that the planner ran again could pick
    // other rows each time, past the limit. (A window function cannot
    // share a SELECT with FOR UPDATE: the fair choice comes first.)
    let sql = if db.is_postgres() {
        "WITH candidates AS MATERIALIZED (SELECT id, client_id, next_attempt_at FROM logout_deliveries \
         WHERE next_attempt_at <= $1 ORDER BY next_attempt_at, id LIMIT $5), \
         fair AS MATERIALIZED (SELECT id FROM (SELECT id, next_attempt_at, ROW_NUMBER() OVER \
         (PARTITION BY client_id ORDER BY next_attempt_at, id) AS n FROM candidates) AS ranked \
         ORDER BY n > $4, next_attempt_at, id LIMIT $3), \
         due AS MATERIALIZED (SELECT id FROM logout_deliveries WHERE id IN (SELECT id FROM fair) \
         AND next_attempt_at <= $1 FOR UPDATE SKIP LOCKED) \
         UPDATE logout_deliveries SET next_attempt_at = $2 WHERE id IN (SELECT id FROM due) \
         RETURNING id, client_id, uri, sid, subject, attempts"
    } else {
        "UPDATE logout_deliveries SET next_attempt_at = $2 WHERE id IN (\
         SELECT id FROM (SELECT id, next_attempt_at, ROW_NUMBER() OVER \
         (PARTITION BY client_id ORDER BY next_attempt_at, id) AS n FROM \
         (SELECT id, client_id, next_attempt_at FROM logout_deliveries WHERE next_attempt_at <= $1 \
         ORDER BY next_attempt_at, id LIMIT $5)) \
         ORDER BY n > $4, next_attempt_at, id LIMIT $3) \
         RETURNING id, client_id, uri, sid, subject, attempts"
    };
    let claimed = on_pool!(db.write(), p => sqlx::query_as::<_, Delivery>(sql)
        .bind(at).bind(lease_until).bind(limit).bind(PER_CLIENT).bind(CANDIDATES)
        .fetch_all(p).await)?;
    Ok(claimed)
}

/// A delivery to `client_id` failed (its endpoint unreachable or
/// failing): its other deliveries due at `at` wait until `until` too,
/// rather than fill the next rounds while the others' logouts wait, and
/// each counts the attempt the failure stood for (so a client that stays
/// down has its logouts given up after about a day, as if each had been
/// tried). Those taken by a round already are left to it.
pub async fn put_off_client(db: &Db, client_id: &str, at: i64, until: i64) -> Result<(), Error> {
    on_pool!(db.write(), p => sqlx::query(
        "UPDATE logout_deliveries SET next_attempt_at = $3, attempts = attempts + 1 \
         WHERE client_id = $1 AND next_attempt_at <= $2"
    ).bind(client_id).bind(at).bind(until).execute(p).await.map(|r| r.rows_affected()))?;
    Ok(())
}

/// The client acknowledged (or the delivery was given up): forget it.
pub async fn done(db: &Db, id: &str) -> Result<(), Error> {
    on_pool!(db.write(), p => sqlx::query("DELETE FROM logout_deliveries WHERE id = $1")
        .bind(id).execute(p).await.map(|r| r.rows_affected()))?;
    Ok(())
}

/// Give delivery `id` up, with `recorded`'s event (its failure) in the
/// same transaction: a crash between the two left a client never told
/// that a session ended, and no trace of it. Whether it was still there
/// to give up (another instance's attempt may have done it first).
pub async fn give_up(db: &Db, id: &str, mut recorded: InChange<'_>) -> Result<bool, Error> {
    let deleted = on_pool!(db.write(), p => {
        let mut tx = p.begin_with(db.begin_write()).await?;
        let deleted = sqlx::query("DELETE FROM logout_deliveries WHERE id = $1")
            .bind(id).execute(&mut *tx).await?.rows_affected();
        if deleted == 1 {
            record_in!(tx, recorded, &());
        }
        tx.commit().await?;
        Ok::<_, sqlx::Error>(deleted)
    })?;
    Ok(deleted == 1)
}

/// Try again at `next_at`, after an attempt that held the delivery until
/// `held_until` (the `lease_until` it was claimed with). Nothing changes
/// when the delivery is no longer held by that claim: its lease ran out
/// and another attempt (another instance's) has taken it since, and that
/// attempt reports its own outcome; reporting this one too would count
/// two attempts and put back the other's next one. Whether it changed.
pub async fn retry_at(db: &Db, id: &str, held_until: i64, next_at: i64) -> Result<bool, Error> {
    let changed = on_pool!(db.write(), p => sqlx::query(
        "UPDATE logout_deliveries SET attempts = attempts + 1, next_attempt_at = $1 \
         WHERE id = $2 AND next_attempt_at = $3"
    ).bind(next_at).bind(id).bind(held_until).execute(p).await.map(|r| r.rows_affected()))?;
    Ok(changed > 0)
}

/// How many deliveries are waiting.
pub async fn waiting(db: &Db) -> Result<i64, Error> {
    let (n,): (i64,) = on_pool!(db.read(), p => sqlx::query_as(
        "SELECT COUNT(*) FROM logout_deliveries"
    ).fetch_one(p).await)?;
    Ok(n)
}
