//! `password` (RFC 6749 §4.3), for the clients registered for it; RFC
//! 9700 §2.4 says it should not be used, and sign-in through the
//! authorization endpoint replaces it.

use std::net::IpAddr;
use std::time::Instant;

use unicode_normalization::UnicodeNormalization;
use zeroize::Zeroizing;

use super::{Granted, Refusal, TokenRequest};
use crate::db::Db;
use crate::logins::LoginLimiter;
use crate::password::Passwords;
use crate::store::audit::{AuditQueue, Event};
use crate::store::clients::GrantType;
use crate::store::refresh::{self, NewFamily, RefreshPolicy};
use crate::store::users::{self, User};
use crate::store::{now, Scopes};

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

/// Why a password check said no.
#[derive(Debug)]
pub enum Denied {
    /// Too many failed attempts: wait this long.
    TooManyAttempts(std::time::Duration),
    /// Unknown user, wrong password or disabled user (one answer for all).
    Wrong,
    /// The server could not check.
    Failed(crate::Error),
}

impl Login<'_> {
    /// Check `username` and `password`, for the token endpoint and the
    /// login page alike: the attempt counts before the hash, an unknown
    /// user costs a hash too, and both outcomes are audited (`client_id`,
    /// `peer`, and `how`: which door the login came through).
    pub async fn check(
        &self,
        username: &str,
        password: Zeroizing<String>,
        peer: Option<IpAddr>,
        client_id: &str,
        how: &'static str,
    ) -> Result<User, Denied> {
        // Names are stored in NFC (`store::check_text`): one typed
        // decomposed ("José" from some keyboards) is the same name, and
        // counts against the same limit.
        let username: String = username.nfc().collect();
        let username = username.as_str();
        // Counted before the hash: concurrent guesses cannot outrun the limit.
        let attempt = self
            .logins
            .begin(username, peer, Instant::now())
            .map_err(Denied::TooManyAttempts)?;
        // A check the server could not make (the database failed, the
        // hashing queue was full) is no guess: it costs the username none
        // of its tries.
        let user = match users::find(self.db, username).await {
            Ok(user) => user,
            Err(e) => {
                attempt.not_checked();
                return Err(Denied::Failed(e));
            }
        };
        let stored = user.as_ref().map(|u| u.password_hash.clone());
        let matched = match self.passwords.verify(password, stored).await {
            Ok(matched) => matched,
            Err(e) => {
                attempt.not_checked();
                return Err(Denied::Failed(e));
            }
        };
        // The name of an account, not of a failure: what was typed for an
        // unknown user is often a password in the wrong field, and the
        // audit trail keeps it for months (as `logins` keeps only a keyed
        // hash of it).
        let known = user.is_some();
        let event = |name| {
            let event = Event::new(name)
                .client(client_id)
                .remote(peer.map(|p| p.to_string()))
                .detail(how);
            if known {
                event.subject(username)
            } else {
                event
            }
        };
        // The hash took a while: a password changed (or a user disabled,
        // or deleted and made again under the name) meanwhile makes this
        // login as wrong as it would be now, and the scopes granted are
        // the user's as they are now. What it goes on to write (a session,
        // a refresh family) checks again, in its transaction.
        let user = match user {
            None => Err("unknown user"),
            Some(_) if !matched => Err("wrong password"),
            Some(u) if u.disabled => Err("user disabled"),
            Some(u) => match users::find(self.db, username).await {
                Ok(Some(now))
                    if now.id == u.id && now.password_hash == u.password_hash && !now.disabled =>
                {
                    Ok(now)
                }
                Ok(_) => Err("changed while it was checked"),
                Err(e) => {
                    attempt.not_checked();
                    return Err(Denied::Failed(e));
                }
            },
        };
        match user {
            Ok(user) => {
                attempt.succeeded();
                self.audit.push(event("login_succeeded"));
                Ok(user)
            }
            Err(why) => {
                drop(attempt);
                self.audit
                    .push(event("login_failed").detail(format!("{how}: {why}")));
                // The failure that used up the window's: the trail says
                // when an account or an address was locked out, and for
                // how long (the refusals after it are counted in
                // metrics, not written one by one).
                if let Some(wait) = self.logins.locked_out(username, peer, Instant::now()) {
                    self.audit.push(
                        event("login_locked").detail(format!("{how} for={}s", wait.as_secs())),
                    );
                }
                Err(Denied::Wrong)
            }
        }
    }
}

