//! Protect a tower or axum API with JWT access tokens.
//!
//! ```
//! use axum::{routing::get, Router};
//! use tessera_guard::{AccessToken, Guard, GuardLayer, RequireScope};
//! # fn main() -> Result<(), tessera_jose::Error> {
//! # let jwks = r#"{"keys":[]}"#;
//!
//! async fn items(token: AccessToken) -> String {
//!     format!("items for {}", token.subject().unwrap_or("?"))
//! }
//!
//! let keys = tessera_jose::KeySet::from_jwks(&tessera_jose::JwkSet::from_json(jwks)?)?;
//! let guard = Guard::builder("https://auth.example.com", "store-api", keys).build()?;
//! let app: Router = Router::new()
//!     .route("/items", get(items).layer(RequireScope::any(["items:read"])))
//!     .layer(GuardLayer::new(guard));
//! # Ok(())
//! # }
//! ```
//!
//! [`GuardLayer`] checks the `Authorization: Bearer` token of every
//! request (signature with the configured keys, issuer, audience, `typ`
//! `at+jwt`, expiry) and hands the verified [`AccessToken`] to handlers;
//! [`RequireScope`] adds per-route scope requirements. Failures answer as
//! RFC 6750 §3 says: 401 `invalid_token` (with nothing an attacker could
//! use), 400 `invalid_request` for a malformed header, 403
//! `insufficient_scope` naming the scope needed.
//!
//! Keys come from a [`KeySet`](tessera_jose::KeySet) or from a
//! [`RemoteJwks`]: a JWKS URL, or the issuer's metadata, fetched and cached
//! (max-age within bounds, refetch on an unknown `kid` with a cooldown,
//! one fetch at a time, last good keys on failure, bounded time and size).
//! A token whose `kid` the keys do not know while they cannot be fetched
//! is answered 503, not 401: it may be signed by a key the issuer
//! published since, and a client told its token is invalid throws it
//! away.
//!
//! ## Tokens from other issuers
//!
//! The defaults are RFC 9068's, which Tessera follows. Other issuers'
//! access tokens differ in ways the guard either reads or lets you set:
//! - `typ`: Keycloak, Microsoft Entra ID, Auth0 and Okta write `JWT` (or
//!   nothing), not `at+jwt`. Accept them with
//!   [`GuardBuilder::typ`]`(None)` (or `Some("JWT")`, which also refuses
//!   a token with no `typ`); the issuer, audience, signature and
//!   expiry are checked all the same, and a token that shows it is an ID
//!   or logout token (`at_hash`, `c_hash`, `events`, a `nonce` without
//!   a scope, Keycloak's `typ` claim, AWS Cognito's `token_use` other
//!   than `access`) is refused, whichever `typ` is required (an app that checks
//!   its provider's ID or logout tokens with a guard says so:
//!   [`GuardBuilder::not_access_tokens`]). Other kinds such issuers mint with the same
//!   `typ`, issuer and audience and none of those marks would pass: give
//!   the API an audience of its own, or require a scope
//!   ([`RequireScope`]).
//! - Sender-constrained tokens (`cnf`: DPoP, or a TLS client
//!   certificate), which Keycloak, Okta and Auth0 issue when a client asks,
//!   are refused: the guard checks bearer tokens, not the proof of
//!   possession such a token is only safe with.
//! - Scopes: read from `scope`, or, when a token has none, from `scp`
//!   (Entra ID writes a string, Okta an array); either may be a
//!   space-separated string or an array of strings.
//! - The client: [`AccessToken::client_id`] reads `client_id`, `azp`,
//!   `cid` (Okta) or `appid` (Entra ID v1), the first there;
//!   [`GuardBuilder::clients`] accepts only some clients' tokens.
//! - The issuer must be the metadata's `issuer` exactly, a trailing `/`
//!   included (Auth0's has one); [`GuardBuilder::also_issuer`] accepts
//!   other names under the same keys.
//!
//! Issuer by issuer (from their documentation; the guard's own tests use
//! tokens shaped as they describe):
//! - Keycloak: `typ(None)` (or its client's `at+jwt` option), and an
//!   audience mapper that puts the API's audience in its tokens.
//! - Microsoft Entra ID: `typ(None)`; the API's application ID URI or
//!   client id as audience. v2 tokens: issuer
//!   `https://login.microsoftonline.com/{tenant}/v2.0`, discovered; v1
//!   tokens (the app registration's `accessTokenAcceptedVersion` unset
//!   or 1): issuer `https://sts.windows.net/{tenant}/`, keys from
//!   [`RemoteJwks::url`]`("https://login.microsoftonline.com/{tenant}/discovery/keys")`.
//!   An API for several tenants names each one's issuer
//!   ([`GuardBuilder::also_issuer`]), with keys from the `common` key
//!   set (`…/common/discovery/v2.0/keys`); one for every tenant names
//!   `https://login.microsoftonline.com/{tenantid}/v2.0`, which accepts a
//!   token whose `iss` is that with its `tid` put in (and then decides
//!   by `tid` which tenants it serves). A key of the remote set that
//!   names its `issuer` (the `common` set's do) verifies that issuer's
//!   tokens only, its tenant put in the same way (and, for the v2
//!   issuer, the same tenant's v1 tokens, which Entra ID signs with the
//!   same keys). Tokens of daemons (client credentials) carry their
//!   permissions in `roles`, not `scp`: check
//!   `token.claims()["roles"]` in the handler, as [`RequireScope`]
//!   reads scopes only.
//! - Auth0, Okta (a custom authorization server), Ory Hydra, ZITADEL:
//!   `typ(None)`, the audience the API is registered with.
//! - AWS Cognito: access tokens carry no `aud` and no `typ`:
//!   `typ(None).any_audience().clients([app client ids])`; its ID tokens
//!   are refused by their `token_use`.
//! - Google: `also_issuer("accounts.google.com")` beside
//!   `https://accounts.google.com`, which it also writes.
//! - Dex and authentik mint access tokens shaped as ID tokens (`at_hash`,
//!   or a `nonce` without a scope), which cannot be told apart from their
//!   ID tokens: such an API checks them with
//!   [`GuardBuilder::not_access_tokens`], and accepts either kind.
//! - Kubernetes service-account tokens: `typ(None)`; its key set needs
//!   credentials unless the cluster lets anyone read it (the
//!   `system:service-account-issuer-discovery` role), else hand the keys
//!   over through a [`KeyProvider`], and trust the cluster's CA
//!   ([`RemoteJwks::root_certificates`]).
//! - Firebase Authentication publishes X.509 certificates rather than a
//!   JWK set: their public keys (`openssl x509 -pubkey -noout`) make a
//!   [`KeySet`](tessera_jose::KeySet) the application refreshes as they rotate.
//!
//! Why a token was refused is logged at `debug` level (target
//! `tessera_guard`), keys the issuer publishes that cannot be used (an
//! encryption key, an unknown algorithm) at `info` when they are fetched;
//! the client is only ever told that its token is invalid.
//!
//! A client reuses its token for many requests, so verified tokens are
//! remembered (by SHA-256, never past their `exp`, up to a size limit):
//! a repeated token costs a hash instead of a signature check.
//!
//! With a [`RevocationFeed`] ([`GuardBuilder::revocations`]), the guard
//! follows a Tessera server's revocation feed and refuses revoked tokens
//! (cached ones too) within about a second of their revocation; see
//! [`feed`](RevocationFeed) for the policy when the feed is away. With
//! [`GuardBuilder::resource_metadata`] and a [`ProtectedResource`], the API
//! publishes RFC 9728 metadata and names it in its challenges, so clients
//! find the authorization server from the API.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod discovery;
mod error;
mod feed;
mod guard;
mod layer;
mod remote;
mod resource;
pub mod revocation;
mod scope;

pub use discovery::{check_transport, environment_proxies, FetchError};
pub use error::Rejection;
pub use feed::{
    FeedStatus, RevocationFeed, RevocationFeedBuilder, WhenUnreachable, FEED_METADATA, FEED_SCOPE,
    MAX_IDENTIFIER_LEN,
};
pub use guard::{AccessToken, Guard, GuardBuilder, KeyProvider, Keys, KeysFuture, KeysUnavailable};
pub use layer::{GuardLayer, GuardService, ResponseFuture};
pub use remote::RemoteJwks;
pub use resource::ProtectedResource;
pub use scope::{RequireScope, RequireScopeService};
