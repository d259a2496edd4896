//! Reading tokens without verifying them.
//!
//! Nothing here checks a signature or a claim. Use it to display a token,
//! or to route it to the right verifier, never to decide anything.

use serde_json::{Map, Value};

use crate::error::Input;
use crate::jws::{Header, Limits};
use crate::Error;

/// Header and raw payload of `token`, unverified. The token must still be
/// well-formed (three strict base64url segments, a strict header).
pub fn decode_unverified(token: &str) -> Result<(Header, Vec<u8>), Error> {
    crate::jws::decode_unverified(token, &Limits::default())
}

/// Header and payload object of `token`, unverified.
pub fn decode_unverified_claims(token: &str) -> Result<(Header, Map<String, Value>), Error> {
    let limits = Limits::default();
    let (header, payload) = crate::jws::decode_unverified(token, &limits)?;
    let claims = crate::json::object(&payload, Input::Payload, limits.depth())?;
    Ok((header, claims))
}
