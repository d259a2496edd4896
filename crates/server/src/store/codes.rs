//! Authorization codes (RFC 6749 §4.1.2): 256 random bits, stored as a
//! digest, valid 60 seconds, used once, bound to the client, the redirect
//! URI, the PKCE challenge, the nonce, the scopes, the user and the
//! session.
//!
//! Redeeming claims the code in one statement (`used_at IS NULL` in its
//! `WHERE`), so of two concurrent exchanges exactly one wins. A code that
//! comes back after its first use revokes what that use issued (RFC 6749
//! §4.1.2): the first exchange records its refresh family and access
//! token on the code, and whichever of the two writes comes second sees
//! the other's mark.

use zeroize::Zeroizing;

use crate::db::{on_pool, Db};
use crate::secret::{random_token, token_digest};
use crate::store::now;
use crate::Error;

/// How long a code lives.
pub const LIFETIME: i64 = 60;

/// What a code is bound to.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct Grant {
    /// The client it was issued to.
    pub client_id: String,
    /// The user.
    pub user_id: String,
    /// The session it was issued in.
    pub sid: String,
    /// The redirect URI it was sent to.
    pub redirect_uri: String,
    /// The PKCE S256 challenge.
    pub code_challenge: String,
    /// The `nonce` of the authorization request.
    pub nonce: Option<String>,
    /// The granted scopes.
    pub scope: String,
    /// When the user authenticated.
    pub auth_time: i64,
}

/// The outcome of presenting a code.
#[derive(Debug)]
pub enum Redeemed {
    /// The first use: the code is spent now.
    First(Grant),
    /// Unknown, expired, or issued to another client.
    Invalid,
    /// Used before: whatever the first use issued is to be revoked.
    Replayed(Issued),
}

/// What a code's first use issued.
#[derive(Clone, Debug, Default, sqlx::FromRow)]
pub struct Issued {
    /// The refresh-token family, if one was started.
    pub family_id: Option<String>,
    /// The access token's `jti`.
    pub access_jti: Option<String>,
    /// When that access token expires.
    pub access_expires_at: Option<i64>,
}

/// Store a code for `grant`; returns it (shown once, to the client).
pub async fn issue(db: &Db, grant: &Grant) -> Result<Zeroizing<String>, Error> {
    let code = random_token()?;
    let at = now();
    on_pool!(db.write(), p => sqlx::query(
        "INSERT INTO authorization_codes (code_hash, client_id, user_id, sid, redirect_uri, code_challenge, \
         nonce, scope, auth_time, created_at, expires_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
    ).bind(token_digest(&code)).bind(&grant.client_id).bind(&grant.user_id).bind(&grant.sid)
    .bind(&grant.redirect_uri).bind(&grant.code_challenge).bind(&grant.nonce).bind(&grant.scope)
    .bind(grant.auth_time).bind(at).bind(at + LIFETIME)
    .execute(p).await.map(|r| r.rows_affected()))?;
    Ok(code)
}

const GRANT_COLUMNS: &str =
    "client_id, user_id, sid, redirect_uri, code_challenge, nonce, scope, auth_time";

/// Present `code` for `client_id`: spend it if it is live and theirs.
pub async fn redeem(db: &Db, code: &str, client_id: &str) -> Result<Redeemed, Error> {
    let at = now();
    let hash = token_digest(code);
    // `fetch_all`: see `crate::db`, "Writes that return rows".
    let claimed: Vec<Grant> = on_pool!(db.write(), p => sqlx::query_as::<_, Grant>(&format!(
        "UPDATE authorization_codes SET used_at = $1 \
         WHERE code_hash = $2 AND client_id = $3 AND used_at IS NULL AND expires_at > $1 \
         RETURNING {GRANT_COLUMNS}"
    )).bind(at).bind(&hash).bind(client_id).fetch_all(p).await)?;
    if let Some(grant) = claimed.into_iter().next() {
        return Ok(Redeemed::First(grant));
    }
    // Not claimed: a replay by its own client marks the code (so that a
    // first use still finishing revokes what it issues) and revokes what
    // the first use recorded.
    let replayed: Vec<Issued> = on_pool!(db.write(), p => sqlx::query_as::<_, Issued>(
        "UPDATE authorization_codes SET replayed_at = $1 \
         WHERE code_hash = $2 AND client_id = $3 AND used_at IS NOT NULL \
         RETURNING family_id, access_jti, access_expires_at"
    ).bind(at).bind(&hash).bind(client_id).fetch_all(p).await)?;
    Ok(match replayed.into_iter().next() {
        Some(issued) => Redeemed::Replayed(issued),
        None => Redeemed::Invalid,
    })
}

/// Record what the first use of `code` issued. Returns `true` when the
/// code was replayed meanwhile: the caller revokes it all at once.
pub async fn record_issued(db: &Db, code: &str, issued: &Issued) -> Result<bool, Error> {
    let rows: Vec<(Option<i64>,)> = on_pool!(db.write(), p => sqlx::query_as(
        "UPDATE authorization_codes SET family_id = $1, access_jti = $2, access_expires_at = $3 \
         WHERE code_hash = $4 RETURNING replayed_at"
    ).bind(&issued.family_id).bind(&issued.access_jti).bind(issued.access_expires_at)
    .bind(token_digest(code)).fetch_all(p).await)?;
    Ok(rows.into_iter().next().is_some_and(|(r,)| r.is_some()))
}
