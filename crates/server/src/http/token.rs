//! `POST /oauth2/token` (RFC 6749 §3.2): every grant, one client
//! authentication, one access token (RFC 9068) and, where the client may
//! refresh, a refresh token.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use zeroize::Zeroizing;

use super::client_auth::{authenticate, identifies_client, verify_assertion, Accept};
use super::form::OAuthForm;
use super::{App, OAuthError};
use crate::access::Mint;
use crate::store::audit::Event;
use crate::store::clients::{Client, GrantType};
use crate::store::refresh::{self, NewFamily, Refused};
use crate::store::secs;
use crate::store::{now, users, Scopes};

#[derive(Serialize)]
struct TokenResponse {
    access_token: String,
    token_type: &'static str,
    expires_in: i64,
    #[serde(skip_serializing_if = "String::is_empty")]
    scope: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    refresh_token: Option<Zeroizing<String>>,
}

/// Who a token is for.
struct Grant {
    subject: String,
    username: Option<String>,
    scope: Scopes,
    auth_time: Option<i64>,
}

/// Authorization: any registered client, for the grants it was given.
pub async fn token(State(app): State<Arc<App>>, form: OAuthForm) -> Result<Response, OAuthError> {
    if !app.audit.accepting() {
        // Nothing is issued that the audit trail could not record.
        return Err(OAuthError::temporarily_unavailable(
            &crate::Error::Unavailable("the audit trail is not being written".into()),
        ));
    }
    let grant_type = form.require("grant_type")?;
    let grant = GrantType::parse(grant_type).ok_or_else(|| {
        OAuthError::unsupported_grant_type(format!("grant_type {grant_type:?} is not supported"))
    })?;
    // RFC 7523 §3.1: with the jwt-bearer grant the assertion's issuer may
    // stand for the client.
    let (client, assertion) = if grant == GrantType::JwtBearer {
        let authenticated = if identifies_client(&form) {
            Some(authenticate(&app, &form, Accept::AnyClient).await?)
        } else {
            None
        };
        let verified = verify_assertion(&app, form.require("assertion")?)
            .await?
            .map_err(OAuthError::invalid_grant)?;
        if authenticated.is_some_and(|c| c.client_id != verified.client.client_id) {
            return Err(OAuthError::invalid_grant(
                "the assertion was issued by another client",
            ));
        }
        (verified.client.clone(), Some(verified))
    } else {
        (authenticate(&app, &form, Accept::AnyClient).await?, None)
    };
    if !client.allows(grant) {
        return Err(OAuthError::unauthorized_client(format!(
            "this client may not use the {} grant",
            grant.as_str()
        )));
    }
    let (granted, refresh_token) = match grant {
        GrantType::ClientCredentials => (client_credentials(&client, &form)?, None),
        GrantType::Password => password(&app, &client, &form).await?,
        GrantType::RefreshToken => rotate(&app, &client, &form).await?,
        GrantType::JwtBearer => match assertion {
            Some(assertion) => (
                jwt_bearer(&app, &client, &assertion.subject, &form).await?,
                None,
            ),
            None => return Err(OAuthError::invalid_request("missing parameter assertion")),
        },
    };
    let response = issue(&app, &client, granted, refresh_token)?;
    metrics::counter!("tessera_tokens_issued_total", "grant" => grant.as_str()).increment(1);
    Ok(response)
}

/// The scopes to grant: the requested ones if all are allowed, else all
/// allowed ones when none were requested.
fn requested_scopes(form: &OAuthForm, allowed: &Scopes) -> Result<Scopes, OAuthError> {
    match form.get("scope") {
        None => Ok(allowed.clone()),
        Some(text) => {
            let requested =
                Scopes::parse(text).map_err(|e| OAuthError::invalid_scope(e.to_string()))?;
            if !requested.is_subset(allowed) {
                return Err(OAuthError::invalid_scope(
                    "a requested scope is not allowed for this client (or user)",
                ));
            }
            Ok(requested)
        }
    }
}

fn client_credentials(client: &Client, form: &OAuthForm) -> Result<Grant, OAuthError> {
    Ok(Grant {
        subject: client.client_id.clone(),
        username: None,
        scope: requested_scopes(form, &client.scopes)?,
        auth_time: None,
    })
}

/// RFC 7523 §2.1: the assertion's subject is the client itself or one of
/// the users, who must be enabled.
async fn jwt_bearer(
    app: &App,
    client: &Client,
    subject: &str,
    form: &OAuthForm,
) -> Result<Grant, OAuthError> {
    if subject == client.client_id {
        return client_credentials(client, form);
    }
    let user = users::find(&app.db, subject)
        .await?
        .filter(|u| !u.disabled)
        .ok_or_else(|| {
            OAuthError::invalid_grant("the assertion's subject is not an enabled user")
        })?;
    app.audit.push(
        Event::new("assertion_accepted")
            .client(&client.client_id)
            .subject(&user.username)
            .remote(form.peer.map(|p| p.to_string())),
    );
    let user_scopes = Scopes::parse(&user.scopes)?;
    Ok(Grant {
        subject: user.id,
        username: Some(user.username),
        scope: requested_scopes(form, &client.scopes.intersection(&user_scopes))?,
        auth_time: Some(now()),
    })
}

