//! Integration tests of tessera-jose: public test vectors, attacks that
//! must fail, claims validation, key formats and property tests.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod attacks;
mod keys;
mod props;
mod rfc;
mod validation;
mod vectors;
mod wycheproof;
