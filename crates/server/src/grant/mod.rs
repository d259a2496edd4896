//! The grants of the token endpoint (RFC 6749 §4, RFC 7523), one file
//! each, behind one HTTP-free interface: a [`TokenRequest`] in (an
//! authenticated client and the request's parameters), a [`Granted`] or a
//! typed [`Refusal`] out. `http/token.rs` parses the form, authenticates
//! the client, calls the grant, maps refusals to RFC 6749 errors and
//! mints the access token.
//!
//! Each grant takes the narrow parts it needs (the database, the password
//! hasher, the login limits, the audit queue, the refresh policy), never
//! the application state. Adding a grant is a file here and its line in
//! `http/token.rs`'s dispatch.

pub mod authorization_code;
pub mod client_auth;
pub mod client_credentials;
pub mod jwt_bearer;
pub mod password;
pub mod refresh;

use std::net::IpAddr;
use std::time::Duration;

use zeroize::Zeroizing;

use crate::db::Db;
use crate::store::audit::AuditQueue;
use crate::store::clients::{Client, GrantType};
use crate::store::refresh::RefreshPolicy;
use crate::store::Scopes;
use crate::Error;

/// The parameters of a token request, by name (a form, in practice).
pub trait Parameters {
    /// The value of `name`, if present and not empty.
    fn get(&self, name: &str) -> Option<&str>;
}

/// A token request of an authenticated client.
pub struct TokenRequest<'a> {
    /// The client, authenticated (or identified, if public).
    pub client: &'a Client,
    /// The request's parameters.
    pub params: &'a (dyn Parameters + Sync),
    /// The peer's address, for limits and the audit trail.
    pub peer: Option<IpAddr>,
}

impl std::fmt::Debug for TokenRequest<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Parameters hold passwords and tokens: never printed.
        f.debug_struct("TokenRequest")
            .field("client", &self.client.client_id)
            .field("peer", &self.peer)
            .finish_non_exhaustive()
    }
}

impl TokenRequest<'_> {
    /// A required parameter.
    pub fn require(&self, name: &str) -> Result<&str, Refusal> {
        self.params
            .get(name)
            .ok_or_else(|| Refusal::InvalidRequest(format!("missing parameter {name}")))
    }

    /// The scopes to grant: the requested ones if all are within
    /// `allowed`, or all of `allowed` when none were requested.
    pub fn scopes_within(&self, allowed: &Scopes) -> Result<Scopes, Refusal> {
        match self.params.get("scope") {
            None => Ok(allowed.clone()),
            Some(text) => {
                let requested =
                    Scopes::parse(text).map_err(|e| Refusal::InvalidScope(e.to_string()))?;
                if !requested.is_subset(allowed) {
                    return Err(Refusal::InvalidScope(
                        "a requested scope is not allowed for this client (or user)".into(),
                    ));
                }
                Ok(requested)
            }
        }
    }

    /// The peer's address as text, for the audit trail.
    pub fn remote(&self) -> Option<String> {
        self.peer.map(|p| p.to_string())
    }
}

/// What a grant grants: whom the access token is for, and a refresh
/// token where one goes with it.
pub struct Granted {
    /// `sub`: the user's id, or the client's.
    pub subject: String,
    /// The user's login name, for the audit trail.
    pub username: Option<String>,
    /// The scopes granted.
    pub scope: Scopes,
    /// When the user authenticated.
    pub auth_time: Option<i64>,
    /// A refresh token, new or rotated.
    pub refresh_token: Option<Zeroizing<String>>,
    /// The sign-in session the tokens belong to (`sid`: ending the
    /// session revokes them).
    pub sid: Option<String>,
    /// The refresh-token family of `refresh_token` (revoking the family
    /// revokes the access token minted with it).
    pub family: Option<String>,
    /// For a sign-in (the code grant): what the access and ID tokens need.
    pub sign_in: Option<SignIn>,
}

impl std::fmt::Debug for Granted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The refresh token is a bearer secret: whether there is one, never
        // what it is.
        f.debug_struct("Granted")
            .field("subject", &self.subject)
            .field("username", &self.username)
            .field("scope", &self.scope)
            .field("auth_time", &self.auth_time)
            .field("refresh_token", &self.refresh_token.as_ref().map(|_| "…"))
            .field("sid", &self.sid)
            .field("family", &self.family)
            .field("sign_in", &self.sign_in)
            .finish()
    }
}