async fn password(
    app: &App,
    client: &Client,
    form: &OAuthForm,
) -> Result<(Grant, Option<Zeroizing<String>>), OAuthError> {
    let username = form.require("username")?;
    let password = Zeroizing::new(form.require("password")?.to_owned());
    // Counted before the hash: concurrent guesses cannot outrun the limit.
    let attempt = app
        .logins
        .begin(username, form.peer, Instant::now())
        .map_err(|wait| {
            metrics::counter!("tessera_token_failures_total", "reason" => "login_rate_limited")
                .increment(1);
            OAuthError::too_many_attempts(wait.as_secs().saturating_add(1))
        })?;
    let user = users::find(&app.db, username).await?;
    let stored = user.as_ref().map(|u| u.password_hash.clone());
    let matched = app.passwords.verify(password, stored).await?;
    let event = |name| {
        Event::new(name)
            .client(&client.client_id)
            .subject(username)
            .remote(form.peer.map(|p| p.to_string()))
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
            app.audit.push(event("login_failed").detail(why));
            metrics::counter!("tessera_token_failures_total", "reason" => "invalid_credentials")
                .increment(1);
            return Err(OAuthError::invalid_grant("invalid username or password"));
        }
    };
    attempt.succeeded();
    app.audit.push(event("login_succeeded"));
    let user_scopes = Scopes::parse(&user.scopes)?;
    let granted = Grant {
        subject: user.id.clone(),
        username: Some(user.username.clone()),
        scope: requested_scopes(form, &client.scopes.intersection(&user_scopes))?,
        auth_time: Some(now()),
    };
    let refresh_token = if client.allows(GrantType::RefreshToken) {
        let scope = granted.scope.to_string();
        let (_, token) = refresh::issue(
            &app.db,
            NewFamily {
                client_id: &client.client_id,
                subject: &granted.subject,
                username: Some(&user.username),
                scope: &scope,
                auth_time: granted.auth_time,
            },
            &app.refresh,
        )
        .await?;
        Some(token)
    } else {
        None
    };
    Ok((granted, refresh_token))
}

async fn rotate(
    app: &App,
    client: &Client,
    form: &OAuthForm,
) -> Result<(Grant, Option<Zeroizing<String>>), OAuthError> {
    let presented = form.require("refresh_token")?;
    let requested = form
        .get("scope")
        .map(Scopes::parse)
        .transpose()
        .map_err(|e| OAuthError::invalid_scope(e.to_string()))?;
    let rotation = refresh::Rotation {
        presented,
        client_id: &client.client_id,
        client_scopes: &client.scopes,
        requested: requested.as_ref(),
    };
    let rotated = match refresh::rotate(&app.db, rotation, &app.refresh, &app.keys.master()).await?
    {
        Ok(rotated) => rotated,
        Err(refused) => {
            metrics::counter!("tessera_token_failures_total", "reason" => refused.reason())
                .increment(1);
            if let Refused::Reused { family_id } = &refused {
                tracing::warn!(client_id = %client.client_id, family_id, "refresh token reused: family revoked");
                app.audit.push(
                    Event::new("refresh_reuse_detected")
                        .client(&client.client_id)
                        .remote(form.peer.map(|p| p.to_string()))
                        .detail(format!("family={family_id}")),
                );
            }
            return Err(match refused {
                Refused::Expired => OAuthError::invalid_grant("refresh token expired"),
                Refused::Reused { .. } | Refused::Revoked => {
                    OAuthError::invalid_grant("refresh token revoked")
                }
                Refused::Unknown | Refused::WrongClient => {
                    OAuthError::invalid_grant("unknown refresh token")
                }
                Refused::ScopeNotGranted => OAuthError::invalid_scope(
                    "a requested scope was not granted to this session (or this client)",
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
    let allowed = family_scope.intersection(&client.scopes);
    let scope = requested.unwrap_or(allowed);
    app.audit.push(
        Event::new("refresh_rotated")
            .client(&client.client_id)
            .subject(&family.subject)
            .detail(format!(
                "family={}{}",
                family.id,
                if rotated.retried { " retry" } else { "" }
            )),
    );
    Ok((
        Grant {
            subject: family.subject,
            username: family.username,
            scope,
            auth_time: family.auth_time,
        },
        Some(rotated.token),
    ))
}

/// Sign the access token and answer.
fn issue(
    app: &App,
    client: &Client,
    granted: Grant,
    refresh_token: Option<Zeroizing<String>>,
) -> Result<Response, OAuthError> {
    let at = now();
    let max = app.config.max_access_ttl;
    let ttl = client
        .access_ttl
        .and_then(|s| u64::try_from(s).ok())
        .map(Duration::from_secs)
        .unwrap_or(app.config.access_ttl)
        .min(max);
    let audience = if client.audiences.is_empty() {
        vec![app.config.issuer.clone()]
    } else {
        client.audiences.clone()
    };
    let scope = granted.scope.to_string();
    let minted = app.access.mint(
        Mint {
            client_id: &client.client_id,
            subject: &granted.subject,
            audience,
            scope: scope.clone(),
            auth_time: granted.auth_time,
            ttl,
        },
        at,
    )?;
    if app.config.audit_token_issued {
        app.audit.push(
            Event::new("token_issued")
                .client(&client.client_id)
                .subject(granted.username.as_deref().unwrap_or(&granted.subject))
                .detail(format!("jti={}", minted.jti)),
        );
    }
    let body = TokenResponse {
        access_token: minted.token,
        token_type: "Bearer",
        expires_in: secs(ttl),
        scope,
        refresh_token,
    };
    Ok(no_store(Json(body)))
}

/// A response that caches must not keep (RFC 6749 §5.1).
pub(crate) fn no_store(body: impl IntoResponse) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    response
}
