//! Client authentication at the token, introspection and revocation
//! endpoints: `client_secret_basic`, `client_secret_post` (RFC 6749
//! §2.3.1), `private_key_jwt` (RFC 7523 §2.2) and `none` for public
//! clients. Exactly one method per request. No HTTP here: the caller
//! hands over the `Authorization` header's bytes and the parameters.

use std::time::Duration;

use base64_simd::STANDARD;
use percent_encoding::percent_decode_str;
use tessera_jose::{jwt, NoCustomClaims, Validation};

use std::sync::Arc;

use super::{Parameters, Refusal};
use crate::db::Db;
use crate::secret::{digests_equal, token_digest};
use crate::store::clients::{Client, ClientCache};
use crate::store::revocation;
use crate::Error;

/// What a request presents to say which client it is.
pub struct Credentials<'a> {
    /// The `Authorization` header, as sent (one at most).
    pub authorization: Option<&'a [u8]>,
    /// The request's parameters (`client_id`, `client_secret`,
    /// `client_assertion`, …).
    pub params: &'a (dyn Parameters + Sync),
}

impl std::fmt::Debug for Credentials<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Secrets: never printed.
        f.debug_struct("Credentials").finish_non_exhaustive()
    }
}

/// What authenticating a client needs.
#[derive(Clone, Copy, Debug)]
pub struct Verifier<'a> {
    /// Clients.
    pub db: &'a Db,
    /// Recently used clients.
    pub clients: &'a ClientCache,
    /// This server's issuer (assertions are addressed to it).
    pub issuer: &'a str,
    /// The longest lifetime an assertion may claim
    /// (`tokens.max_assertion_lifetime`); its `jti` is kept that long to
    /// refuse replays.
    pub max_assertion_lifetime: Duration,
    /// Whether an assertion's `aud` must be the issuer alone, as one
    /// string (`tokens.strict_assertion_audience`).
    pub strict_audience: bool,
}

/// RFC 7523 §2.2's `client_assertion_type`.
pub const JWT_BEARER_ASSERTION: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// Clock skew allowed on an assertion (seconds): the leeway on its `exp`,
/// `nbf` and `iat`, and on its lifetime, so that a client whose clock is a
/// little ahead still fits its library's default. Its `jti` is kept this
/// long past `exp`.
const ASSERTION_SKEW: i64 = 60;

/// Which clients an endpoint serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Accept {
    /// Confidential clients only (introspection).
    Confidential,
    /// Public clients too, identified by `client_id` alone.
    AnyClient,
}

/// The method a request used.
enum Method<'a> {
    Secret {
        client_id: String,
        secret: String,
    },
    Assertion(&'a str),
    /// A public client, identified by its `client_id` alone.
    PublicClient(&'a str),
}

fn basic_credentials(credentials: &Credentials<'_>) -> Result<Option<(String, String)>, Refusal> {
    let Some(value) = credentials.authorization else {
        return Ok(None);
    };
    let bad = || Refusal::InvalidClient("malformed Basic credentials".into());
    let value = std::str::from_utf8(value).map_err(|_| bad())?;
    let Some((scheme, encoded)) = value.split_once(' ') else {
        return Err(bad());
    };
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(Refusal::InvalidClient(
            "unsupported Authorization scheme; use Basic".into(),
        ));
    }
    let decoded = STANDARD.decode_to_vec(encoded.trim()).map_err(|_| bad())?;
    let text = String::from_utf8(decoded).map_err(|_| bad())?;
    let (id, secret) = text.split_once(':').ok_or_else(bad)?;
    // RFC 6749 §2.3.1: both parts are form-urlencoded before joining.
    let decode = |s: &str| {
        percent_decode_str(&s.replace('+', " "))
            .decode_utf8()
            .map(|c| c.into_owned())
            .map_err(|_| bad())
    };
    let (id, secret) = (decode(id)?, decode(secret)?);
    if id.chars().chain(secret.chars()).any(char::is_control) {
        return Err(Refusal::InvalidRequest(
            "the Basic credentials hold a control character".into(),
        ));
    }
    Ok(Some((id, secret)))
}

fn method<'a>(credentials: &Credentials<'a>) -> Result<Method<'a>, Refusal> {
    let form = credentials.params;
    let basic = basic_credentials(credentials)?;
    let post_secret = form.get("client_secret");
    let assertion = form.get("client_assertion");
    let used = [basic.is_some(), post_secret.is_some(), assertion.is_some()]
        .iter()
        .filter(|u| **u)
        .count();
    if used > 1 {
        return Err(Refusal::InvalidRequest(
            "more than one client authentication method in one request".into(),
        ));
    }
    let body_id = form.get("client_id");
    if let Some((client_id, secret)) = basic {
        if body_id.is_some_and(|id| id != client_id) {
            return Err(Refusal::InvalidRequest(
                "client_id differs from the Basic credentials".into(),
            ));
        }
        return Ok(Method::Secret { client_id, secret });
    }
    if let Some(secret) = post_secret {
        let client_id = form
            .get("client_id")
            .ok_or_else(|| Refusal::InvalidRequest("missing parameter client_id".into()))?;
        return Ok(Method::Secret {
            client_id: client_id.to_owned(),
            secret: secret.to_owned(),
        });
    }
    if let Some(assertion) = assertion {
        if form.get("client_assertion_type") != Some(JWT_BEARER_ASSERTION) {
            return Err(Refusal::InvalidRequest(format!(
                "client_assertion_type must be {JWT_BEARER_ASSERTION}"
            )));
        }
        return Ok(Method::Assertion(assertion));
    }
    match body_id {
        Some(id) => Ok(Method::PublicClient(id)),
        None => Err(Refusal::InvalidClient(
            "client authentication required".into(),
        )),
    }
}

