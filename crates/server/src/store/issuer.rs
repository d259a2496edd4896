//! The issuer the server last started as, kept for the admin commands:
//! run without the server's configuration, they would check what they
//! register against the default issuer (plain http on loopback) and let
//! through what the server refuses.

use crate::db::{on_pool, Db};
use crate::Error;

/// Record that the server starts as `issuer`; the issuer recorded before,
/// when it was another.
pub async fn record(db: &Db, issuer: &str) -> Result<Option<String>, Error> {
    let before = recorded(db).await?;
    if before.as_deref() == Some(issuer) {
        return Ok(None);
    }
    on_pool!(db.write(), p => sqlx::query(
        "INSERT INTO server_issuer (id, issuer) VALUES (1, $1) \
         ON CONFLICT (id) DO UPDATE SET issuer = excluded.issuer"
    ).bind(issuer).execute(p).await.map(|r| r.rows_affected()))?;
    Ok(before)
}

/// The issuer the server last started as, if it has started.
pub async fn recorded(db: &Db) -> Result<Option<String>, Error> {
    let stored: Option<(String,)> = on_pool!(db.read(), p => sqlx::query_as(
        "SELECT issuer FROM server_issuer WHERE id = 1"
    ).fetch_optional(p).await)?;
    Ok(stored.map(|(issuer,)| issuer))
}
