//! `authorization_code` (RFC 6749 §4.1.3, PKCE as RFC 7636 §4.6): the code
//! from the authorization endpoint, its PKCE verifier and its redirect
//! URI; a refresh token where the rules below allow one; an ID token with
//! `openid` (made by the token endpoint once the access token exists, for
//! its `at_hash`).
//!
//! Refresh tokens: the client must be registered for the `refresh_token`
//! grant, and then a first-party client gets one on every sign-in, while
//! any other client gets one only when the person allowed
//! `offline_access` (OpenID Connect Core §11: offline access needs
//! consent, and the consent page is where it is given). Either way the
//! refresh family belongs to the sign-in session and ends with it.

use tessera_guard::revocation::Revocable;

use super::{Granted, Refusal, SignIn, TokenRequest};
use crate::db::Db;
use crate::revoke_limit::RevokeLimit;
use crate::secret::random_id;
use crate::store::audit::{AuditQueue, Event};
use crate::store::clients::GrantType;
use crate::store::codes::{self, Issued, Redeemed};
use crate::store::refresh::{self, NewFamily, RefreshPolicy};
use crate::store::revocation::{Appended, Keep, Revocations};
use crate::store::{now, Scopes};

/// What exchanging a code needs.
#[derive(Clone, Copy, Debug)]
pub struct Exchange<'a> {
    /// Codes, users, refresh tokens.
    pub db: &'a Db,
    /// Refresh-token lifetimes.
    pub refresh: &'a RefreshPolicy,
    /// The audit trail.
    pub audit: &'a AuditQueue,
    /// Where a replayed code's access token is revoked.
    pub revoked: &'a Revocations,
    /// How long after the code is spent its access token can expire at
    /// the latest: the longest an access token lives, plus the longest
    /// the request can still take before the token is minted (its
    /// timeout). A replayed code's token stays on the revocation list
    /// that long.
    pub latest_access_expiry: i64,
    /// Spends codes, in groups.
    pub codes: &'a codes::CodeWriter,
    /// Access-token revocations allowed per client and user.
    pub revoke_limit: &'a RevokeLimit,
    /// How long a session's revocation event is kept.
    pub keep: Keep,
}

