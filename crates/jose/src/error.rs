//! The one error type of `tessera-jose`.
//!
//! Every variant says exactly what failed, with structured fields a caller
//! can match on, and [`Error::code`] gives a stable string for logs and
//! metrics. [`Error::InvalidSignature`] deliberately carries nothing: an
//! attacker learns only that the signature did not verify.

use std::fmt;

use crate::alg::Algorithm;
use crate::time::{describe_span, NumericDate};

/// Which input a problem was found in: one of the three segments of a
/// compact JWS, or a JSON Web Key (alone or in a set).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Input {
    /// The protected header (first segment).
    Header,
    /// The payload (second segment).
    Payload,
    /// The signature (third segment).
    Signature,
    /// A JSON Web Key.
    Jwk,
}

impl fmt::Display for Input {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Input::Header => "header",
            Input::Payload => "payload",
            Input::Signature => "signature",
            Input::Jwk => "JWK",
        })
    }
}

/// Everything that can go wrong in this crate.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The token is longer than the configured limit.
    #[error("token is {len} bytes, over the limit of {max}")]
    TokenTooLarge {
        /// Length of the token.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// One decoded segment is longer than its limit.
    #[error("{input} is {len} bytes, over the limit of {max}")]
    PartTooLarge {
        /// Where.
        input: Input,
        /// Its length in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The token is not three base64url segments joined by dots.
    #[error("malformed token: {reason}")]
    Malformed {
        /// What is wrong with its shape.
        reason: &'static str,
    },
    /// A segment is not strict, unpadded, canonical base64url.
    #[error("{input} is not valid unpadded base64url")]
    Base64 {
        /// The segment.
        input: Input,
    },
    /// An input is not valid JSON, or not a JSON object.
    #[error("{input} is not valid JSON: {reason}")]
    Json {
        /// Where.
        input: Input,
        /// What the parser said.
        reason: String,
    },
    /// A JSON object repeats a member name.
    #[error("{input} has the member {name:?} more than once")]
    DuplicateMember {
        /// Where.
        input: Input,
        /// The repeated name.
        name: String,
    },
    /// JSON nesting is deeper than the limit.
    #[error("{input} nests deeper than {max} levels")]
    TooDeep {
        /// Where.
        input: Input,
        /// The limit.
        max: usize,
    },
    /// A header member has the wrong type or value.
    #[error("header member {member:?} is invalid: {reason}")]
    InvalidHeader {
        /// The header member.
        member: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The header names an algorithm this crate does not implement
    /// (this includes `none`).
    #[error("unsupported algorithm {alg:?}")]
    UnsupportedAlgorithm {
        /// The name as it appeared.
        alg: String,
    },
    /// The algorithm is supported, but not in the caller's allow-list.
    #[error("algorithm {found} is not allowed (allowed: {})", list(allowed))]
    AlgorithmNotAllowed {
        /// The token's algorithm.
        found: Algorithm,
        /// The allow-list.
        allowed: Vec<Algorithm>,
    },
    /// The token's algorithm differs from the one the key is for.
    #[error("token is signed with {found} but the key is for {expected}")]
    AlgorithmMismatch {
        /// The key's algorithm.
        expected: Algorithm,
        /// The token's algorithm.
        found: Algorithm,
    },
    /// A `crit` header names an extension the caller did not declare.
    #[error("critical header extension {name:?} is not understood")]
    UnknownCritical {
        /// The extension name.
        name: String,
    },
    /// No key in the set has this `kid` and algorithm.
    #[error("no key matches kid {} and algorithm {alg}", opt(kid))]
    NoMatchingKey {
        /// The token's `kid`.
        kid: Option<String>,
        /// The token's algorithm.
        alg: Algorithm,
    },
    /// More than one key matches: the token does not say which to use.
    #[error(
        "{count} keys match kid {} and algorithm {alg}: the choice is ambiguous",
        opt(kid)
    )]
    AmbiguousKey {
        /// The token's `kid`.
        kid: Option<String>,
        /// The token's algorithm.
        alg: Algorithm,
        /// How many keys matched.
        count: usize,
    },
    /// A key set holds both shared secrets and asymmetric keys.
    #[error("key set mixes symmetric (oct) and asymmetric keys")]
    MixedKeySet,
    /// Key material could not be parsed or is inconsistent.
    #[error("invalid key: {reason}")]
    InvalidKey {
        /// What is wrong.
        reason: String,
    },
    /// The key is too weak to be used.
    #[error("weak key: {reason}")]
    WeakKey {
        /// Why.
        reason: String,
    },
    /// The key is not meant for this operation (`use`, `key_ops`).
    #[error("key may not be used to {operation}: {reason}")]
    KeyUsage {
        /// The operation (`sign`, `verify`).
        operation: &'static str,
        /// The member that forbids it.
        reason: String,
    },
    /// The key type or curve is not supported.
    #[error("unsupported key: {reason}")]
    UnsupportedKey {
        /// What is unsupported.
        reason: String,
    },
    /// The signature does not verify. Carries nothing on purpose.
    #[error("invalid signature")]
    InvalidSignature,
    /// The crypto library failed to sign or generate.
    #[error("cryptographic operation failed: {operation}")]
    Crypto {
        /// The operation.
        operation: &'static str,
    },
    /// `exp` is in the past (beyond the leeway).
    #[error("token expired at {exp}, {} ago (leeway {leeway}s)", describe_span(now.seconds().saturating_sub(exp.seconds())))]
    Expired {
        /// The `exp` claim.
        exp: NumericDate,
        /// The time of the check.
        now: NumericDate,
        /// The leeway in seconds.
        leeway: u64,
    },
    /// `nbf` is in the future (beyond the leeway).
    #[error("token is not valid before {nbf}, {} from now (leeway {leeway}s)", describe_span(nbf.seconds().saturating_sub(now.seconds())))]
    NotYetValid {
        /// The `nbf` claim.
        nbf: NumericDate,
        /// The time of the check.
        now: NumericDate,
        /// The leeway in seconds.
        leeway: u64,
    },
    /// `iat` is in the future (beyond the leeway).
    #[error("token was issued in the future, at {iat}, {} from now (leeway {leeway}s)", describe_span(iat.seconds().saturating_sub(now.seconds())))]
    IssuedInFuture {
        /// The `iat` claim.
        iat: NumericDate,
        /// The time of the check.
        now: NumericDate,
        /// The leeway in seconds.
        leeway: u64,
    },
    /// The token is older than the configured maximum age.
    #[error("token was issued at {iat}, {} ago, over the maximum age of {max_age}s", describe_span(now.seconds().saturating_sub(iat.seconds())))]
    TooOld {
        /// The `iat` claim.
        iat: NumericDate,
        /// The time of the check.
        now: NumericDate,
        /// The maximum age in seconds.
        max_age: u64,
    },
    /// A required claim is absent.
    #[error("required claim {claim:?} is missing")]
    MissingClaim {
        /// The claim name.
        claim: String,
    },
    /// A claim has the wrong JSON type (`"exp": "123"`, `"exp": null`).
    #[error("claim {claim:?} must be {expected}")]
    InvalidClaimType {
        /// The claim name.
        claim: String,
        /// What it must be.
        expected: &'static str,
    },
    /// `iss` is not one of the expected issuers.
    #[error("issuer {} is not the expected {}", opt(found), list(expected))]
    InvalidIssuer {
        /// The accepted issuers.
        expected: Vec<String>,
        /// The token's `iss`.
        found: Option<String>,
    },
    /// `aud` does not name any expected audience.
    #[error("audience {found:?} does not include {}", list(expected))]
    InvalidAudience {
        /// The accepted audiences.
        expected: Vec<String>,
        /// The token's audiences.
        found: Vec<String>,
    },
    /// `sub` is not the expected subject.
    #[error("subject {} is not the expected {expected:?}", opt(found))]
    InvalidSubject {
        /// The expected subject.
        expected: String,
        /// The token's `sub`.
        found: Option<String>,
    },
    /// The header `typ` is not the expected type.
    #[error("token type {} is not the expected {expected:?}", opt(found))]
    InvalidType {
        /// The expected type.
        expected: String,
        /// The header's `typ`.
        found: Option<String>,
    },
    /// The payload does not fit the caller's claims type.
    #[error("claims do not match the expected shape: {reason}")]
    InvalidClaims {
        /// What serde said.
        reason: String,
    },
    /// A custom check rejected the token.
    #[error("check {check:?} failed: {reason}")]
    CheckFailed {
        /// The check's name.
        check: String,
        /// Its reason.
        reason: String,
    },
    /// The validation options are not usable as configured.
    #[error("invalid validation options: {reason}")]
    InvalidConfig {
        /// What to fix.
        reason: String,
    },
    /// A header or claims value could not be serialized to JSON.
    #[error("could not serialize {input} to JSON: {reason}")]
    Serialize {
        /// Where.
        input: Input,
        /// What serde said.
        reason: String,
    },
}

