//! The consent page (`GET`/`POST /consent`): the client's name and the
//! scopes in words, Allow or Deny. Allowing remembers the grant for the
//! user and client; denying sends `access_denied` to the client.

use std::sync::Arc;

use axum::extract::{Extension, Query, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde::Serialize;
use std::collections::BTreeMap;

use super::authorize::{current_session, failure, grant_of, issue, refuse, see_other};
use super::cookies::{csrf_ok, csrf_token};
use super::login::{forbidden, pending_of, Answered, Which};
use super::pages::SharedPages;
use crate::app::App;
use crate::config::ScopeWords;
use crate::signin::pending::{self, Pending};
use crate::signin::{grantable, AuthorizationRequest};
use crate::store::clients::Client;
use crate::store::sessions::Session;
use crate::store::{consents, now, users, Scopes};

#[derive(Serialize)]
struct ScopeText {
    /// The scope itself, for templates that word it in their own language.
    name: String,
    title: String,
    detail: String,
}

/// A scope in words: the operator's (`[pages.scopes]`), else the
/// built-in ones.
fn describe(scope: &str, words: &BTreeMap<String, ScopeWords>) -> ScopeText {
    if let Some(own) = words.get(scope) {
        return ScopeText {
            name: scope.to_owned(),
            title: own.title.clone(),
            detail: own.detail.clone(),
        };
    }
    let (title, detail) = match scope {
        "openid" => (
            "Know who you are",
            "Your account identifier on this service",
        ),
        "profile" => ("See your profile", "Your name and username"),
        "email" => ("See your email address", "And whether it is verified"),
        "offline_access" => (
            "Stay connected",
            "Keep access while you are away, until you sign out or revoke it",
        ),
        other => {
            return ScopeText {
                name: other.to_owned(),
                title: format!("Use “{other}”"),
                detail: "A permission of this service's API".into(),
            }
        }
    };
    ScopeText {
        name: scope.to_owned(),
        title: title.into(),
        detail: detail.into(),
    }
}

/// The pending request, if its consent step belongs to the browser's
/// current session.
async fn consent_of(
    app: &App,
    pages: &SharedPages,
    headers: &HeaderMap,
    id: Option<&str>,
    answered: Answered,
) -> Result<(Pending, AuthorizationRequest, Arc<Client>, String, Session), Response> {
    let (pending, request, client, browser) = pending_of(app, pages, headers, id, answered).await?;
    let session = current_session(app, headers)
        .await
        .map_err(|e| failure(pages, &e))?
        .filter(|s| pending.sid.as_deref() == Some(s.sid.as_str()));
    let Some(session) = session else {
        // The same request, on its way to the login page again (the
        // session it was sealed with is gone, or the browser has another
        // person's now): one click on, where a page said to start over at
        // the application.
        let again = pending::seal(
            &app.keys.master(),
            &browser,
            &request,
            None,
            Some(&pending),
            now(),
        )
        .map_err(|e| failure(pages, &e))?;
        return Err(pages.error_with_action(
            StatusCode::BAD_REQUEST,
            "You are not signed in",
            "The session this request belongs to has ended, or someone else has signed in \
             in this browser since.",
            "Sign in again to go on, or go back to the application.",
            ("Sign in again", &format!("/login?request={again}")),
        ));
    };
    Ok((pending, request, client, browser, session))
}

/// How long (seconds) a login made for a request answers its `max_age`,
/// however short: time to read the consent page.
const FRESH_LOGIN_HOLDS: i64 = 120;

/// The login page again when the session has grown older than the
/// request's `max_age` while the consent page waited (a pending request
/// lasts half an hour): OpenID Connect Core 1.0 §3.1.2.1 asks for a new
/// login then, and a relying party refuses an ID token whose `auth_time`
/// is older than the `max_age` it sent. A login made for this very
/// request answers a `max_age` for at least [`FRESH_LOGIN_HOLDS`] (else a
/// `max_age` shorter than the time it takes to read the page would send
/// the person round for ever), and no longer.
fn login_again(
    app: &App,
    pending: &Pending,
    request: &AuthorizationRequest,
    session: &Session,
    browser: &str,
) -> Result<Option<Response>, crate::Error> {
    let holds = |max: i64| {
        if pending.fresh_login {
            max.max(FRESH_LOGIN_HOLDS)
        } else {
            max
        }
    };
    let stale = request
        .max_age
        .is_some_and(|max| now().saturating_sub(session.auth_time) > holds(max));
    if !stale {
        return Ok(None);
    }
    let id = pending::seal(
        &app.keys.master(),
        browser,
        request,
        None,
        Some(pending),
        now(),
    )?;
    Ok(Some(see_other(&format!("/login?request={id}"))))
}

/// Authorization: the browser and session of the pending request.
pub async fn page(
    State(app): State<Arc<App>>,
    Extension(pages): Extension<SharedPages>,
    headers: HeaderMap,
    Query(which): Query<Which>,
) -> Response {
    let (pending, request, client, browser, session) = match consent_of(
        &app,
        &pages,
        &headers,
        which.request.as_deref(),
        Answered::Refused,
    )
    .await
    {
        Ok(found) => found,
        Err(page) => return page,
    };
    match login_again(&app, &pending, &request, &session, &browser) {
        Ok(Some(login)) => return login,
        Ok(None) => {}
        Err(e) => return failure(&pages, &e),
    }
    let user = match users::find_by_id(&app.db, &session.user_id).await {
        Ok(Some(u)) => u,
        Ok(None) => {
            return failure(
                &pages,
                &crate::Error::NotFound {
                    kind: "user",
                    name: session.user_id,
                },
            )
        }
        Err(e) => return failure(&pages, &e),
    };
    let user_scopes = Scopes::parse(&user.scopes).unwrap_or_default();
    // Who you are first, then what the app may read and do, staying
    // connected last.
    let rank = |s: &str| match s {
        "openid" => 0,
        "profile" => 1,
        "email" => 2,
        "offline_access" => 4,
        _ => 3,
    };
    let mut granted: Vec<&str> = Vec::new();
    let grantable = grantable(&request.scopes(), &user_scopes);
    granted.extend(grantable.iter());
    granted.sort_by_key(|s| rank(s));
    let scopes: Vec<ScopeText> = granted
        .into_iter()
        .map(|scope| describe(scope, &app.config.pages.scopes))
        .collect();
    let redirect_host = url::Url::parse(&request.redirect_uri)
        .ok()
        .and_then(|u| {
            u.host_str()
                .map(str::to_owned)
                .or_else(|| Some(u.scheme().to_owned()))
        })
        .unwrap_or_default();
    pages.render(
        StatusCode::OK,
        "consent.html",
        minijinja::context! {
            request_id => &pending.id,
            csrf_token => csrf_token(&browser, &form_purpose(&pending.id, &grantable)),
            client_name => &client.name,
            username => &user.username,
            scopes,
            redirect_host,
        },
    )
}

/// What the consent form's CSRF token is for: the pending request, and
/// the scopes the page showed.
fn form_purpose(pending_id: &str, shown: &Scopes) -> String {
    format!("consent {pending_id} {shown}")
}

/// Authorization: the browser and session of the pending request, with
/// its CSRF token.
pub async fn submit(
    State(app): State<Arc<App>>,
    Extension(pages): Extension<SharedPages>,
    request: Request,
) -> Response {
    let (parts, form) = match super::page_params::form(request).await {
        Ok(read) => read,
        Err(unread) => return unread.answer(&pages),
    };
    let (pending, request, client, browser, session) = match consent_of(
        &app,
        &pages,
        &parts.headers,
        form.get("request"),
        Answered::Again,
    )
    .await
    {
        Ok(found) => found,
        Err(page) => return page,
    };
    // The scopes the page showed are the ones the form answers for: an
    // admin's change of the user's scopes in between (one added) would
    // have the Allow grant, and remember, a scope the person never saw.
    let user_scopes = match users::find_by_id(&app.db, &session.user_id).await {
        Ok(user) => user
            .and_then(|u| Scopes::parse(&u.scopes).ok())
            .unwrap_or_default(),
        Err(e) => return failure(&pages, &e),
    };
    let shown = grantable(&request.scopes(), &user_scopes);
    if !form
        .get("csrf_token")
        .is_some_and(|t| csrf_ok(&browser, &form_purpose(&pending.id, &shown), t))
    {
        return forbidden(&pages);
    }
    // Sent again after its answer (a double click): the same answer, a
    // code still to be exchanged or a refusal in this session (the first
    // answer may never have reached the browser, and the application
    // would hear nothing); any other, the "already done" page.
    match crate::store::codes::answer_to(&app.db, &pending.answer()).await {
        Err(e) => return failure(&pages, &e),
        Ok(Some(answer)) => {
            return match form.get("decision") {
                Some("allow") => super::authorize::send_again(
                    &app,
                    &pages,
                    &client,
                    (&pending.request, &pending.answer()),
                    &answer,
                ),
                _ if answer.refused && answer.sid == session.sid => {
                    super::authorize::respond_error(
                        &app,
                        &pages,
                        &request.error("access_denied", "the user denied the request"),
                    )
                }
                _ => super::authorize::already_done(&pages),
            };
        }
        Ok(None) => {}
    }
    let result = async {
        match form.get("decision") {
            Some("allow") => {
                if let Some(login) = login_again(&app, &pending, &request, &session, &browser)? {
                    return Ok(login);
                }
                let granted = shown;
                let answers = Some(pending.answer());
                let issued = issue(
                    &app,
                    &pages,
                    &client,
                    &request,
                    &session,
                    false,
                    granted.clone(),
                    answers,
                )
                .await?;
                // Remembered once this request's answer is a code: the
                // same request denied meanwhile in another tab (after the
                // check above) told the client the user said no, and a
                // consent remembered then would let its next silent
                // request through. A consent that could not be written is
                // asked for again next time; the code stands.
                match crate::store::codes::answer_to(&app.db, &pending.answer()).await {
                    Ok(Some(answer)) if !answer.refused => {
                        let remembered =
                            consents::remember(&app.db, &session.user_id, &client.client_id, &granted)
                                .await;
                        if let Err(e) = remembered {
                            tracing::warn!(error = %e, "consent given, but it could not be remembered");
                        }
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "consent given, but its answer could not be read again to remember it");
                    }
                }
                Ok(issued)
            }
            _ => {
                let grant = grant_of(&client, &request, &session, Scopes::default());
                refuse(
                    &app,
                    &pages,
                    &grant,
                    &pending.answer(),
                    &client,
                    &request.error("access_denied", "the user denied the request"),
                )
                .await
            }
        }
    }
    .await;
    result.unwrap_or_else(|e: crate::Error| failure(&pages, &e))
}
