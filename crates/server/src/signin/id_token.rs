//! ID tokens (OpenID Connect Core §2) and logout tokens (Back-Channel
//! Logout 1.0 §2.4).
//!
//! The ID token says who signed in and in which session; it carries no
//! profile claims. Those come from the userinfo endpoint, because an ID
//! token travels further than an access token (as `id_token_hint` in the
//! logout URL, so into browser history and proxy logs), and Core §5.4
//! allows either when an access token is issued.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tessera_jose::{Algorithm, Claims, NumericDate};

use crate::keys::Keys;
use crate::Error;

/// What an `id_token_hint` says, once its signature and issuer hold (an
/// expired hint is still a good hint: OpenID Connect Core §3.1.2.1 and
/// RP-Initiated Logout 1.0 §2).
#[derive(Debug, Deserialize)]
pub struct Hint {
    /// `iss`: this server.
    pub iss: String,
    /// `sub`: the user it was issued for.
    pub sub: Option<String>,
    /// `aud`: the clients it was issued to.
    pub aud: tessera_jose::Audience,
    /// `sid`: the session it was issued in.
    pub sid: Option<String>,
}

/// Read `token` as an ID token this server issued (signed by one of its
/// published keys, `typ` `JWT` or none, `iss` this server); `None`
/// otherwise. Its expiry is not checked: a hint names, it does not
/// authorize.
pub fn read_hint(keys: &Keys, issuer: &str, token: &str) -> Option<Hint> {
    match read_authorize_hint(keys, issuer, token) {
        Hinted::Verified(hint) => Some(hint),
        Hinted::KeyGone(_) | Hinted::Refused => None,
    }
}

/// What an `id_token_hint` at the authorization endpoint names.
#[derive(Debug)]
pub enum Hinted {
    /// An ID token of this server: [`read_hint`] holds.
    Verified(Hint),
    /// Shaped as an ID token of this server, but signed under a `kid` it
    /// does not publish: in life an ID token from before a key rotation,
    /// which a relying party keeps for as long as its session (silent
    /// renewal sends it with `prompt=none`); as well one signed by a
    /// revoked key, or forged. Its claims are as written, unverified:
    /// good for its shape, never for who it names.
    KeyGone(Hint),
    /// Not an ID token of this server.
    Refused,
}

/// Read an `id_token_hint` sent to the authorization endpoint. One whose
/// key is gone is told apart from one that is not this server's ID token
/// for the client: refusing it (`invalid_request`) turned every relying
/// party's silent renewal into a hard error after each key rotation,
/// where the person only needs to log in again, which is what the
/// endpoint then asks for. The logout endpoint, where a hint spares the
/// person a confirmation, keeps to [`read_hint`].
pub fn read_authorize_hint(keys: &Keys, issuer: &str, token: &str) -> Hinted {
    let verified = tessera_jose::jws::verify(
        token,
        keys.verifying_keys().as_ref(),
        &tessera_jose::jws::VerifyOptions::new(),
    );
    match verified {
        Ok(v) => hint_in(v.header(), v.payload(), issuer).map_or(Hinted::Refused, Hinted::Verified),
        Err(tessera_jose::Error::NoMatchingKey { kid: Some(_), .. }) => {
            tessera_jose::dangerous::decode_unverified(token)
                .ok()
                .and_then(|(header, payload)| hint_in(&header, &payload, issuer))
                .map_or(Hinted::Refused, Hinted::KeyGone)
        }
        Err(_) => Hinted::Refused,
    }
}

/// The hint in an ID token's header and payload: only ID tokens (not
/// access or logout tokens of this server), issued here.
fn hint_in(header: &tessera_jose::jws::Header, payload: &[u8], issuer: &str) -> Option<Hint> {
    if header.typ.as_deref().is_some_and(|t| t != "JWT") {
        return None;
    }
    let hint: Hint = serde_json::from_slice(payload).ok()?;
    (hint.iss == issuer).then_some(hint)
}

