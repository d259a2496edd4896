//! JSON Web Tokens (RFC 7519): sign claims, verify and validate tokens.
//!
//! ```
//! use std::time::Duration;
//! use tessera_jose::{jwt, Algorithm, Claims, SigningKey, Validation};
//!
//! let key = SigningKey::generate(Algorithm::ES256)?.with_kid("2026-11");
//! let claims = Claims::new()
//!     .issuer("https://auth.example.com")
//!     .subject("alice")
//!     .audience("orders-api")
//!     .valid_for(Duration::from_secs(900));
//! let token = jwt::sign(&claims, &key)?;
//!
//! let public = key.verifying_key()?;
//! let validation = Validation::new()
//!     .issuer("https://auth.example.com")
//!     .audience("orders-api");
//! let verified = jwt::verify::<tessera_jose::NoCustomClaims>(&token, &public, &validation)?;
//! assert_eq!(verified.claims.sub.as_deref(), Some("alice"));
//! # Ok::<(), tessera_jose::Error>(())
//! ```

pub(crate) mod claims;
mod read;
pub(crate) mod validation;

use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

pub use validation::MAX_LEEWAY;

use claims::{BorrowedClaims, BorrowedToken, Claims, Token};
use validation::Validation;

use crate::error::Input;
use crate::jws::{self, Header, KeySource};
use crate::key::SigningKey;
use crate::Error;

/// 128 random bits as base64url: a fresh, unguessable `jti`.
pub fn random_id() -> Result<String, Error> {
    let mut bytes = [0u8; 16];
    aws_lc_rs::rand::fill(&mut bytes).map_err(|_| Error::Crypto {
        operation: "random generation",
    })?;
    Ok(crate::b64::encode(bytes))
}

/// OpenID Connect's hash of a token that travels with an ID token
/// (`at_hash` of Core §3.1.3.6 for the access token, `c_hash` for a
/// code): the left half of `value`'s hash under the hash function of the
/// ID token's algorithm `alg` (SHA-512 for `EdDSA`/`Ed25519`), in
/// base64url.
///
/// ```
/// use tessera_jose::{jwt, Algorithm};
/// // OpenID Connect Core, Appendix A.3.
/// let at_hash = jwt::half_hash(Algorithm::RS256, "jHkWEdUXMU1BwAsC4vtUsZwnNvTIxEl0z9K3vx5KF0Y");
/// assert_eq!(at_hash, "77QmUPtjPfzWtF2AnpK9RQ");
/// ```
pub fn half_hash(alg: crate::Algorithm, value: &str) -> String {
    use crate::Algorithm;
    use aws_lc_rs::digest;
    // Every algorithm named: one added later must be given its hash here
    // (Ed448's would be SHAKE256), not fall to SHA-256.
    let hash = match alg {
        Algorithm::HS256 | Algorithm::RS256 | Algorithm::PS256 | Algorithm::ES256 => {
            &digest::SHA256
        }
        Algorithm::HS384 | Algorithm::RS384 | Algorithm::PS384 | Algorithm::ES384 => {
            &digest::SHA384
        }
        Algorithm::HS512
        | Algorithm::RS512
        | Algorithm::PS512
        | Algorithm::ES512
        | Algorithm::EdDSA
        | Algorithm::Ed25519 => &digest::SHA512,
    };
    let d = digest::digest(hash, value.as_bytes());
    let bytes = d.as_ref();
    crate::b64::encode(&bytes[..bytes.len() / 2])
}

/// Sign `claims` with `key`, under a header of the key's algorithm and
/// `kid` with `typ: JWT`.
pub fn sign<T: Serialize>(claims: &Claims<T>, key: &SigningKey) -> Result<String, Error> {
    let payload = claims_json(claims)?;
    jws::sign_with_encoded_header(default_header_b64(key)?, &payload, key)
}

/// The encoded default JWT header of `key` (its `alg`, its `kid`,
/// `typ: JWT`), made once per key and kept in the key's memo slot.
fn default_header_b64(key: &SigningKey) -> Result<&str, Error> {
    let memo = key.jwt_header_memo();
    if let Some(header) = memo.get() {
        return Ok(header);
    }
    let header = jws::Header::for_key(key).typ("JWT");
    let json = serde_json::to_vec(&header).map_err(|e| Error::Serialize {
        input: crate::Input::Header,
        reason: e.to_string(),
    })?;
    Ok(memo.get_or_init(|| crate::b64::encode(json)))
}