/// Check the username and password (the attempt counts before the hash),
/// and start a refresh-token family when the client may refresh.
pub async fn grant(request: &TokenRequest<'_>, login: Login<'_>) -> Result<Granted, Refusal> {
    let client = request.client;
    let username = request.require("username")?;
    let password = Zeroizing::new(request.require("password")?.to_owned());
    let user = match login
        .check(
            username,
            password,
            request.peer,
            &client.client_id,
            "password grant",
        )
        .await
    {
        Ok(user) => user,
        Err(Denied::TooManyAttempts(wait)) => {
            metrics::counter!("tessera_token_failures_total", "reason" => "login_rate_limited")
                .increment(1);
            return Err(Refusal::TooManyAttempts(wait));
        }
        Err(Denied::Wrong) => {
            metrics::counter!("tessera_token_failures_total", "reason" => "invalid_credentials")
                .increment(1);
            return Err(Refusal::InvalidGrant("invalid username or password".into()));
        }
        Err(Denied::Failed(e)) => return Err(Refusal::Failed(e)),
    };
    let user_scopes = Scopes::parse(&user.scopes)?;
    let scope = request.scopes_within(&client.scopes.intersection(&user_scopes))?;
    let auth_time = Some(now());
    let (refresh_token, family) = if client.allows(GrantType::RefreshToken) {
        let family = crate::secret::random_id()?;
        let token = refresh::issue_as(
            login.db,
            &family,
            NewFamily {
                client_id: &client.client_id,
                subject: &user.id,
                username: Some(&user.username),
                password_hash: Some(&user.password_hash),
                user_scopes: Some(&user.scopes),
                scope: &scope.to_string(),
                auth_time,
                sid: None,
            },
            login.refresh,
        )
        .await?;
        // Disabled (or deleted) since the password was checked.
        let Some(token) = token else {
            return Err(Refusal::InvalidGrant("invalid username or password".into()));
        };
        (Some(token), Some(family))
    } else {
        (None, None)
    };
    Ok(Granted {
        subject: user.id,
        username: Some(user.username),
        scope,
        auth_time,
        refresh_token,
        family,
        sid: None,
        sign_in: None,
    })
}

/// A refresh family a password login started, revoked when the token
/// endpoint fails before it answered ([`super::TakeBack`]): no one holds
/// its token, and a retry starts another. What is kept is the token's
/// digest, never the token.
pub struct Unissued {
    digest: Vec<u8>,
    client_id: String,
}

impl std::fmt::Debug for Unissued {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Unissued")
            .field("client_id", &self.client_id)
            .finish_non_exhaustive()
    }
}

/// Why such a family was revoked.
pub const UNANSWERED: &str = "the login's answer failed";

impl Unissued {
    /// The family of `granted`'s refresh token, if it has one.
    pub fn of(request: &TokenRequest<'_>, granted: &Granted) -> Option<Unissued> {
        Some(Unissued {
            digest: crate::secret::token_digest(granted.refresh_token.as_deref()?),
            client_id: request.client.client_id.clone(),
        })
    }

    /// Revoke it (a failure is the caller's to try again,
    /// [`super::Armed`]).
    pub async fn apply(&self, db: &Db, audit: &AuditQueue) -> Result<(), crate::Error> {
        if let Some(family) =
            refresh::revoke_by_digest(db, &self.digest, &self.client_id, UNANSWERED).await?
        {
            audit.push(
                Event::new("login_family_revoked")
                    .client(&self.client_id)
                    .subject(family.subject)
                    .detail(format!("family={} answer failed", family.id)),
            );
        }
        Ok(())
    }
}
