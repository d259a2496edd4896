//! Access tokens (RFC 9068), in one place: the claims this server puts in
//! them, minting, verifying with a cache, and what a live token must still
//! pass (not revoked, its client and user still standing).
//!
//! Resource servers introspect the same token on every request they get;
//! an ECDSA verification costs tens of microseconds, a lookup well under
//! one. A verified token is remembered (by the SHA-256 of its text) until
//! it expires; everything that can change meanwhile is checked on every
//! call to [`AccessTokens::live`]: expiry, revocation, the client and the
//! user. Keys are only removed after every token they signed has expired,
//! so a remembered token never outlives its key.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tessera_jose::{jwt, Claims, NumericDate, Validation};

use crate::db::Db;
use crate::keys::Keys;
use crate::secret::token_digest;
use crate::store::clients::ClientCache;
use crate::store::revocation::Revocations;
use crate::store::users;
use crate::Error;
use tessera_guard::revocation::Revocable;

/// Tokens remembered at most before the cache starts over.
const CAPACITY: usize = 20_000;

/// The claims of this server's access tokens beyond the registered ones
/// (RFC 9068 §2.2).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct AccessClaims {
    /// The client the token was issued to.
    pub client_id: String,
    /// The granted scopes, space-separated (absent when none).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub scope: String,
    /// When the user authenticated (tokens issued to users).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_time: Option<i64>,
    /// The sign-in session (tokens of the code flow and their refreshes):
    /// ending it revokes them, here and at resource servers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sid: Option<String>,
    /// The refresh-token family the token was minted with (a grant that
    /// issued or rotated a refresh token): revoking that family, by its
    /// client (RFC 7009) or on reuse of a rotated token, revokes it, here
    /// and at resource servers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_family: Option<String>,
}

/// How far ahead of this instance another instance's clock may be when
/// it mints a token (`iat`, `nbf`): docs/server.md asks for clocks within
/// 2 s; this allows some more.
pub(crate) const INSTANCE_SKEW: Duration = Duration::from_secs(5);

/// A verified access token of this server.
pub type AccessToken = Arc<tessera_jose::Token<AccessClaims>>;

/// What the revocation log is asked of one of this server's access
/// tokens: its `jti`, subject, client, session, issue time, key and
/// refresh family.
pub fn revocable(token: &tessera_jose::Token<AccessClaims>) -> Revocable<'_> {
    let claims = &token.claims;
    Revocable {
        jti: claims.jti.as_deref(),
        sub: claims.sub.as_deref(),
        client_id: Some(&claims.custom.client_id),
        sid: claims.custom.sid.as_deref(),
        iat: claims.iat.map(|t| t.seconds()),
        kid: token.header.kid.as_deref(),
        family: claims.custom.refresh_family.as_deref(),
    }
}

/// What to put in a new access token.
#[derive(Clone, Debug)]
pub struct Mint<'a> {
    /// The client it is issued to.
    pub client_id: &'a str,
    /// `sub`: the user's id, or the client's.
    pub subject: &'a str,
    /// `aud`.
    pub audience: Vec<String>,
    /// The granted scopes.
    pub scope: String,
    /// When the user authenticated.
    pub auth_time: Option<i64>,
    /// How long it lives.
    pub ttl: Duration,
    /// The sign-in session.
    pub sid: Option<String>,
    /// The refresh-token family issued or rotated with it.
    pub family: Option<String>,
    /// Its `jti`, when chosen beforehand (a code exchange records it with
    /// the code before the token exists); else a random one.
    pub jti: Option<String>,
}

/// A minted token: its text and its id. Its `Debug` shows the id only.
pub struct Minted {
    /// The compact JWS.
    pub token: String,
    /// Its `jti`.
    pub jti: String,
}

impl std::fmt::Debug for Minted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Minted")
            .field("token", &"[REDACTED]")
            .field("jti", &self.jti)
            .finish()
    }
}

/// Who a live access token speaks for, now that they still stand.
#[derive(Debug)]
pub struct Owner {
    /// The user's login name, for a token issued to a user.
    pub username: Option<String>,
}

/// This server's access tokens: minting and checking.
#[derive(Debug)]
pub struct AccessTokens {
    issuer: String,
    keys: Arc<Keys>,
    revoked: Arc<Revocations>,
    verified: RwLock<HashMap<Vec<u8>, AccessToken>>,
}

impl AccessTokens {
    /// Tokens of `issuer`, signed with `keys`, refused once in `revoked`.
    pub fn new(issuer: String, keys: Arc<Keys>, revoked: Arc<Revocations>) -> AccessTokens {
        AccessTokens {
            issuer,
            keys,
            revoked,
            verified: RwLock::default(),
        }
    }

    /// The revocation log (synced by the server).
    pub fn revoked(&self) -> &Arc<Revocations> {
        &self.revoked
    }

