//! Tessera's OAuth 2.0 authorization server.
//!
//! It issues JWT access tokens (RFC 9068) and rotating refresh tokens,
//! publishes its keys (JWKS), and introspects (RFC 7662) and revokes
//! (RFC 7009) tokens, on SQLite or PostgreSQL. [`serve`] runs it; the
//! `tessera serve` command is a thin wrapper. The admin operations
//! (users, clients, keys) are plain functions on the database in
//! [`store`] and [`keys`], shared by the command line and the server.

pub mod access;
pub mod admin;
mod app;
pub mod config;
pub mod db;
mod error;
pub mod grant;
pub mod http;
pub mod keys;
pub mod logins;
pub mod password;
pub mod revoke_limit;
pub mod secret;
mod serve;
pub mod signin;
pub mod store;

pub use app::App;
pub use config::{Config, Overrides};
pub use db::Db;
pub use error::Error;
pub use http::router;
pub use serve::{open, serve, Opened};
