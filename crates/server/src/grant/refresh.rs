//! `refresh_token` (RFC 6749 §6): rotate the presented token, with reuse
//! detection, for the same or narrower scopes.

use std::sync::Arc;

use super::{Granted, Refusal, TokenRequest};
use crate::db::Db;
use crate::secret::MasterKey;
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
    let rotation = refresh::Rotation {
        presented,
        client_id: &client.client_id,
        client_scopes: &client.scopes,
        requested: requested.as_ref(),
    };
    let rotated = match refresh::rotate(rotate.db, rotation, rotate.policy, &rotate.master).await? {
        Ok(rotated) => rotated,
        Err(refused) => {
            metrics::counter!("tessera_token_failures_total", "reason" => refused.reason())
                .increment(1);
            if let Refused::Reused { family_id } = &refused {
                tracing::warn!(client_id = %client.client_id, family_id, "refresh token reused: family revoked");
                rotate.audit.push(
                    Event::new("refresh_reuse_detected")
                        .client(&client.client_id)
                        .remote(request.remote())
                        .detail(format!("family={family_id}")),
                );
            }
            return Err(match refused {
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
            });
        }
    };
    let family = rotated.family;
    // No user lookup: disabling, deleting or re-passwording a user revokes
    // (or deletes) the user's families in the same transaction, so a
    // family that rotated is a user who may still log in.
    let family_scope = Scopes::parse(&family.scope)?;
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
        sid: family.sid,
        sign_in: None,
    })
}