/// Authenticate the client that `credentials` name.
pub async fn authenticate(
    verifier: Verifier<'_>,
    credentials: &Credentials<'_>,
    accept: Accept,
) -> Result<Arc<Client>, Refusal> {
    let unknown = || Refusal::InvalidClient("unknown client or wrong credentials".into());
    match method(credentials)? {
        // A public client named in the Basic header with an empty password
        // (requests-oauthlib's way for a client without a secret): the
        // `none` method, as `client_id` in the body is. A confidential
        // client's empty password is a wrong one.
        Method::Secret { client_id, secret } if secret.is_empty() => {
            match verifier.clients.find(verifier.db, &client_id).await? {
                Some(client) if client.is_public() => as_public(client, accept),
                _ => Err(unknown()),
            }
        }
        Method::Secret { client_id, secret } => {
            let client = verifier.clients.find(verifier.db, &client_id).await?;
            let presented = token_digest(&secret);
            // The same work whether or not the client exists.
            let expected = client
                .as_ref()
                .and_then(|c| c.secret_hash.clone())
                .unwrap_or_else(|| token_digest("no such client"));
            match client {
                Some(client)
                    if client.secret_hash.is_some() && digests_equal(&presented, &expected) =>
                {
                    Ok(client)
                }
                _ => Err(unknown()),
            }
        }
        Method::Assertion(assertion) => {
            authenticate_assertion(verifier, credentials, assertion).await
        }
        Method::PublicClient(client_id) => {
            let client = verifier
                .clients
                .find(verifier.db, client_id)
                .await?
                .ok_or_else(unknown)?;
            if !client.is_public() {
                return Err(Refusal::InvalidClient(
                    "this client must authenticate (client_secret_basic, client_secret_post or private_key_jwt)".into(),
                ));
            }
            as_public(client, accept)
        }
    }
}

/// Public client `client`, named but not authenticated (the `none`
/// method), where `accept` takes one.
fn as_public(client: Arc<Client>, accept: Accept) -> Result<Arc<Client>, Refusal> {
    if accept == Accept::Confidential {
        return Err(Refusal::InvalidClient(
            "public clients cannot use this endpoint".into(),
        ));
    }
    Ok(client)
}

/// A JWT assertion (RFC 7523) verified with its issuer's registered keys,
/// not yet spent: whoever accepts it calls [`Assertion::spend`] once every
/// other check of the request has passed, so that a request refused for
/// something else (a scope the user lacks, a client that may not use the
/// grant) leaves the assertion usable by the corrected request.
#[derive(Debug)]
pub struct Assertion {
    /// The client that issued (signed) it.
    pub client: Arc<Client>,
    /// Whom it is about.
    pub subject: String,
    /// Its `jti`.
    jti: String,
    /// Until when it verifies: its `exp`, the leeway on it, and a few
    /// seconds for instances' clocks to differ (within 2 s, server.md).
    /// Its `jti` is kept as long; forgotten at `exp`, a replay within the
    /// leeway passed.
    verifies_until: i64,
}

impl Assertion {
    /// Record its `jti` as used: `Ok(Err(reason))` if it was used before
    /// (a replay).
    pub async fn spend(&self, db: &Db) -> Result<Result<(), String>, Error> {
        let client_id = &self.client.client_id;
        if revocation::use_assertion(db, client_id, &self.jti, self.verifies_until).await? {
            Ok(Ok(()))
        } else {
            tracing::warn!(client_id, "assertion replayed");
            Ok(Err("assertion already used".into()))
        }
    }

    /// Forget that it was used, after a request that spent it failed
    /// before it answered (`grant::TakeBack`): its retry may use it.
    pub async fn unspend(&self, db: &Db) -> Result<(), Error> {
        revocation::forget_assertion(db, &self.client.client_id, &self.jti).await
    }
}

