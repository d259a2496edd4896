//! This server's own access tokens on its own APIs (`/admin`,
//! `/oauth2/userinfo`): `tessera-guard`'s `Guard` over the live key ring,
//! so there is one way to read a bearer token and answer its errors.

use std::sync::Arc;

use tessera_guard::{AccessToken, Guard, Keys};

use super::App;

/// Which audiences one of this server's APIs takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Audience {
    /// Tokens for any audience (userinfo, as OpenID Connect has it: a
    /// client's token for its API reads its user's claims; the revocation
    /// feed, which resource servers read with their own tokens).
    Any,
    /// Only tokens whose `aud` names this server's issuer (the admin API:
    /// a token a client got for its API, replayed by that API or by
    /// whatever sees its requests, must not administer this server; RFC
    /// 9068 §4).
    Issuer,
}

/// A guard for this server's access tokens: its live keys, its issuer,
/// `at+jwt` (the guard's default), the `audience` given, no cache (the
/// callers check each token's standing anyway). The leeway is the one
/// access tokens get everywhere in this server (a token minted by an
/// instance a little ahead has an `iat` in this one's future);
/// [`still_standing`] holds `exp` exactly.
pub(crate) fn own_guard(app: &App, audience: Audience) -> Result<Guard, tessera_jose::Error> {
    let keys = Arc::clone(&app.keys);
    let ring = move |_kid: Option<&str>| {
        let set = keys.verifying_keys();
        async move { Ok::<_, tessera_guard::KeysUnavailable>(set) }
    };
    let issuer = app.config.issuer.clone();
    let builder = match audience {
        Audience::Any => Guard::builder(issuer, "", Keys::provider(ring)).any_audience(),
        Audience::Issuer => Guard::builder(issuer.clone(), issuer, Keys::provider(ring)),
    };
    builder
        .leeway(crate::access::INSTANCE_SKEW)
        .cache_size(0)
        .build()
}

/// Whether a token the guard verified still stands: not expired (by this
/// instance's clock, without the guard's leeway), not revoked, its client
/// still there and, for a user's token, its user there and enabled
/// (`access.rs`'s check).
pub(crate) async fn still_standing(app: &App, token: &AccessToken) -> Result<bool, crate::Error> {
    Ok(owner_if_standing(app, token).await?.is_some())
}

/// [`still_standing`], saying whose token it is when it stands (the
/// user's login name, for a user's token).
pub(crate) async fn owner_if_standing(
    app: &App,
    token: &AccessToken,
) -> Result<Option<crate::access::Owner>, crate::Error> {
    let now = tessera_jose::Clock::now(&tessera_jose::SystemClock);
    if token.expires_at().is_none_or(|exp| exp <= now) {
        return Ok(None);
    }
    let claims =
        tessera_guard::revocation::Revocable::from_claims(token.claims()).signed_by(token.key_id());
    app.access.standing(&app.db, &app.clients, claims).await
}
