//! Verification of this server's own access tokens, with a cache.
//!
//! Resource servers introspect the same token on every request they get;
//! an ECDSA verification costs tens of microseconds, a lookup well under
//! one. A verified token is remembered (by the SHA-256 of its text) until
//! it expires; everything that can change meanwhile is checked on every
//! call: expiry here, revocation by the callers. Keys are only removed
//! after every token they signed has expired, so a remembered token never
//! outlives its key.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use serde::Deserialize;
use tessera_jose::{jwt, Validation};

use super::App;
use crate::secret::token_digest;
use crate::store::users;

/// Tokens remembered at most before the cache starts over.
const CAPACITY: usize = 20_000;

/// The claims of our access tokens beyond the registered ones.
#[derive(Clone, Debug, Deserialize)]
pub(crate) struct OurClaims {
    pub client_id: String,
    #[serde(default)]
    pub scope: Option<String>,
}

/// A verified access token of this server.
pub(crate) type AccessToken = Arc<jwt::Token<OurClaims>>;

/// Recently verified access tokens.
#[derive(Debug, Default)]
pub struct VerifiedTokens {
    entries: RwLock<HashMap<Vec<u8>, AccessToken>>,
}

/// Who a live access token speaks for, once it is known that they still
/// stand.
#[derive(Debug)]
pub(crate) struct Owner {
    /// The user's login name, for a token issued to a user.
    pub username: Option<String>,
}

/// The owner of `token` if its client still exists and, for a user's
/// token, its user still exists and is enabled; `None` when either is gone
/// (the token then answers as inactive everywhere). The client comes from
/// the client cache, so a client deleted at another instance is seen
/// within `client_cache_ttl`; the user is read from the database.
pub(crate) async fn owner(app: &App, token: &AccessToken) -> Result<Option<Owner>, crate::Error> {
    let claims = &token.claims;
    if app
        .clients
        .find(&app.db, &claims.custom.client_id)
        .await?
        .is_none()
    {
        return Ok(None);
    }
    match &claims.sub {
        Some(sub) if sub != &claims.custom.client_id => Ok(users::find_by_id(&app.db, sub)
            .await?
            .filter(|u| !u.disabled)
            .map(|u| Owner {
                username: Some(u.username),
            })),
        _ => Ok(Some(Owner { username: None })),
    }
}

/// Whether `token` looks like a JWT (three dot-separated parts).
pub(crate) fn looks_like_jwt(token: &str) -> bool {
    token.bytes().filter(|b| *b == b'.').count() == 2
}

/// Verify one of our own access tokens: our keys, our issuer, `at+jwt`, a
/// `jti`, not expired. Revocation is the caller's to check.
pub(crate) fn verify_access_token(app: &App, token: &str) -> Option<AccessToken> {
    let now = crate::store::now();
    let live = |t: &AccessToken| t.claims.exp.is_some_and(|exp| exp.seconds() > now);
    let key = token_digest(token);
    let cache = &app.verified.entries;
    if let Some(hit) = cache.read().unwrap_or_else(|p| p.into_inner()).get(&key) {
        return live(hit).then(|| Arc::clone(hit));
    }
    let validation = Validation::new()
        .issuer(&app.config.issuer)
        .any_audience()
        .typ("at+jwt")
        .require("jti")
        .leeway(std::time::Duration::ZERO);
    let verified = Arc::new(
        jwt::verify::<OurClaims>(token, app.keys.verifying_keys().as_ref(), &validation).ok()?,
    );
    let mut entries = cache.write().unwrap_or_else(|p| p.into_inner());
    if entries.len() >= CAPACITY {
        entries.retain(|_, t| live(t));
        if entries.len() >= CAPACITY {
            entries.clear();
        }
    }
    entries.insert(key, Arc::clone(&verified));
    Some(verified)
}
