//! Revoked access tokens (by `jti`, until they expire) and used client
//! assertions (by issuer and `jti`, against replay).

use crate::db::{on_pool, Db};
use crate::Error;

/// Deny the access token `jti` until `expires_at`.
pub async fn revoke_access_token(db: &Db, jti: &str, expires_at: i64) -> Result<(), Error> {
    on_pool!(db.write(), p => sqlx::query(
        "INSERT INTO revoked_access_tokens (jti, expires_at) VALUES ($1, $2) ON CONFLICT DO NOTHING"
    ).bind(jti).bind(expires_at).execute(p).await.map(|r| r.rows_affected()))?;
    Ok(())
}

/// Whether the access token `jti` was revoked.
pub async fn is_access_token_revoked(db: &Db, jti: &str) -> Result<bool, Error> {
    let row: Option<(i64,)> = on_pool!(db.read(), p => sqlx::query_as(
        "SELECT expires_at FROM revoked_access_tokens WHERE jti = $1"
    ).bind(jti).fetch_optional(p).await)?;
    Ok(row.is_some())
}

/// Record a client assertion's `jti`; `false` if it was seen before (a
/// replay).
pub async fn use_assertion(
    db: &Db,
    issuer: &str,
    jti: &str,
    expires_at: i64,
) -> Result<bool, Error> {
    let inserted = on_pool!(db.write(), p => sqlx::query(
        "INSERT INTO used_assertions (issuer, jti, expires_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING"
    ).bind(issuer).bind(jti).bind(expires_at).execute(p).await.map(|r| r.rows_affected()))?;
    Ok(inserted == 1)
}

/// Every revoked access token that has not expired yet, in memory, so
/// introspection and the admin API check revocation without a query.
///
/// Revocations made through this instance are seen at once; those made
/// through another instance on the same database arrive with the next
/// [`RevokedTokens::reload`], which the server runs every second. Access
/// tokens live minutes and are rarely revoked, so the set stays small.
#[derive(Debug, Default)]
pub struct RevokedTokens {
    jtis: std::sync::RwLock<std::collections::HashSet<String>>,
}

impl RevokedTokens {
    /// Whether the access token `jti` is revoked.
    pub fn contains(&self, jti: &str) -> bool {
        self.jtis
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains(jti)
    }

    /// Revoke the access token `jti` until `expires_at`: in the database and
    /// here.
    pub async fn revoke(&self, db: &Db, jti: &str, expires_at: i64) -> Result<(), Error> {
        revoke_access_token(db, jti, expires_at).await?;
        self.jtis
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(jti.to_owned());
        Ok(())
    }

    /// Replace the set with the database's unexpired revocations.
    pub async fn reload(&self, db: &Db) -> Result<(), Error> {
        let rows: Vec<(String,)> = on_pool!(db.read(), p => sqlx::query_as(
            "SELECT jti FROM revoked_access_tokens WHERE expires_at > $1"
        ).bind(crate::store::now()).fetch_all(p).await)?;
        let fresh = rows.into_iter().map(|(jti,)| jti).collect();
        *self.jtis.write().unwrap_or_else(|p| p.into_inner()) = fresh;
        Ok(())
    }
}