/// Redeem the code, bound to its PKCE challenge and redirect URI (a
/// presentation without both changes nothing), start a refresh family
/// when allowed.
pub async fn grant(request: &TokenRequest<'_>, exchange: Exchange<'_>) -> Result<Granted, Refusal> {
    let client = request.client;
    let code = request.require("code")?;
    let verifier = request.require("code_verifier").map_err(|_| {
        Refusal::InvalidRequest("missing parameter code_verifier (PKCE is required)".into())
    })?;
    // Checked as the code is spent, not after: a presenter who cannot
    // show the verifier (who intercepted the code only) must neither
    // spend it nor, by replaying it, have what it issued revoked.
    let proof = codes::Proof {
        code_challenge: crate::signin::pkce_challenge(verifier).ok_or_else(|| {
            Refusal::InvalidGrant(
                "code_verifier is not 43 to 128 unreserved characters (RFC 7636 §4.1)".into(),
            )
        })?,
        // Required: every authorization request names it (RFC 6749
        // §4.1.3).
        redirect_uri: Some(request.require("redirect_uri")?.to_owned()),
    };
    let event = |name| {
        Event::new(name)
            .client(&client.client_id)
            .remote(request.remote())
    };
    // What this exchange will issue, recorded with the code as it is
    // spent: a replay revokes it even before it exists.
    let refresh_allowed = client.allows(GrantType::RefreshToken);
    let issuing = Issued {
        family_id: if refresh_allowed {
            Some(random_id()?)
        } else {
            None
        },
        access_jti: Some(tessera_jose::jwt::random_id().map_err(crate::Error::from)?),
        access_expires_at: Some(now().saturating_add(exchange.latest_access_expiry)),
    };
    // A replay revokes, as it is recorded, what the first use issued:
    // the access token's event unless it is refused already, and within
    // the client's allowance for the user.
    let checks = codes::ReplayChecks {
        refused: |sid: &str, jti: &str, family: Option<&str>| codes::AlreadyRefused {
            token: exchange.revoked.refuses(Revocable {
                jti: Some(jti),
                sid: Some(sid),
                ..Revocable::default()
            }),
            family: family.is_some_and(|family| {
                exchange.revoked.refuses(Revocable {
                    sid: Some(sid),
                    family: Some(family),
                    ..Revocable::default()
                })
            }),
        },
        count: |user_id: &str| {
            let any_subject = client.allows(GrantType::JwtBearer);
            exchange
                .revoke_limit
                .check(&client.client_id, user_id, any_subject)
        },
        keep: exchange.keep,
    };
    // Armed before the code is spent: an exchange dropped while the claim
    // runs (the request timeout), or failing after it may have committed
    // (its commit's answer lost), leaves the code released, so that the
    // client's retry is no replay. A release matches only this exchange's
    // `jti`: it never frees a code another exchange spent.
    let release = super::Armed::new(
        Some(super::TakeBack::Code(Release {
            code_hash: crate::secret::token_digest(code),
            access_jti: issuing.access_jti.clone().unwrap_or_default(),
            client_id: client.client_id.clone(),
        })),
        exchange.db,
        exchange.audit,
    );
    let redeemed = exchange
        .codes
        .redeem(code, &client.client_id, &proof, &issuing, checks)
        .await;
    let redeemed = match redeemed {
        Ok(redeemed) => redeemed,
        Err(e) => {
            release.apply().await;
            return Err(e.into());
        }
    };
    let spent = match redeemed {
        Redeemed::First(spent) => spent,
        Redeemed::Invalid => {
            release.disarm();
            return Err(Refusal::InvalidGrant(
                "the code is unknown, expired, or was issued to another client".into(),
            ));
        }
        Redeemed::WrongVerifier => {
            release.disarm();
            return Err(Refusal::InvalidGrant(
                "code_verifier does not match the code_challenge".into(),
            ));
        }
        Redeemed::WrongRedirectUri => {
            release.disarm();
            return Err(Refusal::InvalidGrant(
                "redirect_uri is not the one the code was sent to".into(),
            ));
        }
        Redeemed::Replayed { token, .. } => {
            release.disarm();
            // Committed: applied here now (or by the follower soon).
            if token != Appended::Already {
                exchange.revoked.catch_up(exchange.db).await;
            }
            exchange
                .audit
                .push(event("code_replayed").detail("issued tokens revoked"));
            return Err(Refusal::InvalidGrant(
                "the code was already used: what it issued is revoked".into(),
            ));
        }
        // Recorded once, by the first replay.
        Redeemed::ReplayedAgain => {
            release.disarm();
            return Err(Refusal::InvalidGrant(
                "the code was already used: what it issued is revoked".into(),
            ));
        }
    };
    // Spent: a failure of this server from here on releases it, or the
    // client's retry would be a replay.
    let granted = finish(request, exchange, (code, &proof), spent, &issuing).await;
    match &granted {
        Err(Refusal::Failed(_)) => release.apply().await,
        // Answered (the token endpoint arms its own from here), or
        // refused for good (the session ended, a replay).
        _ => release.disarm(),
    }
    granted
}