/// Sign `claims` under `header` (whose `alg` must be the key's).
///
/// The payload is checked with the same strict rules a verifier applies,
/// so a custom claim that repeats a registered one (say a second `exp`),
/// or writes one of the wrong type (an `exp` that is not a number), is an
/// error here rather than a token no one can verify. The verifier's
/// [`Limits`](crate::jws::Limits) are its own policy and are not applied
/// here: with the defaults, a verifier refuses payloads nested deeper than
/// 16 levels or larger than 12 KiB.
pub fn sign_with_header<T: Serialize>(
    header: &Header,
    claims: &Claims<T>,
    key: &SigningKey,
) -> Result<String, Error> {
    jws::sign(header, &claims_json(claims)?, key)
}

/// The payload JSON, held to the rules a verifier applies while it is
/// written (`json::written`: what serialization can get wrong, no second
/// pass).
fn claims_json<T: Serialize>(claims: &Claims<T>) -> Result<Vec<u8>, Error> {
    let (text, written) = crate::json::written::written(claims, Input::Payload)?;
    // The typed fields write their claims with the right types; a
    // registered name the custom part wrote instead is read as a
    // verifier reads it (a second one was refused as a repeat already).
    let typed = [
        claims.iss.is_some(),
        claims.sub.is_some(),
        claims.aud.is_some(),
        claims.exp.is_some(),
        claims.nbf.is_some(),
        claims.iat.is_some(),
        claims.jti.is_some(),
    ]
    .iter()
    .enumerate()
    .fold(0u8, |bits, (i, set)| bits | (u8::from(*set) << i));
    if written & !typed != 0 {
        read::registered(&text, usize::MAX, &[])?;
    }
    Ok(text)
}

/// Verify `token` with a key from `keys`, then validate its claims.
///
/// `T` receives the whole payload object; use [`NoCustomClaims`](crate::NoCustomClaims) when only
/// the registered claims matter. The payload is decoded only after the
/// signature holds; it is checked strictly and its registered claims
/// validated before `T` is built from it.
pub fn verify<T: DeserializeOwned>(
    token: &str,
    keys: &(impl KeySource + ?Sized),
    validation: &Validation,
) -> Result<Token<T>, Error> {
    let (header, payload) = checked(token, keys, validation)?;
    let read = |payload: &[u8]| {
        claims(payload, validation).map(|claims| Token {
            header,
            claims: claims.into_owned(),
        })
    };
    // Decoded on the stack up to 4 KiB, so that a large token's payload
    // does not cost an allocation of a size allocators keep no cache of;
    // small ones do not pay for zeroing the larger buffer.
    match crate::b64::decoded_len(payload.len()) {
        Some(0..=1024) => crate::b64::with_decoded::<1024, _>(payload, Input::Payload, read),
        _ => crate::b64::with_decoded::<4096, _>(payload, Input::Payload, read),
    }
}

