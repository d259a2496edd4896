//! `password` (RFC 6749 §4.3), for the clients registered for it; RFC
//! 9700 §2.4 says it should not be used, and sign-in through the
//! authorization endpoint replaces it.

use std::time::Instant;

use zeroize::Zeroizing;

use super::{Granted, Refusal, TokenRequest};
use crate::db::Db;
use crate::logins::LoginLimiter;
use crate::password::Passwords;
use crate::store::audit::{AuditQueue, Event};
use crate::store::clients::GrantType;
use crate::store::refresh::{self, NewFamily, RefreshPolicy};
use crate::store::{now, users, Scopes};

/// What a password login needs.
#[derive(Debug)]
pub struct Login<'a> {
    /// Users and refresh tokens.
    pub db: &'a Db,
    /// The hasher.
    pub passwords: &'a Passwords,
    /// Failed-login limits.
    pub logins: &'a LoginLimiter,
    /// The audit trail.
    pub audit: &'a AuditQueue,
    /// Refresh-token lifetimes.
    pub refresh: &'a RefreshPolicy,
}

/// Check the username and password (the attempt counts before the hash),
/// and start a refresh-token family when the client may refresh.
pub async fn grant(request: &TokenRequest<'_>, login: Login<'_>) -> Result<Granted, Refusal> {
    let client = request.client;
    let username = request.require("username")?;
    let password = Zeroizing::new(request.require("password")?.to_owned());
    // Counted before the hash: concurrent guesses cannot outrun the limit.
    let attempt = login
        .logins
        .begin(username, request.peer, Instant::now())
        .map_err(|wait| {
            metrics::counter!("tessera_token_failures_total", "reason" => "login_rate_limited")
                .increment(1);
            Refusal::TooManyAttempts(wait)
        })?;
    let user = users::find(login.db, username).await?;
    let stored = user.as_ref().map(|u| u.password_hash.clone());
    let matched = login.passwords.verify(password, stored).await?;
    let event = |name| {
        Event::new(name)
            .client(&client.client_id)
            .subject(username)
            .remote(request.remote())
    };
    let user = match user {
        Some(user) if matched && !user.disabled => user,
        found => {
            drop(attempt);
            let why = match found {
                Some(u) if matched && u.disabled => "user disabled",
                Some(_) => "wrong password",
                None => "unknown user",
            };
            login.audit.push(event("login_failed").detail(why));
            metrics::counter!("tessera_token_failures_total", "reason" => "invalid_credentials")
                .increment(1);
            return Err(Refusal::InvalidGrant("invalid username or password".into()));
        }
    };
    attempt.succeeded();
    login.audit.push(event("login_succeeded"));
    let user_scopes = Scopes::parse(&user.scopes)?;
    let scope = request.scopes_within(&client.scopes.intersection(&user_scopes))?;
    let auth_time = Some(now());
    let refresh_token = if client.allows(GrantType::RefreshToken) {
        let (_, token) = refresh::issue(
            login.db,
            NewFamily {
                client_id: &client.client_id,
                subject: &user.id,
                username: Some(&user.username),
                scope: &scope.to_string(),
                auth_time,
                sid: None,
            },
            login.refresh,
        )
        .await?;
        Some(token)
    } else {
        None
    };
    Ok(Granted {
        subject: user.id,
        username: Some(user.username),
        scope,
        auth_time,
        refresh_token,
        sign_in: None,
    })
}
