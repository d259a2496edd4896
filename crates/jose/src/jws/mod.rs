//! JWS compact serialization (RFC 7515 §7.1): sign and verify.
//!
//! Verification is a pipeline of named steps in a safe order:
//!
//! 1. size limits on the whole token,
//! 2. split into exactly three segments,
//! 3. strict base64url of the header, within its size limit,
//! 4. strict header JSON (no repeated members, bounded depth); a header
//!    segment this thread parsed lately is not parsed again (`recent`),
//! 5. `crit`: every critical extension must be understood,
//! 6. `alg` against the allow-list, then against the key (the key decides),
//! 7. the signature over the exact bytes received,
//! 8. only then is the payload decoded.
//!
//! [`Unverified`] and [`Verified`] are different types; only
//! [`Unverified::verify`] turns one into the other, and an unverified
//! payload is never decoded.

mod header;
mod recent;

use std::fmt;
use std::sync::Arc;

pub use header::Header;

use crate::alg::Algorithm;
use crate::b64;
use crate::error::Input;
use crate::jwk::KeySet;
use crate::key::{SigningKey, VerifyingKey};
use crate::Error;

/// Size and depth limits for untrusted tokens. The defaults fit real
/// access and ID tokens (including `x5c` chains) with ample room.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    max_token_len: usize,
    max_header_len: usize,
    max_payload_len: usize,
    max_depth: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_token_len: 16 * 1024,
            max_header_len: 8 * 1024,
            max_payload_len: 12 * 1024,
            max_depth: 16,
        }
    }
}

impl Limits {
    /// Longest accepted token, in bytes (default 16 KiB).
    #[must_use]
    pub fn max_token_len(mut self, bytes: usize) -> Limits {
        self.max_token_len = bytes;
        self
    }

    /// Longest accepted decoded header (default 8 KiB).
    #[must_use]
    pub fn max_header_len(mut self, bytes: usize) -> Limits {
        self.max_header_len = bytes;
        self
    }

    /// Longest accepted decoded payload (default 12 KiB).
    #[must_use]
    pub fn max_payload_len(mut self, bytes: usize) -> Limits {
        self.max_payload_len = bytes;
        self
    }

    /// Deepest accepted JSON nesting in header and payload (default 16).
    #[must_use]
    pub fn max_depth(mut self, depth: usize) -> Limits {
        self.max_depth = depth;
        self
    }

    pub(crate) fn depth(&self) -> usize {
        self.max_depth
    }
}

/// What a JWS verification accepts beyond the key: limits, an algorithm
/// allow-list, and the `crit` extensions the caller understands.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VerifyOptions {
    limits: Limits,
    algorithms: Option<Vec<Algorithm>>,
    critical: Vec<String>,
}

impl VerifyOptions {
    /// Default limits, any algorithm the key allows, no `crit` extensions.
    pub fn new() -> VerifyOptions {
        VerifyOptions::default()
    }

    /// Replace the limits.
    #[must_use]
    pub fn with_limits(mut self, limits: Limits) -> VerifyOptions {
        self.limits = limits;
        self
    }

    /// Accept only these algorithms (checked before any key is chosen).
    #[must_use]
    pub fn algorithms(mut self, algs: impl IntoIterator<Item = Algorithm>) -> VerifyOptions {
        self.algorithms = Some(algs.into_iter().collect());
        self
    }

    /// Declare `crit` extensions that the caller checks itself.
    #[must_use]
    pub fn critical<I, S>(mut self, names: I) -> VerifyOptions
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.critical = names.into_iter().map(Into::into).collect();
        self
    }

    /// The limits in force.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// The allow-list, if one is set.
    pub fn allowed_algorithms(&self) -> Option<&[Algorithm]> {
        self.algorithms.as_deref()
    }
}

/// Where verification gets its key: one key, a [`KeySet`], a
/// slice of keys, or anything that can choose one from the header.
///
/// Implementations must return a key whose algorithm is the header's
/// `alg`, or an error; the pipeline checks this again.
pub trait KeySource {
    /// The key to verify a token with this header.
    fn select_key(&self, header: &Header) -> Result<&VerifyingKey, Error>;
}

impl KeySource for VerifyingKey {
    fn select_key(&self, header: &Header) -> Result<&VerifyingKey, Error> {
        if header.alg != self.algorithm() {
            return Err(Error::AlgorithmMismatch {
                expected: self.algorithm(),
                found: header.alg,
            });
        }
        Ok(self)
    }
}

impl<K: KeySource + ?Sized> KeySource for &K {
    fn select_key(&self, header: &Header) -> Result<&VerifyingKey, Error> {
        (**self).select_key(header)
    }
}