    /// Sign a new access token (`typ: at+jwt`, a random `jti`) at `at`.
    pub fn mint(&self, mint: Mint<'_>, at: i64) -> Result<Minted, Error> {
        let claims = Claims::with_custom(AccessClaims {
            client_id: mint.client_id.to_owned(),
            scope: mint.scope,
            auth_time: mint.auth_time,
            sid: mint.sid,
            refresh_family: mint.family,
        })
        .issuer(&self.issuer)
        .subject(mint.subject)
        .audience(mint.audience)
        .issued_at(NumericDate::from_seconds(at))
        .expires_at(NumericDate::from_seconds(at).plus(mint.ttl));
        let claims = match mint.jti {
            Some(jti) => claims.jwt_id(jti),
            None => claims.random_jwt_id()?,
        };
        let token = self.keys.sign(&claims, at)?;
        Ok(Minted {
            token,
            jti: claims.jti.unwrap_or_default(),
        })
    }

    /// Verify one of this server's access tokens: its keys, its issuer,
    /// `at+jwt`, a `jti`, not expired. Revocation and owners are
    /// [`AccessTokens::live`]'s to check.
    pub fn verify(&self, token: &str) -> Option<AccessToken> {
        // Validation's clock (not behind the system clock), so that a
        // cached token expires when a fresh verification would refuse it.
        let now = tessera_jose::Clock::now(&tessera_jose::SystemClock).seconds();
        let live = |t: &AccessToken| t.claims.exp.is_some_and(|exp| exp.seconds() > now);
        let key = token_digest(token);
        if let Some(hit) = self
            .verified
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
        {
            return live(hit).then(|| Arc::clone(hit));
        }
        // A token minted by an instance whose clock is a little ahead
        // (docs/server.md: within 2 s) carries an `iat` in this one's
        // future: refused, it could not be revoked here (RFC 7009 answers
        // 200 for a token it does not know) and introspected as inactive.
        // The leeway is for `iat` and `nbf`; `exp` is held exactly below.
        let validation = Validation::new()
            .issuer(&self.issuer)
            .any_audience()
            .typ("at+jwt")
            .require("jti")
            .leeway(INSTANCE_SKEW);
        let verified = Arc::new(
            jwt::verify::<AccessClaims>(token, self.keys.verifying_keys().as_ref(), &validation)
                .ok()?,
        );
        if !live(&verified) {
            return None;
        }
        let mut entries = self.verified.write().unwrap_or_else(|p| p.into_inner());
        if entries.len() >= CAPACITY {
            entries.retain(|_, t| live(t));
            if entries.len() >= CAPACITY {
                entries.clear();
            }
        }
        entries.insert(key, Arc::clone(&verified));
        Some(verified)
    }

    /// A token that verifies, is not revoked, and whose client still
    /// exists and, for a user's token, whose user exists and is enabled;
    /// `None` otherwise (inactive everywhere, though its signature holds).
    /// The client comes from the client cache, so a client deleted at
    /// another instance is seen within `client_cache_ttl`; the user is
    /// read from the database.
    pub async fn live(
        &self,
        db: &Db,
        clients: &ClientCache,
        token: &str,
    ) -> Result<Option<(AccessToken, Owner)>, Error> {
        let Some(verified) = self.verify(token) else {
            return Ok(None);
        };
        // This server names the key of every token it signs: one without
        // a `kid` was not made here (it could only have been signed with
        // a key of the ring, one revoked since, say, that is still its
        // algorithm's only key here until the ring is read again).
        if verified.header.kid.is_none() {
            return Ok(None);
        }
        // This server's tokens all name their key (a token verified
        // before its key was revoked may be in the cache).
        let Some(owner) = self.standing(db, clients, revocable(&verified)).await? else {
            return Ok(None);
        };
        Ok(Some((verified, owner)))
    }
}

impl AccessTokens {
    /// Whether a verified token still stands: not revoked (by `jti`, its
    /// user, its client or its session: the feed's rules), its client
    /// still there and, for a user's token, its user there and enabled.
    /// The owner if so.
    pub async fn standing(
        &self,
        db: &Db,
        clients: &ClientCache,
        token: Revocable<'_>,
    ) -> Result<Option<Owner>, Error> {
        let client_id = token.client_id.unwrap_or_default();
        // A copy of the log not read lately may lack a revocation made
        // through another instance: read it, or answer 503.
        self.revoked.current(db).await?;
        if self.revoked.refuses(token) || clients.find(db, client_id).await?.is_none() {
            return Ok(None);
        }
        match token.sub {
            Some(sub) if sub != client_id => Ok(users::find_by_id(db, sub)
                .await?
                .filter(|u| !u.disabled)
                .map(|user| Owner {
                    username: Some(user.username),
                })),
            _ => Ok(Some(Owner { username: None })),
        }
    }
}

/// Whether `token` looks like a JWT (three dot-separated parts).
pub fn looks_like_jwt(token: &str) -> bool {
    token.bytes().filter(|b| *b == b'.').count() == 2
}

#[cfg(test)]
mod tests {
    use super::Minted;

    /// A minted token's `Debug` shows its id, not the bearer token.
    #[test]
    fn a_minted_tokens_debug_shows_no_token() {
        let minted = Minted {
            token: "eyJhbGciOiJFUzI1NiJ9.e30.secret".into(),
            jti: "j-1".into(),
        };
        let shown = format!("{minted:?}");
        assert!(!shown.contains("eyJ"), "{shown}");
        assert!(shown.contains("j-1"), "{shown}");
    }
}