/// Verify `assertion`: signed with the registered keys of the client named
/// in `iss`, for this server, short-lived. Its `jti` is not spent yet
/// ([`Assertion::spend`]). `Ok(Err(reason))` is a refusal; `Err` a server
/// failure.
pub async fn verify_assertion(
    verifier: Verifier<'_>,
    assertion: &str,
) -> Result<Result<Assertion, String>, Error> {
    // The issuer names the client whose keys to try; nothing else from the
    // unverified token is used.
    let Ok((_, claims)) = tessera_jose::dangerous::decode_unverified_claims(assertion) else {
        return Ok(Err("malformed assertion".into()));
    };
    let Some(client_id) = claims
        .get("iss")
        .and_then(|v| v.as_str())
        .map(str::to_owned)
    else {
        return Ok(Err("assertion without iss".into()));
    };
    if client_id.chars().any(char::is_control) {
        return Ok(Err("assertion iss holds a control character".into()));
    }
    let Some(client) = verifier.clients.find(verifier.db, &client_id).await? else {
        return Ok(Err("unknown issuer".into()));
    };
    let Some(keys) = client.verify_keys()? else {
        return Ok(Err("the issuer has no registered keys".into()));
    };
    let issuer = verifier.issuer;
    // Strict: this server's issuer, as one string. Otherwise the token
    // endpoint's URL too, as RFC 7523 §3 allows and many libraries send;
    // a client that addresses its assertions by what another server's
    // metadata says could then be led to address one to this server
    // while sending it elsewhere (the "audience injection" of 2025).
    if verifier.strict_audience && !claims.get("aud").is_some_and(|a| a.is_string()) {
        return Ok(Err(
            "assertion aud must be this server's issuer, as one string".into(),
        ));
    }
    let mut validation = Validation::new()
        .leeway(std::time::Duration::from_secs(
            ASSERTION_SKEW.unsigned_abs(),
        ))
        .issuer(&client_id)
        .audience(issuer)
        .require("sub")
        .require("jti");
    if !verifier.strict_audience {
        validation = validation.audience(format!("{}/oauth2/token", issuer.trim_end_matches('/')));
    }
    let token = match jwt::verify::<NoCustomClaims>(assertion, &*keys, &validation) {
        Ok(token) => token,
        Err(e) => {
            // At debug: anyone can send an assertion naming a known
            // client (client ids are public) once per request; the
            // client is told the reason, and the refusal is counted.
            tracing::debug!(client_id, reason = %e.code(), "assertion refused");
            return Ok(Err(format!("invalid assertion: {}", e.code())));
        }
    };
    let (Some(jti), Some(exp), Some(subject)) =
        (token.claims.jti, token.claims.exp, token.claims.sub)
    else {
        return Ok(Err("assertion without jti, exp or sub".into()));
    };
    if jti.chars().chain(subject.chars()).any(char::is_control) {
        return Ok(Err("assertion jti or sub holds a control character".into()));
    }
    // Each `jti` is stored until the assertion expires: kept short, a
    // client cannot make each of its requests store kilobytes.
    if jti.len() > MAX_JTI {
        return Ok(Err(format!("assertion jti is longer than {MAX_JTI} bytes")));
    }
    let longest = crate::store::secs(verifier.max_assertion_lifetime);
    if exp.seconds().saturating_sub(crate::store::now()) > longest.saturating_add(ASSERTION_SKEW) {
        return Ok(Err(format!(
            "assertion lives too long (at most {longest} seconds here)"
        )));
    }
    Ok(Ok(Assertion {
        client,
        subject,
        jti,
        verifies_until: exp.seconds().saturating_add(ASSERTION_SKEW + 5),
    }))
}

/// The longest assertion `jti` taken (bytes): a UUID is 36, and a
/// base64url of 256 random bits is 43.
const MAX_JTI: usize = 256;

/// `private_key_jwt` (RFC 7523 §2.2, §3): an assertion whose `iss` and
/// `sub` are both the client.
async fn authenticate_assertion(
    verifier: Verifier<'_>,
    credentials: &Credentials<'_>,
    assertion: &str,
) -> Result<Arc<Client>, Refusal> {
    let verified = verify_assertion(verifier, assertion)
        .await?
        .map_err(|reason| Refusal::InvalidClient(format!("client assertion refused: {reason}")))?;
    if verified.subject != verified.client.client_id {
        return Err(Refusal::InvalidClient(
            "client assertion refused: sub must be the client_id".into(),
        ));
    }
    if credentials
        .params
        .get("client_id")
        .is_some_and(|id| id != verified.client.client_id)
    {
        return Err(Refusal::InvalidRequest(
            "client_id differs from the assertion's iss".into(),
        ));
    }
    // Spent by the authentication itself, whatever becomes of the grant:
    // a client makes a fresh assertion for each request.
    verified
        .spend(verifier.db)
        .await?
        .map_err(|reason| Refusal::InvalidClient(format!("client assertion refused: {reason}")))?;
    Ok(verified.client)
}

/// Whether the request carries any client identification at all.
pub fn identifies_client(credentials: &Credentials<'_>) -> bool {
    credentials.authorization.is_some()
        || ["client_id", "client_secret", "client_assertion"]
            .iter()
            .any(|p| credentials.params.get(p).is_some())
}