/// What a grant wrote that the token endpoint takes back when it fails
/// after the grant committed and before it answered (a read of the
/// revocation log, a signature, a clock check, or a refusal because the
/// user or the client changed meanwhile): the client was answered with
/// an error, and its retry (the natural answer to a 503, or the same
/// request with the client's new secret) must find what it holds still
/// usable, not be taken for a replay that revokes the session. A retry
/// is checked afresh, so a refusal loses nothing by it.
#[derive(Debug)]
pub enum TakeBack {
    /// A refresh rotation (without a grace window).
    Rotation(refresh::Unrotate),
    /// A spent authorization code.
    Code(authorization_code::Release),
    /// A password login's new refresh family, which no one holds.
    Family(password::Unissued),
    /// A jwt-bearer grant's assertion, spent.
    Assertion(client_auth::Assertion),
}

impl TakeBack {
    /// What to take back of `granted`, the answer of grant `grant` to
    /// `request` (with `assertion`, the jwt-bearer grant's), if it fails;
    /// `None` for grants that leave nothing a retry would trip on.
    pub fn of(
        grant: GrantType,
        request: &TokenRequest<'_>,
        granted: &Granted,
        refresh: &RefreshPolicy,
        assertion: Option<client_auth::Assertion>,
    ) -> Option<TakeBack> {
        match grant {
            GrantType::JwtBearer => assertion.map(TakeBack::Assertion),
            GrantType::RefreshToken => granted
                .refresh_token
                .as_deref()
                .and_then(|successor| refresh::Unrotate::of(request, successor, refresh))
                .map(TakeBack::Rotation),
            GrantType::AuthorizationCode => {
                authorization_code::Release::of(request, granted).map(TakeBack::Code)
            }
            GrantType::Password => password::Unissued::of(request, granted).map(TakeBack::Family),
            _ => None,
        }
    }

    /// Take it back, as far as it still can be; an error when the
    /// database could not be reached (worth trying again).
    pub async fn apply(&self, db: &Db, audit: &AuditQueue) -> Result<(), crate::Error> {
        match self {
            TakeBack::Rotation(unrotate) => unrotate.apply(db, audit).await,
            TakeBack::Code(release) => release.apply(db, audit).await,
            TakeBack::Family(unissued) => unissued.apply(db, audit).await,
            TakeBack::Assertion(assertion) => assertion.unspend(db).await,
        }
    }

    /// What happens if it is never done.
    fn if_never_done(&self) -> &'static str {
        match self {
            TakeBack::Rotation(_) => {
                "the client's retry will count as reuse and revoke its session"
            }
            TakeBack::Code(_) => "the client's retry will count as a replay",
            TakeBack::Family(_) => "the family lives on, held by no one, until it expires",
            TakeBack::Assertion(_) => "the client's retry will be refused as a replay",
        }
    }

    /// Take it back, trying again while the database cannot be reached
    /// (its failure is most often why the answer failed): the first
    /// attempt is said on `first` (the 503 waits for it), the others go
    /// on after, until the client's retry (`Retry-After: 5`) is likely.
    async fn apply_until_done(
        self,
        db: Db,
        audit: AuditQueue,
        first: tokio::sync::oneshot::Sender<()>,
    ) {
        let mut first = Some(first);
        let mut wait = std::time::Duration::from_millis(250);
        for attempt in 1..=TAKE_BACK_ATTEMPTS {
            let done = self.apply(&db, &audit).await;
            if let Some(first) = first.take() {
                let _ = first.send(());
            }
            match done {
                Ok(()) => return,
                Err(e) if attempt == TAKE_BACK_ATTEMPTS => {
                    tracing::warn!(
                        take_back = ?self,
                        error = %e,
                        "an answer that failed could not be taken back: {}",
                        self.if_never_done()
                    );
                }
                Err(e) => {
                    tracing::debug!(take_back = ?self, error = %e, attempt, "a take-back failed; trying again");
                    tokio::time::sleep(wait).await;
                    wait = wait.saturating_mul(2);
                }
            }
        }
    }
}

