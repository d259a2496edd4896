//! The web app between a stand-in provider and store API
//! (`harness.rs`), each on a loopback port: sign-in, refresh, logout,
//! cookies.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod harness;
mod logout;
mod refresh;
mod sign_in;
mod start;
