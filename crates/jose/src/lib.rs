//! # tessera-jose
//!
//! The JOSE core of Tessera: JWS signing and verification for every
//! standard algorithm (HS, RS, PS, ES 256/384/512 and EdDSA), JWK and JWK
//! sets with RFC 7638 thumbprints, and JWT claims validation, on `aws-lc-rs`.
//!
//! Secure by construction:
//!
//! - **No `alg: none`.** [`Algorithm`] has no such variant.
//! - **No algorithm confusion.** A key's type fixes its algorithm; the
//!   token's `alg` must match it (and an optional allow-list) or it is
//!   refused before any signature work. HMAC keys are only made from
//!   secrets.
//! - **Strict parsing.** Canonical unpadded base64url only; header and
//!   payload JSON with repeated member names or excessive nesting refused;
//!   size limits before any decoding; `crit` honoured.
//! - **Verify before decode.** [`jws::Unverified`] and [`jws::Verified`]
//!   are distinct types, and the payload is decoded only after the
//!   signature holds. Reading a token without verifying lives in
//!   [`dangerous`].
//! - **Exact errors.** One [`Error`] enum with structured fields and stable
//!   [`Error::code`]s; a bad signature says nothing more.
//!
//! One thing no library can change: an ECDSA signature (`ES*`) has a
//! second form, `(r, n - s)`, that verifies as well, so anyone holding a
//! token can write another string that is the same valid token. To refuse
//! a token seen before, key on its `jti`, never on its text or a hash of
//! it.
//!
//! See [`jwt`] for an end-to-end example.
//!
//! ## Where things are
//!
//! Every public item has exactly one path. What a JWT user needs is at the
//! root: keys ([`SigningKey`], [`VerifyingKey`], [`Secret`]), JWKs and key
//! sets ([`Jwk`], [`JwkSet`], [`KeySet`]), claims and their validation
//! ([`Claims`], [`Validation`], [`Token`]), [`Error`] and clocks. The
//! modules hold the operations and the layers below: [`jwt`] signs and
//! verifies tokens, [`jws`] is the JWS layer with its own types (header,
//! limits, options), [`b64`] the strict base64url, [`dangerous`] reading
//! without verifying. Types are not re-exported a second time, so an error
//! message or a docs search names one place.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod alg;
pub mod b64;
pub mod dangerous;
mod error;
mod json;
mod jwk;
pub mod jws;
pub mod jwt;
mod key;
mod time;

pub use alg::{Algorithm, Curve, KeyType};
pub use error::{Error, Input};
pub use jwk::{Jwk, JwkSet, KeySet, SkippedKey};
pub use jwt::claims::{
    Audience, AudienceRef, BorrowedClaims, BorrowedToken, Claims, NoCustomClaims, Token,
};
pub use jwt::validation::Validation;
pub use key::{PemKind, Secret, SigningKey, VerifyingKey};
pub use time::{describe_span, Clock, FixedClock, NumericDate, SteadyClock, SystemClock};

// The README's Rust examples run as doctests, so they stay true.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
struct ReadmeDoctests;
