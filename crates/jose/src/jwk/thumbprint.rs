//! JWK thumbprints (RFC 7638).

use aws_lc_rs::digest;
use zeroize::Zeroizing;

use super::Jwk;
use crate::b64;
use crate::Error;

/// The RFC 7638 thumbprint of a JWK: SHA-256 over the JSON object of its
/// required members, in lexicographic order with no whitespace, as
/// base64url. Usable as a default `kid`.
pub fn thumbprint(jwk: &Jwk) -> Result<String, Error> {
    let input = canonical_members(jwk)?;
    Ok(b64::encode(digest::digest(
        &digest::SHA256,
        input.as_bytes(),
    )))
}

/// The canonical JSON the thumbprint hashes (RFC 7638 §3.2). A shared
/// secret's (`oct`) holds the secret, so every copy of it is wiped.
pub(crate) fn canonical_members(jwk: &Jwk) -> Result<Zeroizing<String>, Error> {
    let missing = |name: &str| Error::invalid_key(format!("{} JWK has no \"{name}\"", jwk.kty));
    let string = |s: &str| serde_json::Value::from(s).to_string();
    let bytes = |name: &str, v: &Option<Vec<u8>>| {
        v.as_ref()
            .map(|b| string(&b64::encode(b)))
            .ok_or_else(|| missing(name))
    };
    let crv = || jwk.crv.as_deref().map(string).ok_or_else(|| missing("crv"));
    Ok(Zeroizing::new(match jwk.kty.as_str() {
        "EC" => format!(
            r#"{{"crv":{},"kty":"EC","x":{},"y":{}}}"#,
            crv()?,
            bytes("x", &jwk.x)?,
            bytes("y", &jwk.y)?
        ),
        "OKP" => format!(
            r#"{{"crv":{},"kty":"OKP","x":{}}}"#,
            crv()?,
            bytes("x", &jwk.x)?
        ),
        "RSA" => format!(
            r#"{{"e":{},"kty":"RSA","n":{}}}"#,
            bytes("e", &jwk.e)?,
            bytes("n", &jwk.n)?
        ),
        "oct" => {
            let k = jwk.k.as_ref().ok_or_else(|| missing("k"))?;
            // base64url needs no JSON escapes; written once, at its size.
            let mut text = String::with_capacity(k.expose().len().div_ceil(3) * 4 + 20);
            text.push_str(r#"{"k":""#);
            b64::encode_into(k.expose(), &mut text);
            text.push_str(r#"","kty":"oct"}"#);
            text
        }
        other => {
            return Err(Error::UnsupportedKey {
                reason: format!("no thumbprint is defined for kty {other:?}"),
            })
        }
    }))
}
