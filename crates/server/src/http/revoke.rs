//! `POST /oauth2/revoke` (RFC 7009): a refresh token revokes its whole
//! family; an access token's `jti` is refused by introspection until the
//! token expires.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::error::client_refusal;
use super::form::OAuthForm;
use super::{App, OAuthError};
use crate::access::{looks_like_jwt, revocable};
use crate::grant::client_auth::{authenticate, Accept};
use crate::store::audit::Event;
use crate::store::clients::GrantType;
use crate::store::refresh;
use crate::store::revocation::Appended;

/// Authorization: the client the token was issued to. Another client's
/// token is refused with `unauthorized_client` (RFC 7009 §2.1: a 200
/// would tell its caller the token was revoked while it lives on): an
/// access token this server signed that has not expired, revoked or not
/// (answering otherwise would tell anyone who names a client whether it
/// was), and a refresh token of a family neither revoked nor over. What
/// the caller learns, its holder knew: the token works where it is
/// meant to. A token that is unknown, expired, or a refresh token whose
/// family ended is answered 200 and nothing happens (§2.2). A refusal is
/// logged: a client holding another's token may have stolen it.
pub async fn revoke(State(app): State<Arc<App>>, form: OAuthForm) -> Result<Response, OAuthError> {
    let client = authenticate(app.verifier(), &form.credentials(), Accept::AnyClient)
        .await
        .map_err(|r| client_refusal(r, &form))?;
    let token = form.require("token")?;
    let event = |subject: Option<&str>, detail: String| {
        let event = Event::new("token_revoked")
            .client(&client.client_id)
            .remote(form.peer.map(|p| p.to_string()))
            .detail(detail);
        match subject {
            Some(subject) => event.subject(subject),
            None => event,
        }
    };
    let not_yours = |owner: &str| {
        tracing::warn!(
            client_id = %client.client_id,
            issued_to = %owner,
            peer = ?form.peer,
            "revocation refused: the token was issued to another client"
        );
        OAuthError::unauthorized_client(
            "the token was issued to another client: only that client may revoke it",
        )
    };
    if looks_like_jwt(token) {
        if let Some(verified) = app.access.verify(token) {
            let claims = &verified.claims;
            if claims.custom.client_id != client.client_id {
                return Err(not_yours(&claims.custom.client_id));
            }
            if let (Some(jti), Some(exp)) = (claims.jti.as_deref(), claims.exp) {
                // Each one is an event every guard keeps until `exp`:
                // counted against the client's allowance for the
                // subject, unless the token is refused already (by its
                // `jti`, or its user's, client's or session's cut).
                let revoked = app.access.revoked();
                let refused = revoked.refuses(revocable(&verified));
                if !refused {
                    let subject = claims.sub.as_deref().unwrap_or(&client.client_id);
                    let any_subject = client.allows(GrantType::JwtBearer);
                    let count = || {
                        app.revoke_limit
                            .check(&client.client_id, subject, any_subject)
                    };
                    match revoked
                        .revoke_token_counted(&app.db, jti, exp.seconds(), count)
                        .await?
                    {
                        Appended::OverAllowance(wait) => {
                            return Err(OAuthError::revoking_too_fast(wait))
                        }
                        Appended::Now => {
                            app.audit.push(event(
                                claims.sub.as_deref(),
                                format!("access_token jti={jti}"),
                            ));
                        }
                        Appended::Already => {}
                    }
                }
            }
        }
    } else {
        let any_subject = client.allows(GrantType::JwtBearer);
        let counted = |subject: &str| {
            app.revoke_limit
                .check(&client.client_id, subject, any_subject)
                .is_ok()
        };
        let revoked = refresh::revoke(
            &app.db,
            token,
            &client.client_id,
            "revoked by client",
            app.config.revocation_keep(),
            counted,
        )
        .await?;
        if revoked.is_none() {
            if let Some(owner) = refresh::issued_to(&app.db, token).await? {
                if owner != client.client_id {
                    return Err(not_yours(&owner));
                }
            }
        }
        if let Some((family, cut)) = revoked {
            if cut {
                // Its access tokens are refused here at once.
                app.access.revoked().catch_up(&app.db).await;
            } else {
                tracing::info!(
                    client_id = %client.client_id,
                    family = %family.id,
                    "refresh family revoked; its access tokens live to their expiry (the client's revocation allowance is spent)"
                );
            }
            app.audit.push(event(
                Some(&family.subject),
                format!("refresh_family family={}", family.id),
            ));
        }
    }
    Ok((StatusCode::OK, super::token::no_store(())).into_response())
}