/// [`verify`], with claims that may borrow from `buffer`, where the payload
/// is decoded.
///
/// Every string of a typed claims struct is an allocation when it is a
/// `String`; here fields may be `&'b str` (or `Cow<'b, str>`, which
/// borrows when it can), and collections of them, so that a large token
/// costs no allocation per string. The registered claims come as
/// [`BorrowedClaims`] the same way (`iss`, `sub`, `jti` and a single-string
/// `aud` borrow unless written with escapes; an `aud` array is owned);
/// [`BorrowedClaims::into_owned`] gives [`Claims`]. Keep `buffer` to reuse its capacity
/// from one token to the next. The checks are [`verify`]'s, in the same
/// order; only where `T` keeps its strings differs. A `&str` field cannot
/// hold a string written with escapes (`\n`, `\u00e9`, `\/`): such a
/// token is refused as [`Error::InvalidClaims`], so use `Cow<'b, str>`
/// with `#[serde(borrow)]` where a claim may carry them.
///
/// ```
/// use std::time::Duration;
/// use serde::Deserialize;
/// use tessera_jose::{jwt, Algorithm, Claims, SigningKey, Validation};
///
/// #[derive(Deserialize)]
/// struct Access<'a> {
///     scope: &'a str,
///     groups: Vec<&'a str>,
/// }
///
/// let key = SigningKey::hmac(Algorithm::HS256, &[7; 32])?;
/// let claims = Claims::with_custom(serde_json::json!({
///     "scope": "orders:read",
///     "groups": ["/staff", "/staff/orders"],
/// }))
/// .issuer("https://auth.example.com")
/// .audience("orders-api")
/// .valid_for(Duration::from_secs(60));
/// let token = jwt::sign(&claims, &key)?;
///
/// let validation = Validation::new()
///     .issuer("https://auth.example.com")
///     .audience("orders-api");
/// let mut buffer = Vec::new();
/// let verified = jwt::verify_borrowed::<Access<'_>>(&token, &key.verifying_key()?, &validation, &mut buffer)?;
/// assert_eq!(verified.claims.custom.groups, ["/staff", "/staff/orders"]);
/// # Ok::<(), tessera_jose::Error>(())
/// ```
pub fn verify_borrowed<'b, T: Deserialize<'b>>(
    token: &str,
    keys: &(impl KeySource + ?Sized),
    validation: &Validation,
    buffer: &'b mut Vec<u8>,
) -> Result<BorrowedToken<'b, T>, Error> {
    // Nothing of an earlier token stays behind a failed verification
    // (a refused payload, though, is left: it was signed).
    buffer.clear();
    let (header, payload) = checked(token, keys, validation)?;
    crate::b64::decode_into(payload.as_bytes(), buffer).ok_or(Error::Base64 {
        input: Input::Payload,
    })?;
    let claims = claims(buffer, validation)?;
    Ok(BorrowedToken { header, claims })
}

/// The steps before the payload: the configuration, the JWS (limits,
/// header, `crit`, algorithm, signature) and the header's rules. The
/// header and the encoded payload, once all hold.
fn checked<'t>(
    token: &'t str,
    keys: &(impl KeySource + ?Sized),
    validation: &Validation,
) -> Result<(Arc<Header>, &'t str), Error> {
    validation.check_config()?;
    let options = validation.jws_options();
    let unverified = jws::Unverified::parse(token, options.limits())?;
    unverified.check_signature(keys, options)?;
    let (header, payload) = unverified.into_parts();
    validation.validate_header(&header)?;
    Ok((header, payload))
}

/// The steps after: the strict scan, the registered claims' rules, `T`,
/// then the caller's checks.
fn claims<'p, T: Deserialize<'p>>(
    payload: &'p [u8],
    validation: &Validation,
) -> Result<BorrowedClaims<'p, T>, Error> {
    let depth = validation.jws_options().limits().depth();
    let read = read::registered(payload, depth, validation.required_claims())?;
    validation.validate_claims(&read.registered, &read.found)?;
    let custom = read::custom::<T>(&read)?;
    if validation.has_checks() {
        validation.run_checks(&crate::json::build(payload, Input::Payload)?)?;
    }
    Ok(read.registered.with_custom(custom))
}

#[cfg(test)]
mod tests {
    use crate::{Algorithm, SigningKey};

    #[test]
    fn cached_jwt_header_follows_the_kid() {
        let key = SigningKey::generate(Algorithm::ES256).unwrap();
        let sign = |key: &SigningKey| crate::jwt::sign(&crate::Claims::new(), key).unwrap();
        let header = crate::jws::decode_header(&sign(&key)).unwrap();
        assert_eq!(header.alg, Algorithm::ES256);
        assert_eq!(header.typ.as_deref(), Some("JWT"));
        assert_eq!(header.kid, None);
        let renamed = key.with_kid("k2");
        let header = crate::jws::decode_header(&sign(&renamed)).unwrap();
        assert_eq!(header.kid.as_deref(), Some("k2"));
        let again = renamed.clone().with_kid("k3");
        assert_eq!(
            crate::jws::decode_header(&sign(&again))
                .unwrap()
                .kid
                .as_deref(),
            Some("k3")
        );
        assert_eq!(
            crate::jws::decode_header(&sign(&renamed))
                .unwrap()
                .kid
                .as_deref(),
            Some("k2")
        );
    }
}