impl Error {
    /// A stable, machine-readable code for the failure (for logs, metrics
    /// and API error bodies).
    pub fn code(&self) -> &'static str {
        match self {
            Error::TokenTooLarge { .. } | Error::PartTooLarge { .. } => "ERR_TOKEN_TOO_LARGE",
            Error::Malformed { .. } => "ERR_MALFORMED",
            Error::Base64 { .. } => "ERR_BASE64",
            Error::Json { .. } => "ERR_JSON",
            Error::DuplicateMember { .. } => "ERR_DUPLICATE_MEMBER",
            Error::TooDeep { .. } => "ERR_TOO_DEEP",
            Error::InvalidHeader { .. } => "ERR_INVALID_HEADER",
            Error::UnsupportedAlgorithm { .. } => "ERR_UNSUPPORTED_ALG",
            Error::AlgorithmNotAllowed { .. } => "ERR_ALG_NOT_ALLOWED",
            Error::AlgorithmMismatch { .. } => "ERR_ALG_MISMATCH",
            Error::UnknownCritical { .. } => "ERR_UNKNOWN_CRIT",
            Error::NoMatchingKey { .. } => "ERR_NO_MATCHING_KEY",
            Error::AmbiguousKey { .. } => "ERR_AMBIGUOUS_KEY",
            Error::MixedKeySet => "ERR_MIXED_KEY_SET",
            Error::InvalidKey { .. } => "ERR_INVALID_KEY",
            Error::WeakKey { .. } => "ERR_WEAK_KEY",
            Error::KeyUsage { .. } => "ERR_KEY_USAGE",
            Error::UnsupportedKey { .. } => "ERR_UNSUPPORTED_KEY",
            Error::InvalidSignature => "ERR_INVALID_SIGNATURE",
            Error::Crypto { .. } => "ERR_CRYPTO",
            Error::Expired { .. } => "ERR_EXPIRED",
            Error::NotYetValid { .. } => "ERR_NOT_YET_VALID",
            Error::IssuedInFuture { .. } => "ERR_ISSUED_IN_FUTURE",
            Error::TooOld { .. } => "ERR_TOO_OLD",
            Error::MissingClaim { .. } => "ERR_MISSING_CLAIM",
            Error::InvalidClaimType { .. } => "ERR_INVALID_CLAIM_TYPE",
            Error::InvalidIssuer { .. } => "ERR_INVALID_ISSUER",
            Error::InvalidAudience { .. } => "ERR_INVALID_AUDIENCE",
            Error::InvalidSubject { .. } => "ERR_INVALID_SUBJECT",
            Error::InvalidType { .. } => "ERR_INVALID_TYPE",
            Error::InvalidClaims { .. } => "ERR_INVALID_CLAIMS",
            Error::CheckFailed { .. } => "ERR_CHECK_FAILED",
            Error::InvalidConfig { .. } => "ERR_INVALID_CONFIG",
            Error::Serialize { .. } => "ERR_SERIALIZE",
        }
    }

    /// True when the failure is about the token's claims (expiry, issuer,
    /// audience…) rather than its form, its key or its signature.
    pub fn is_claim_error(&self) -> bool {
        matches!(
            self,
            Error::Expired { .. }
                | Error::NotYetValid { .. }
                | Error::IssuedInFuture { .. }
                | Error::TooOld { .. }
                | Error::MissingClaim { .. }
                | Error::InvalidClaimType { .. }
                | Error::InvalidIssuer { .. }
                | Error::InvalidAudience { .. }
                | Error::InvalidSubject { .. }
                | Error::InvalidType { .. }
                | Error::InvalidClaims { .. }
                | Error::CheckFailed { .. }
        )
    }

    pub(crate) fn invalid_key(reason: impl Into<String>) -> Error {
        Error::InvalidKey {
            reason: reason.into(),
        }
    }
}

fn opt(value: &Option<String>) -> String {
    match value {
        Some(v) => format!("{v:?}"),
        None => "(none)".to_owned(),
    }
}

fn list<T: fmt::Debug>(items: &[T]) -> String {
    match items {
        [] => "(nothing)".to_owned(),
        [one] => format!("{one:?}"),
        many => format!("{many:?}"),
    }
}
