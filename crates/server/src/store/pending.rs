//! Authorization requests waiting for the person to log in or consent.
//!
//! The validated request is kept here, not in the browser, under a random
//! id that the pages carry. Each is bound to the browser that started it
//! (a digest of its browser cookie): a form posted with another browser's
//! cookie is refused, and the forms' CSRF tokens are derived from that
//! cookie (`http/cookies.rs`).

use crate::db::{on_pool, Db};
use crate::secret::{digests_equal, random_token, token_digest};
use crate::store::now;
use crate::Error;

/// How long a person has to log in and consent.
pub const LIFETIME: i64 = 30 * 60;

/// A pending request, as stored.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct Pending {
    /// Its id (in the pages' URLs and forms).
    pub id: String,
    browser_hash: Vec<u8>,
    /// The validated authorization request, JSON.
    pub request: String,
    /// The session, once the person has logged in.
    pub sid: Option<String>,
}

impl Pending {
    /// Whether `browser` (the cookie value) started this request.
    pub fn belongs_to(&self, browser: &str) -> bool {
        digests_equal(&self.browser_hash, &token_digest(browser))
    }
}

/// Keep `request` (JSON) for the browser whose cookie is `browser`.
pub async fn create(
    db: &Db,
    browser: &str,
    request: &str,
    sid: Option<&str>,
) -> Result<String, Error> {
    let id = random_token()?;
    let at = now();
    on_pool!(db.write(), p => sqlx::query(
        "INSERT INTO pending_authorizations (id, browser_hash, request, sid, created_at, expires_at) \
         VALUES ($1, $2, $3, $4, $5, $6)"
    ).bind(id.as_str()).bind(token_digest(browser)).bind(request)
    .bind(sid).bind(at).bind(at + LIFETIME).execute(p).await.map(|r| r.rows_affected()))?;
    Ok(id.to_string())
}

/// The pending request `id`, unless it expired.
pub async fn find(db: &Db, id: &str) -> Result<Option<Pending>, Error> {
    let pending = on_pool!(db.read(), p => sqlx::query_as::<_, Pending>(
        "SELECT id, browser_hash, request, sid FROM pending_authorizations \
         WHERE id = $1 AND expires_at > $2"
    ).bind(id).bind(now()).fetch_optional(p).await)?;
    Ok(pending)
}

/// Record the session the person logged in to.
pub async fn logged_in(db: &Db, id: &str, sid: &str) -> Result<(), Error> {
    on_pool!(db.write(), p => sqlx::query(
        "UPDATE pending_authorizations SET sid = $1 WHERE id = $2"
    ).bind(sid).bind(id).execute(p).await.map(|r| r.rows_affected()))?;
    Ok(())
}

/// Finish with `id`: a code was issued or the person said no. Returns
/// whether it was still there (a second submission finds nothing).
pub async fn finish(db: &Db, id: &str) -> Result<bool, Error> {
    let deleted = on_pool!(db.write(), p => sqlx::query(
        "DELETE FROM pending_authorizations WHERE id = $1"
    ).bind(id).execute(p).await.map(|r| r.rows_affected()))?;
    Ok(deleted == 1)
}