/// Attempts at a take-back: the last about 4 s after the first (0.25,
/// 0.5, 1 and 2 s apart), before a client that obeys `Retry-After: 5`
/// comes back.
const TAKE_BACK_ATTEMPTS: u32 = 5;

/// A [`TakeBack`] applied if it is dropped before it was settled: the
/// request timeout drops a request where it waits (a lock, the cut-off's
/// wait), and the take-back then runs in a task of its own, the request's
/// being gone.
#[derive(Debug)]
pub struct Armed {
    take_back: Option<TakeBack>,
    db: Db,
    audit: AuditQueue,
}

impl Armed {
    /// Arm `take_back` (nothing, when `None`).
    pub fn new(take_back: Option<TakeBack>, db: &Db, audit: &AuditQueue) -> Armed {
        Armed {
            take_back,
            db: db.clone(),
            audit: audit.clone(),
        }
    }

    /// The answer went out: nothing is taken back.
    pub fn disarm(mut self) {
        self.take_back = None;
    }

    /// The answer failed: take it back now, before the answer goes out
    /// (so that the client's retry finds it done), in a task of its own
    /// (so that the request dropped meanwhile does not cancel it half
    /// way), which tries again for a few seconds if the database cannot
    /// be reached; the answer waits for the first attempt only.
    pub async fn apply(mut self) {
        if let Some(first) = self.spawn() {
            if first.await.is_err() {
                tracing::error!("a take-back's task ended before its first attempt");
            }
        }
    }

    fn spawn(&mut self) -> Option<tokio::sync::oneshot::Receiver<()>> {
        let take_back = self.take_back.take()?;
        let (db, audit) = (self.db.clone(), self.audit.clone());
        let (first, first_done) = tokio::sync::oneshot::channel();
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(take_back.apply_until_done(db, audit, first));
                Some(first_done)
            }
            Err(_) => {
                tracing::warn!(?take_back, "no runtime to take back a failed answer on");
                None
            }
        }
    }
}

impl Drop for Armed {
    fn drop(&mut self) {
        // Dropped unsettled: the request was dropped (its timeout, the
        // client gone) before it answered. Its 503 may reach the client
        // before this is done; a retry that comes first is reuse, as
        // docs/operations.md says.
        drop(self.spawn());
    }
}

/// What a code exchange leaves for the token endpoint to finish: the ID
/// token's session and nonce, and the access token's `jti` (recorded with
/// the code).
#[derive(Debug)]
pub struct SignIn {
    /// The session.
    pub sid: String,
    /// The authorization request's `nonce`.
    pub nonce: Option<String>,
    /// The access token's `jti`.
    pub jti: String,
}

/// Why a grant said no, in the terms of RFC 6749 §5.2 (the HTTP layer
/// writes the answer).
#[derive(Debug)]
pub enum Refusal {
    /// `invalid_request`: a parameter is missing or malformed.
    InvalidRequest(String),
    /// `invalid_client`: the client could not be authenticated.
    InvalidClient(String),
    /// `invalid_grant`: the credentials, code, token or assertion are not
    /// good.
    InvalidGrant(String),
    /// `invalid_scope`.
    InvalidScope(String),
    /// Too many logins (failed, or successful, for one username): wait
    /// this long (429).
    TooManyAttempts(Duration),
    /// Too many rotations of one user's refresh tokens by this client
    /// (`refresh_limit.rs`): wait this long (429).
    TooManyRefreshes(Duration),
    /// The server failed or cannot serve now (500 or 503).
    Failed(Error),
}

impl From<Error> for Refusal {
    fn from(e: Error) -> Refusal {
        Refusal::Failed(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn granted_never_prints_its_refresh_token() {
        let granted = Granted {
            subject: "user-1".into(),
            username: Some("alice".into()),
            scope: Scopes::default(),
            auth_time: None,
            refresh_token: Some(Zeroizing::new("rt-secret-value".into())),
            family: None,
            sid: None,
            sign_in: None,
        };
        let printed = format!("{granted:?}");
        assert!(!printed.contains("rt-secret-value"), "{printed}");
        assert!(
            printed.contains("alice") && printed.contains("refresh_token: Some"),
            "{printed}"
        );
    }
}
