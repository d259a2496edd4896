//! Tessera's OAuth 2.0 authorization server and OpenID Provider.
//!
//! It signs people in on its own pages (authorization code flow with
//! PKCE, OpenID Connect, consent, logout), issues JWT access tokens
//! (RFC 9068), ID tokens and rotating refresh tokens, publishes its keys
//! (JWKS) and a revocation feed for resource servers, and introspects
//! (RFC 7662) and revokes (RFC 7009) tokens, on SQLite or PostgreSQL.
//! [`serve`] runs it; the `tessera serve` command is a thin wrapper. The
//! admin operations (users, clients, sessions, keys) are
//! [`admin::AdminService`], one set of rules with their audit events for
//! the command line and the admin HTTP API; the records they change live
//! in [`store`] and [`keys`].

pub mod access;
pub mod admin;
pub mod allowance;
mod app;
pub mod code_limit;
pub mod config;
pub mod db;
mod error;
pub mod grant;
pub mod http;
pub mod keys;
pub mod logins;
pub mod password;
pub mod refresh_limit;
pub mod revoke_limit;
pub mod secret;
mod serve;
pub mod signin;
pub mod store;
pub mod watched;

pub use app::App;
pub use config::{Config, Overrides};
pub use db::Db;
pub use error::Error;
pub use http::router;
pub use serve::{open, open_with, serve, Opened};
