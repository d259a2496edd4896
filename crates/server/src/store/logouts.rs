//! Back-channel logouts waiting to be delivered (OpenID Connect
//! Back-Channel Logout 1.0 §2.7), queued with the end of a session and
//! retried with backoff by the server (`signin::backchannel`).

use crate::db::{on_pool, Db};
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

/// Take up to `limit` deliveries due at `at`, oldest first, for one
/// attempt: each is put off until `lease_until` in the same statement, so
/// no other instance (nor this one's next round) takes it while the
/// attempt runs, and one that is never reported (the process died) comes
/// due again then. On PostgreSQL rows another instance is taking are
/// skipped, not waited for.
pub async fn claim(db: &Db, at: i64, lease_until: i64, limit: i64) -> Result<Vec<Delivery>, Error> {
    // On PostgreSQL the rows are picked once (a materialized CTE): a
    // subquery with SKIP LOCKED that the planner ran again could pick
    // other rows each time, past the limit.
    let sql = if db.is_postgres() {
        "WITH due AS MATERIALIZED (SELECT id FROM logout_deliveries WHERE next_attempt_at <= $1 \
         ORDER BY next_attempt_at, id LIMIT $3 FOR UPDATE SKIP LOCKED) \
         UPDATE logout_deliveries SET next_attempt_at = $2 WHERE id IN (SELECT id FROM due) \
         RETURNING id, client_id, uri, sid, subject, attempts"
    } else {
        "UPDATE logout_deliveries SET next_attempt_at = $2 WHERE id IN (\
         SELECT id FROM logout_deliveries WHERE next_attempt_at <= $1 \
         ORDER BY next_attempt_at, id LIMIT $3) \
         RETURNING id, client_id, uri, sid, subject, attempts"
    };
    let claimed = on_pool!(db.write(), p => sqlx::query_as::<_, Delivery>(sql)
        .bind(at).bind(lease_until).bind(limit).fetch_all(p).await)?;
    Ok(claimed)
}

/// The client acknowledged (or the delivery was given up): forget it.
pub async fn done(db: &Db, id: &str) -> Result<(), Error> {
    on_pool!(db.write(), p => sqlx::query("DELETE FROM logout_deliveries WHERE id = $1")
        .bind(id).execute(p).await.map(|r| r.rows_affected()))?;
    Ok(())
}

/// Try again at `next_at`.
pub async fn retry_at(db: &Db, id: &str, next_at: i64) -> Result<(), Error> {
    on_pool!(db.write(), p => sqlx::query(
        "UPDATE logout_deliveries SET attempts = attempts + 1, next_attempt_at = $1 WHERE id = $2"
    ).bind(next_at).bind(id).execute(p).await.map(|r| r.rows_affected()))?;
    Ok(())
}

/// How many deliveries are waiting.
pub async fn waiting(db: &Db) -> Result<i64, Error> {
    let (n,): (i64,) = on_pool!(db.read(), p => sqlx::query_as(
        "SELECT COUNT(*) FROM logout_deliveries"
    ).fetch_one(p).await)?;
    Ok(n)
}
