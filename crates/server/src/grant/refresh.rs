//! `refresh_token` (RFC 6749 §6): rotate the presented token, with reuse
//! detection, for the same or narrower scopes.

use std::sync::Arc;

use super::{Granted, Refusal, TokenRequest};
use crate::db::Db;
use crate::refresh_limit::RefreshLimit;
use crate::secret::{random_token, token_digest, MasterKey};
use crate::store::audit::{AuditQueue, Event};
use crate::store::refresh::{self, RefreshPolicy, Refused};
use crate::store::Scopes;

/// What a rotation needs.
#[derive(Debug)]
pub struct Rotate<'a> {
    /// Refresh tokens.
    pub db: &'a Db,
    /// Their lifetimes and grace window.
    pub policy: &'a RefreshPolicy,
    /// Seals a successor for the grace window.
    pub master: Arc<MasterKey>,
    /// The audit trail.
    pub audit: &'a AuditQueue,
    /// Rotations per client and subject.
    pub limit: &'a RefreshLimit,
    /// How long a revocation's event is kept (reuse revokes a family).
    pub keep: crate::store::revocation::Keep,
    /// This instance's copy of the revocation log, read again once reuse
    /// has revoked a family (its access tokens are refused here at once).
    pub revoked: &'a crate::store::revocation::Revocations,
}

/// Rotate the presented refresh token. Every check (client, expiry,
/// revocation, scope) is made before anything is written; a token rotated
/// before, outside the grace window, revokes its family.
pub async fn grant(request: &TokenRequest<'_>, rotate: Rotate<'_>) -> Result<Granted, Refusal> {
    let client = request.client;
    let presented = request.require("refresh_token")?;
    let requested = request
        .params
        .get("scope")
        .map(Scopes::parse)
        .transpose()
        .map_err(|e| Refusal::InvalidScope(e.to_string()))?;
    // Counted before anything is written: a refused rotation leaves the
    // presented token as it was, for the client to try again with.
    let counted = match refresh::presented(rotate.db, presented, &client.client_id).await? {
        refresh::Presented::Refused(refused) => {
            metrics::counter!("tessera_token_failures_total", "reason" => refused.reason())
                .increment(1);
            return Err(refusal(refused));
        }
        refresh::Presented::Live(subject) => {
            if rotate.limit.is_on() {
                if let Err(wait) = rotate.limit.check(&client.client_id, &subject) {
                    return Err(too_many(wait));
                }
            }
            true
        }
        refresh::Presented::Used => false,
    };
    let successor = random_token()?;
    let rotation = refresh::Rotation {
        presented,
        client_id: &client.client_id,
        client_scopes: &client.scopes,
        requested: requested.as_ref(),
        successor: &successor,
        keep: rotate.keep,
    };
    // Armed before the rotation: a request dropped while it is under way
    // (the request timeout), or an error after it may have committed (the
    // commit's answer lost), leaves a rotation the client never received,
    // and its retry would be reuse, which ends the session. On SQLite a
    // rotation already running finishes whatever happens to its caller.
    let armed = super::Armed::new(
        Unrotate::of(request, &successor, rotate.policy).map(super::TakeBack::Rotation),
        rotate.db,
        rotate.audit,
    );
    let rotated = refresh::rotate(rotate.db, rotation, rotate.policy, &rotate.master).await;
    let rotated = match rotated {
        Err(e) => {
            armed.apply().await;
            return Err(e.into());
        }
        Ok(answer) => {
            armed.disarm();
            answer
        }
    };
    let rotated = match rotated {
        Ok(rotated) => rotated,
        Err(refused) => {
            metrics::counter!("tessera_token_failures_total", "reason" => refused.reason())
                .increment(1);
            if let Refused::Reused {
                family_id,
                subject,
                sid,
            } = &refused
            {
                tracing::warn!(client_id = %client.client_id, family_id, "refresh token reused: family revoked");
                rotate.revoked.catch_up(rotate.db).await;
                let detail = match sid {
                    Some(sid) => format!("family={family_id} sid={sid}"),
                    None => format!("family={family_id}"),
                };
                rotate.audit.push(
                    Event::new("refresh_reuse_detected")
                        .client(&client.client_id)
                        .subject(subject)
                        .remote(request.remote())
                        .detail(detail),
                );
            }
            return Err(refusal(refused));
        }
    };
    // A retry within the grace window hands a successor out again and
    // mints an access token, so it is counted as a rotation is, unless it
    // was counted before it (the token was live then, and another request
    // rotated it meanwhile): a client presenting its rotated token in a
    // loop for the window's length was never held back. Refused past the
    // allowance only when it wrote nothing; one that replaced an unkept
    // successor has committed, and is answered.
    if rotated.retried && !counted && rotate.limit.is_on() {
        let checked = rotate
            .limit
            .check(&client.client_id, &rotated.family.subject);
        if let (Err(wait), false) = (checked, rotated.replaced) {
            return Err(too_many(wait));
        }
    }
    let family = rotated.family;
    // No user lookup: disabling, deleting or re-passwording a user revokes
    // (or deletes) the user's families in the same transaction, so a
    // family that rotated is a user who may still log in.
    let family_scope = match Scopes::parse(&family.scope) {
        Ok(scope) => scope,
        Err(e) => {
            let unrotate = Unrotate::of(request, &rotated.token, rotate.policy);
            super::Armed::new(
                unrotate.map(super::TakeBack::Rotation),
                rotate.db,
                rotate.audit,
            )
            .apply()
            .await;
            return Err(e.into());
        }
    };
    // RFC 6749 §6: a refresh may narrow the scope, never widen it (checked
    // by the rotation before it wrote anything).
    let scope = requested.unwrap_or_else(|| family_scope.intersection(&client.scopes));
    rotate.audit.push(
        Event::new("refresh_rotated")
            .client(&client.client_id)
            .subject(&family.subject)
            .detail(format!(
                "family={}{}",
                family.id,
                if rotated.retried { " retry" } else { "" }
            )),
    );
    Ok(Granted {
        subject: family.subject,
        username: family.username,
        scope,
        auth_time: family.auth_time,
        refresh_token: Some(rotated.token),
        family: Some(family.id),
        sid: family.sid,
        sign_in: None,
    })
}