/// The event a logout token carries (Back-Channel Logout 1.0 §2.4).
pub const BACKCHANNEL_EVENT: &str = "http://schemas.openid.net/event/backchannel-logout";

/// How long a logout token is valid: it is sent at once.
const LOGOUT_TOKEN_TTL: Duration = Duration::from_secs(120);

/// The claims of an ID token beyond the registered ones.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdClaims {
    /// When the user authenticated.
    pub auth_time: i64,
    /// The authorization request's `nonce`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nonce: Option<String>,
    /// The session.
    pub sid: String,
    /// Half the hash of the access token issued with it (Core §3.1.3.6).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at_hash: Option<String>,
}

/// What goes into an ID token.
#[derive(Clone, Debug)]
pub struct IdToken<'a> {
    /// The issuer.
    pub issuer: &'a str,
    /// The user's id (the access token's `sub` too).
    pub subject: &'a str,
    /// The client: the only audience, so no `azp` (Core §2 asks for it
    /// only with several audiences).
    pub client_id: &'a str,
    /// The claims beyond the registered ones.
    pub claims: IdClaims,
    /// How long it lives.
    pub ttl: Duration,
}

/// Sign an ID token with the `alg` key at `at`.
pub fn sign(keys: &Keys, alg: Algorithm, token: IdToken<'_>, at: i64) -> Result<String, Error> {
    let claims = Claims::with_custom(token.claims)
        .issuer(token.issuer)
        .subject(token.subject)
        .audience(token.client_id)
        .issued_at(NumericDate::from_seconds(at))
        .expires_at(NumericDate::from_seconds(at).plus(token.ttl));
    keys.sign_as(alg, "JWT", &claims, at)
}

/// `at_hash` of `access_token` for an ID token signed with `alg`: the
/// left half of the hash the algorithm uses, base64url (Core §3.1.3.6;
/// SHA-512 for Ed25519).
pub fn at_hash(alg: Algorithm, access_token: &str) -> String {
    tessera_jose::jwt::half_hash(alg, access_token)
}

/// The claims of a logout token beyond the registered ones.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LogoutClaims {
    /// `{"http://schemas.openid.net/event/backchannel-logout": {}}`.
    pub events: BTreeMap<String, serde_json::Map<String, serde_json::Value>>,
    /// The session that ended.
    pub sid: String,
}

/// Sign a logout token for `client_id` about session `sid` of `subject`
/// (`typ: logout+jwt`, §2.4), with the client's ID token algorithm.
pub fn logout_token(
    keys: &Keys,
    issuer: &str,
    alg: Algorithm,
    client_id: &str,
    subject: &str,
    sid: &str,
    at: i64,
) -> Result<String, Error> {
    let mut events = BTreeMap::new();
    events.insert(BACKCHANNEL_EVENT.to_owned(), serde_json::Map::new());
    let claims = Claims::with_custom(LogoutClaims {
        events,
        sid: sid.to_owned(),
    })
    .issuer(issuer)
    .subject(subject)
    .audience(client_id)
    .issued_at(NumericDate::from_seconds(at))
    .expires_at(NumericDate::from_seconds(at).plus(LOGOUT_TOKEN_TTL))
    .random_jwt_id()?;
    keys.sign_as(alg, "logout+jwt", &claims, at)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_hash_is_the_left_half_of_the_algorithms_hash() {
        // OpenID Connect Core, Appendix A.3 (code id_token token example).
        let token = "jHkWEdUXMU1BwAsC4vtUsZwnNvTIxEl0z9K3vx5KF0Y";
        assert_eq!(at_hash(Algorithm::RS256, token), "77QmUPtjPfzWtF2AnpK9RQ");
        assert_eq!(at_hash(Algorithm::ES384, token).len(), 32);
        assert_eq!(at_hash(Algorithm::EdDSA, token).len(), 43);
    }
}