impl<K: KeySource + ?Sized> KeySource for Arc<K> {
    fn select_key(&self, header: &Header) -> Result<&VerifyingKey, Error> {
        (**self).select_key(header)
    }
}

impl KeySource for KeySet {
    fn select_key(&self, header: &Header) -> Result<&VerifyingKey, Error> {
        self.select(header.kid.as_deref(), header.alg)
    }
}

impl KeySource for [VerifyingKey] {
    fn select_key(&self, header: &Header) -> Result<&VerifyingKey, Error> {
        if self.iter().any(VerifyingKey::is_symmetric)
            && !self.iter().all(VerifyingKey::is_symmetric)
        {
            return Err(Error::MixedKeySet);
        }
        crate::jwk::select(self, header.kid.as_deref(), header.alg)
    }
}

impl KeySource for Vec<VerifyingKey> {
    fn select_key(&self, header: &Header) -> Result<&VerifyingKey, Error> {
        self.as_slice().select_key(header)
    }
}

/// Sign `payload` under `header` with `key`; the compact token.
///
/// The header's `alg` must be the key's algorithm.
pub fn sign(header: &Header, payload: &[u8], key: &SigningKey) -> Result<String, Error> {
    if header.alg != key.algorithm() {
        return Err(Error::AlgorithmMismatch {
            expected: key.algorithm(),
            found: header.alg,
        });
    }
    header.check_for_signing()?;
    let header_json = serde_json::to_vec(header).map_err(|e| Error::Serialize {
        input: Input::Header,
        reason: e.to_string(),
    })?;
    sign_parts(&header_json, payload, key)
}

/// What a compact JWS needs beyond its encoded header and payload: two
/// dots and the signature, whose longest, RSA-4096's 512 bytes, is 683
/// base64url characters. Reserved up front so that appending never
/// reallocates (a larger RSA key only costs one reallocation).
const SIGNATURE_ROOM: usize = 2 + 683 + 15;

/// Sign already-serialized header JSON and payload.
fn sign_parts(header_json: &[u8], payload: &[u8], key: &SigningKey) -> Result<String, Error> {
    let mut out = String::with_capacity(
        encoded_len(header_json.len()) + encoded_len(payload.len()) + SIGNATURE_ROOM,
    );
    b64::encode_into(header_json, &mut out);
    sign_after_header(out, payload, key)
}

/// Sign with a header already in base64url form.
pub(crate) fn sign_with_encoded_header(
    header_b64: &str,
    payload: &[u8],
    key: &SigningKey,
) -> Result<String, Error> {
    let mut out =
        String::with_capacity(header_b64.len() + encoded_len(payload.len()) + SIGNATURE_ROOM);
    out.push_str(header_b64);
    sign_after_header(out, payload, key)
}

fn encoded_len(n: usize) -> usize {
    n.div_ceil(3) * 4
}

/// `out` holds the encoded header: append the payload and the signature.
fn sign_after_header(mut out: String, payload: &[u8], key: &SigningKey) -> Result<String, Error> {
    out.push('.');
    b64::encode_into(payload, &mut out);
    let signature = key.sign(out.as_bytes())?;
    out.push('.');
    b64::encode_into(signature, &mut out);
    Ok(out)
}

/// A token whose form has been checked but whose signature has not.
/// Its header may be read (to choose a key); its payload may not.
pub struct Unverified<'t> {
    header: Arc<Header>,
    signing_input: &'t str,
    payload: &'t str,
    signature: &'t str,
}

/// The header and the segments' lengths: the token itself is a bearer
/// credential, which a `{:?}` in a log line must not hand to its readers.
impl fmt::Debug for Unverified<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Unverified")
            .field("header", &self.header)
            .field("payload_len", &self.payload.len())
            .field("signature_len", &self.signature.len())
            .finish_non_exhaustive()
    }
}

/// Largest signature of any supported algorithm: RSA-8192.
const MAX_SIGNATURE_LEN: usize = 1024;