/// What the client is told of a refresh token the rotation refused.
fn refusal(refused: Refused) -> Refusal {
    match refused {
        Refused::Expired => Refusal::InvalidGrant("refresh token expired".into()),
        Refused::Reused { .. } | Refused::Revoked => {
            Refusal::InvalidGrant("refresh token revoked".into())
        }
        Refused::Unknown | Refused::WrongClient => {
            Refusal::InvalidGrant("unknown refresh token".into())
        }
        Refused::ScopeNotGranted => Refusal::InvalidScope(
            "a requested scope was not granted to this session (or this client)".into(),
        ),
    }
}

/// Past the client's allowance of rotations for the user.
fn too_many(wait: std::time::Duration) -> Refusal {
    metrics::counter!("tessera_token_failures_total", "reason" => "too_many_refreshes")
        .increment(1);
    Refusal::TooManyRefreshes(wait)
}

/// A rotation taken back when the token endpoint fails after it
/// committed and before it answered ([`super::TakeBack`]): the retry must
/// find the token it holds still live, not take it for reuse and revoke
/// the session. Only without a grace window
/// (`tokens.refresh_grace = "0s"`): with one, a retry gets the same
/// successor, and a concurrent retry may already hold it. What is kept is
/// the two tokens' digests, never the tokens.
pub struct Unrotate {
    presented: Vec<u8>,
    successor: Vec<u8>,
    client_id: String,
}

impl std::fmt::Debug for Unrotate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Unrotate")
            .field("client_id", &self.client_id)
            .finish_non_exhaustive()
    }
}

impl Unrotate {
    /// What to take back of the rotation of `request`'s refresh token
    /// into `successor`; `None` where nothing may be (a grace window).
    pub fn of(
        request: &TokenRequest<'_>,
        successor: &str,
        policy: &RefreshPolicy,
    ) -> Option<Unrotate> {
        if policy.grace > 0 {
            return None;
        }
        Some(Unrotate {
            presented: token_digest(request.params.get("refresh_token")?),
            successor: token_digest(successor),
            client_id: request.client.client_id.clone(),
        })
    }

    /// Take the rotation back (as far as it still can be: not once the
    /// successor is gone). A failure is the caller's to try again
    /// ([`super::Armed`]).
    pub async fn apply(&self, db: &Db, audit: &AuditQueue) -> Result<(), crate::Error> {
        match refresh::take_back(db, &self.presented, &self.successor).await? {
            Some(family_id) => audit.push(
                Event::new("refresh_rotation_taken_back")
                    .client(&self.client_id)
                    .detail(format!(
                        "family={family_id} answer failed, presented token live again"
                    )),
            ),
            None => tracing::info!(
                client_id = %self.client_id,
                "a refresh rotation whose answer failed was not taken back: its successor is gone or \
                 used, or its session was revoked meanwhile"
            ),
        }
        Ok(())
    }
}