/// The exchange once its code is spent: the refresh family, if any.
async fn finish(
    request: &TokenRequest<'_>,
    exchange: Exchange<'_>,
    (code, proof): (&str, &codes::Proof),
    spent: codes::Spent,
    issuing: &Issued,
) -> Result<Granted, Refusal> {
    let client = request.client;
    // The claim matched the proof already; checked again here, where the
    // tokens are decided.
    if !proof.matches(&spent.grant) {
        return Err(Refusal::InvalidGrant(
            "code_verifier or redirect_uri does not match the code".into(),
        ));
    }
    let grant = spent.grant;
    let Some(username) = spent.username else {
        return Err(Refusal::InvalidGrant(
            "the user can no longer sign in".into(),
        ));
    };
    let scope = Scopes::parse(&grant.scope)?;
    // A scope taken from the client after the code was issued (or while
    // its sign-in waited at the login page) is not granted: taking it
    // away revoked what the client held, and a code issued before must
    // not mint it again (an admin console demoted would get a token with
    // `tessera:admin` for its whole lifetime).
    if !scope.is_subset(&client.scopes) {
        return Err(Refusal::InvalidGrant(
            "the client may no longer be granted every scope of this code".into(),
        ));
    }
    let mut refresh_token = None;
    if let Some(family_id) = &issuing.family_id {
        if client.first_party || scope.contains("offline_access") {
            let token = refresh::issue_as(
                exchange.db,
                family_id,
                NewFamily {
                    client_id: &client.client_id,
                    subject: &grant.user_id,
                    username: Some(&username),
                    // The session is checked instead: a password change
                    // ends it.
                    password_hash: None,
                    // Taken away, a scope ends the user's sessions.
                    user_scopes: None,
                    scope: &grant.scope,
                    auth_time: Some(grant.auth_time),
                    sid: Some(&grant.sid),
                },
                exchange.refresh,
            )
            .await?;
            // The session ended in the meantime (the claim found it live).
            let Some(token) = token else {
                return Err(Refusal::InvalidGrant(
                    "the session this code belongs to has ended".into(),
                ));
            };
            // A replay that came in before the family existed could not
            // revoke it: look for its mark now.
            if codes::replayed(exchange.db, code).await? {
                // This exchange mints no access token: only the family.
                refresh::revoke_family(exchange.db, family_id, codes::REPLAYED).await?;
                return Err(Refusal::InvalidGrant(
                    "the code was used twice: what it issued is revoked".into(),
                ));
            }
            refresh_token = Some(token);
        }
    }
    // No family: a replay that came in while this exchange ran revoked the
    // access token it will sign (its `jti`), and nothing can revoke the ID
    // token beside it; answering would hand the client both, for a code
    // the replay was told is spent. (With a family, checked above.)
    if refresh_token.is_none() && codes::replayed(exchange.db, code).await? {
        return Err(Refusal::InvalidGrant(
            "the code was used twice: what it issued is revoked".into(),
        ));
    }
    exchange.audit.push(
        Event::new("code_exchanged")
            .client(&client.client_id)
            .remote(request.remote())
            .subject(&username),
    );
    Ok(Granted {
        subject: grant.user_id,
        username: Some(username),
        scope,
        auth_time: Some(grant.auth_time),
        family: refresh_token.as_ref().and(issuing.family_id.clone()),
        refresh_token,
        sid: Some(grant.sid.clone()),
        sign_in: Some(SignIn {
            sid: grant.sid,
            nonce: grant.nonce,
            jti: issuing.access_jti.clone().unwrap_or_default(),
        }),
    })
}

/// A spent code released when the exchange fails after spending it and
/// before it answered ([`super::TakeBack`], and this grant's own failures
/// once the code is spent): the client's retry of the same exchange must
/// not be a replay, which would revoke what the session had. What is kept
/// is the code's digest, never the code.
pub struct Release {
    code_hash: Vec<u8>,
    access_jti: String,
    client_id: String,
}

impl std::fmt::Debug for Release {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Release")
            .field("client_id", &self.client_id)
            .field("access_jti", &self.access_jti)
            .finish_non_exhaustive()
    }
}

impl Release {
    /// What to release of the exchange of `request`'s code that
    /// `granted` answers.
    pub fn of(request: &TokenRequest<'_>, granted: &Granted) -> Option<Release> {
        Some(Release {
            code_hash: crate::secret::token_digest(request.params.get("code")?),
            access_jti: granted.sign_in.as_ref()?.jti.clone(),
            client_id: request.client.client_id.clone(),
        })
    }

    /// Release the code (as far as it still can be: not once a replay has
    /// marked it). A failure is the caller's to try again
    /// ([`super::Armed`]).
    pub async fn apply(&self, db: &Db, audit: &AuditQueue) -> Result<(), crate::Error> {
        match codes::release(db, &self.code_hash, &self.access_jti).await? {
            true => audit.push(Event::new("code_released").client(&self.client_id).detail(
                format!(
                    "jti={} exchange failed, code may be presented again",
                    self.access_jti
                ),
            )),
            false => tracing::info!(
                client_id = %self.client_id,
                "a code whose exchange failed was not released: it was replayed meanwhile"
            ),
        }
        Ok(())
    }
}