impl<'t> Unverified<'t> {
    /// Steps 1–4: size, shape, header encoding and header JSON.
    pub fn parse(token: &'t str, limits: &Limits) -> Result<Unverified<'t>, Error> {
        if token.len() > limits.max_token_len {
            return Err(Error::TokenTooLarge {
                len: token.len(),
                max: limits.max_token_len,
            });
        }
        // Exactly two dots: three segments, none containing a dot.
        let mut dots = memchr::memchr_iter(b'.', token.as_bytes());
        let (Some(first), Some(second), None) = (dots.next(), dots.next(), dots.next()) else {
            return Err(Error::Malformed {
                reason: "expected three base64url segments separated by '.'",
            });
        };
        let (header, payload, signature) = (
            &token[..first],
            &token[first + 1..second],
            &token[second + 1..],
        );
        if header.is_empty() {
            return Err(Error::Malformed {
                reason: "the header segment is empty",
            });
        }
        if signature.is_empty() {
            return Err(Error::Malformed {
                reason: "the signature segment is empty (unsigned tokens are never accepted)",
            });
        }
        let header_len = b64::decoded_len(header.len()).ok_or(Error::Base64 {
            input: Input::Header,
        })?;
        if header_len > limits.max_header_len {
            return Err(Error::PartTooLarge {
                input: Input::Header,
                len: header_len,
                max: limits.max_header_len,
            });
        }
        let payload_len = b64::decoded_len(payload.len()).ok_or(Error::Base64 {
            input: Input::Payload,
        })?;
        if payload_len > limits.max_payload_len {
            return Err(Error::PartTooLarge {
                input: Input::Payload,
                len: payload_len,
                max: limits.max_payload_len,
            });
        }
        let signing_input = &token[..header.len() + 1 + payload.len()];
        let header = recent::header(header, limits.max_depth)?;
        Ok(Unverified {
            header,
            signing_input,
            payload,
            signature,
        })
    }

    /// The (unauthenticated) header.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// Steps 5–8: `crit`, algorithm, signature, then payload decoding.
    pub fn verify<K: KeySource + ?Sized>(
        self,
        keys: &K,
        options: &VerifyOptions,
    ) -> Result<Verified, Error> {
        self.check_signature(keys, options)?;
        let payload = b64::decode(self.payload).ok_or(Error::Base64 {
            input: Input::Payload,
        })?;
        Ok(Verified {
            header: self.header,
            payload,
        })
    }

    /// Steps 5–7. Afterwards the header and the payload segment are
    /// authentic; the payload is still encoded.
    pub(crate) fn check_signature<K: KeySource + ?Sized>(
        &self,
        keys: &K,
        options: &VerifyOptions,
    ) -> Result<(), Error> {
        self.header.check_crit(&options.critical)?;
        let alg = self.header.alg;
        if let Some(allowed) = &options.algorithms {
            if !allowed.contains(&alg) {
                return Err(Error::AlgorithmNotAllowed {
                    found: alg,
                    allowed: allowed.clone(),
                });
            }
        }
        let key = keys.select_key(&self.header)?;
        if key.algorithm() != alg {
            return Err(Error::AlgorithmMismatch {
                expected: key.algorithm(),
                found: alg,
            });
        }
        if b64::decoded_len(self.signature.len()).is_none_or(|len| len > MAX_SIGNATURE_LEN) {
            return Err(Error::Base64 {
                input: Input::Signature,
            });
        }
        // On the stack up to the longest ECDSA signature (P-521); RSA
        // signatures take the heap, which their own cost dwarfs.
        b64::with_decoded::<132, _>(self.signature, Input::Signature, |signature| {
            key.verify(self.signing_input.as_bytes(), signature)
        })
    }

    /// The header and the still-encoded payload segment.
    pub(crate) fn into_parts(self) -> (Arc<Header>, &'t str) {
        (self.header, self.payload)
    }
}

/// A token whose signature has been verified.
#[derive(Clone, Debug, PartialEq)]
pub struct Verified {
    header: Arc<Header>,
    payload: Vec<u8>,
}

impl Verified {
    /// The verified header.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// The verified payload bytes.
    pub fn payload(&self) -> &[u8] {
        &self.payload
    }

    /// Header and payload.
    pub fn into_parts(self) -> (Header, Vec<u8>) {
        (Arc::unwrap_or_clone(self.header), self.payload)
    }
}

/// Parse and verify a compact JWS in one call: the signature only. Nothing
/// of the payload is checked (not `exp`, not `iss`, not `aud`): for a JWT,
/// use [`crate::jwt::verify`], which checks its claims too.
pub fn verify<K: KeySource + ?Sized>(
    token: &str,
    keys: &K,
    options: &VerifyOptions,
) -> Result<Verified, Error> {
    Unverified::parse(token, &options.limits)?.verify(keys, options)
}

/// Read a token's header without verifying anything (to pick a key, or
/// to show it). Uses the default limits.
pub fn decode_header(token: &str) -> Result<Header, Error> {
    Ok(Arc::unwrap_or_clone(
        Unverified::parse(token, &Limits::default())?.header,
    ))
}

/// Decoding without verification, for tools and debugging only.
pub(crate) fn decode_unverified(token: &str, limits: &Limits) -> Result<(Header, Vec<u8>), Error> {
    let unverified = Unverified::parse(token, limits)?;
    let payload = b64::decode(unverified.payload).ok_or(Error::Base64 {
        input: Input::Payload,
    })?;
    Ok((Arc::unwrap_or_clone(unverified.header), payload))
}
