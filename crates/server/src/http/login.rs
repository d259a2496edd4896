//! The login page (`GET`/`POST /login`): username and password for a
//! pending authorization request, with the password grant's limits
//! (counted before the hash, 429 with the wait) and the same timing for
//! unknown users. A successful login gets a new cookie (no fixation): a
//! new session, or, for the user of the browser's live session, that
//! session renewed (authenticated now), and carries on with the request.

use std::sync::Arc;

use axum::extract::{Extension, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use serde::Deserialize;
use zeroize::Zeroizing;

use super::authorize::{current_session, failure, jar, proceed, send_again};
use super::cookies::{self, csrf_ok, csrf_token};
use super::pages::SharedPages;
use crate::app::App;
use crate::grant::password::Denied;
use crate::signin::pending::{self, Pending};
use crate::signin::redirect;
use crate::signin::AuthorizationRequest;
use crate::store::audit::{Event, InChange};
use crate::store::clients::{Client, GrantType};
use crate::store::sessions;
use crate::store::{codes, now};

#[derive(Deserialize)]
pub struct Which {
    pub(crate) request: Option<String>,
}

/// What [`pending_of`] does with a pending request answered already.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Answered {
    /// The "already done" page (a page opened again).
    Refused,
    /// Nothing: the caller, a form, checks its CSRF token, then answers
    /// it again ([`super::authorize::send_again`]).
    Again,
}

/// A pending request of this browser, with its request and client; or
/// the page to show instead.
pub(crate) async fn pending_of(
    app: &App,
    pages: &SharedPages,
    headers: &HeaderMap,
    id: Option<&str>,
    answered: Answered,
) -> Result<(Pending, AuthorizationRequest, Arc<Client>, String), Response> {
    let expired = || {
        pages.error(
            StatusCode::BAD_REQUEST,
            "This sign-in has expired",
            "The sign-in was not finished in time, or it was started in another browser.",
            "Go back to the application and sign in again.",
        )
    };
    // No browser cookie at all: the browser did not keep the one the
    // authorization request set (cookies blocked for this site).
    let browser = jar(app).get(headers, cookies::BROWSER).ok_or_else(|| {
        pages.error(
            StatusCode::BAD_REQUEST,
            "This browser did not keep the sign-in's cookie",
            "Signing in needs cookies for this site, and this browser did not send the one \
             the sign-in set.",
            "Allow cookies for this site, then go back to the application and sign in again.",
        )
    })?;
    let id = id.ok_or_else(expired)?;
    let master = app.keys.master();
    let Some(pending) = pending::open(&master, id, &browser, now()) else {
        let restarted =
            pending::restarted(&master, id, &browser, now()).map_err(|e| failure(pages, &e))?;
        return Err(match restarted {
            Some(again) => pages.error_with_action(
                StatusCode::BAD_REQUEST,
                "This sign-in took too long",
                &format!(
                    "It was not finished within {} minutes.",
                    pending::LIFETIME / 60
                ),
                "You can also go back to the application and sign in again.",
                ("Start again", &format!("/login?request={again}")),
            ),
            None => expired(),
        });
    };
    // Answered already: a page opened again after the sign-in finished.
    if answered == Answered::Refused {
        let answer = codes::answer_to(&app.db, &pending.answer())
            .await
            .map_err(|e| failure(pages, &e))?;
        if answer.is_some() {
            return Err(super::authorize::already_done(pages));
        }
    }
    let request = pending.request.clone();
    let client = app
        .clients
        .find(&app.db, &request.client_id)
        .await
        .map_err(|e| failure(pages, &e))?
        .ok_or_else(expired)?;
    // The client's registration as it is now, not as it was when the
    // request was sealed: a redirect URI removed, the code flow or a
    // scope taken away meanwhile gets no code.
    if !client.allows(GrantType::AuthorizationCode)
        || !redirect::matches(&client.redirect_uris, &request.redirect_uri)
        || !request.scopes().is_subset(&client.scopes)
    {
        return Err(pages.error(
            StatusCode::BAD_REQUEST,
            "This sign-in can no longer finish",
            "The application's registration changed while you were signing in.",
            "Go back to the application and sign in again.",
        ));
    }
    Ok((pending, request, client, browser))
}

/// Authorization: the browser that started the pending request.
pub async fn page(
    State(app): State<Arc<App>>,
    Extension(pages): Extension<SharedPages>,
    headers: HeaderMap,
    Query(which): Query<Which>,
) -> Response {
    match pending_of(
        &app,
        &pages,
        &headers,
        which.request.as_deref(),
        Answered::Refused,
    )
    .await
    {
        Ok((pending, request, client, browser)) => {
            if let Some(onward) = signed_in_meanwhile(
                &app, &pages, &headers, &client, &request, &pending, &browser,
            )
            .await
            {
                return onward;
            }
            render(
                &pages,
                StatusCode::OK,
                &pending.id,
                &browser,
                &client.name,
                request.login_hint.as_deref().unwrap_or_default(),
                None,
            )
        }
        Err(page) => page,
    }
}

/// The login page of a browser that is signed in already (in another
/// tab, meanwhile; or back from the consent page): the request goes on
/// from that session, as the authorization endpoint would take it. Not
/// when it needs this login (`prompt=login`, a `max_age` passed) or
/// would be refused (someone else than the `id_token_hint` names): the
/// form, as before. A failure to read the session shows the form too.
async fn signed_in_meanwhile(
    app: &App,
    pages: &SharedPages,
    headers: &HeaderMap,
    client: &Client,
    request: &AuthorizationRequest,
    pending: &Pending,
    browser: &str,
) -> Option<Response> {
    let cookie = jar(app).get(headers, cookies::SESSION)?;
    let session =
        sessions::find_for_client(&app.db, &cookie, app.config.sessions, &client.client_id)
            .await
            .ok()??;
    let remembered = session
        .consent
        .as_deref()
        .map(crate::store::Scopes::parse)
        .transpose()
        .ok()?;
    let user_scopes = crate::store::Scopes::parse(&session.user_scopes).ok()?;
    let next = crate::signin::next(
        request,
        client,
        Some(&session.session),
        false,
        remembered.as_ref(),
        &user_scopes,
        now(),
    );
    if !matches!(
        next,
        crate::signin::Next::Issue(_) | crate::signin::Next::Consent
    ) {
        return None;
    }
    let onward = proceed(
        app,
        pages,
        client,
        request.clone(),
        Some(session),
        false,
        browser,
        Some(pending),
    )
    .await;
    Some(onward.unwrap_or_else(|e| failure(pages, &e)))
}

/// Why the login form is shown again: its words, and a stable key for
/// templates in another language (`error_code`, with `retry_seconds`).
enum Again {
    MissingFields,
    WrongCredentials,
    /// Rate-limited: seconds to wait.
    TooManyAttempts(u64),
}

impl Again {
    fn code(&self) -> &'static str {
        match self {
            Again::MissingFields => "missing_fields",
            Again::WrongCredentials => "wrong_credentials",
            Again::TooManyAttempts(_) => "too_many_attempts",
        }
    }

    fn text(&self) -> String {
        match self {
            Again::MissingFields => "Enter your username and password.".into(),
            Again::WrongCredentials => "Wrong username or password.".into(),
            Again::TooManyAttempts(secs) => {
                let when = if *secs < 60 {
                    format!("{secs} second{}", if *secs == 1 { "" } else { "s" })
                } else {
                    let minutes = secs.div_ceil(60);
                    format!("{minutes} minute{}", if minutes == 1 { "" } else { "s" })
                };
                format!("Too many attempts. Try again in {when}.")
            }
        }
    }
}

fn render(
    pages: &SharedPages,
    status: StatusCode,
    id: &str,
    browser: &str,
    client_name: &str,
    username: &str,
    error: Option<&Again>,
) -> Response {
    let retry_seconds = match error {
        Some(Again::TooManyAttempts(secs)) => Some(*secs),
        _ => None,
    };
    pages.render(
        status,
        "login.html",
        minijinja::context! {
            request_id => id,
            csrf_token => csrf_token(browser, &format!("login {id}")),
            client_name,
            username,
            error => error.map(Again::text),
            error_code => error.map(Again::code),
            retry_seconds,
        },
    )
}

/// Authorization: the browser that started the pending request, with its
/// CSRF token; then the username and password.
pub async fn submit(
    State(app): State<Arc<App>>,
    Extension(pages): Extension<SharedPages>,
    request: Request,
) -> Response {
    let (parts, form) = match super::page_params::form(request).await {
        Ok(read) => read,
        Err(unread) => return unread.answer(&pages),
    };
    let peer = form.peer;
    // Nothing the audit trail could not record: a login writes events
    // (a failure, a session), and while the database takes none they
    // would wait in memory, as many as attempts came.
    if !app.audit.accepting() {
        return failure(
            &pages,
            &crate::Error::Unavailable("the audit trail is not being written".into()),
        );
    }
    let (pending, auth, client, browser) = match pending_of(
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
    if !form
        .get("csrf_token")
        .is_some_and(|t| csrf_ok(&browser, &format!("login {}", pending.id), t))
    {
        return forbidden(&pages);
    }
    // A phone keyboard's trailing space (or a pasted name's) is not part
    // of it: no username begins or ends with white space
    // (`store::check_name`), so trimming it can match no other account.
    let username = form.get("username").unwrap_or_default().trim().to_owned();
    let password = Zeroizing::new(form.get("password").unwrap_or_default().to_owned());
    let again = |status, error: Again| {
        render(
            &pages,
            status,
            &pending.id,
            &browser,
            &client.name,
            &username,
            Some(&error),
        )
    };
    if username.is_empty() || password.is_empty() {
        return again(StatusCode::OK, Again::MissingFields);
    }
    let user = match app
        .login()
        .check(&username, password, peer, &client.client_id, "sign-in page")
        .await
    {
        Ok(user) => user,
        Err(Denied::TooManyAttempts(wait)) => {
            metrics::counter!("tessera_sign_in_failures_total", "reason" => "login_rate_limited")
                .increment(1);
            // Rounded up, as the token endpoint's: a client back when
            // told is not refused again.
            let secs = wait.as_secs().saturating_add(1);
            let mut r = again(StatusCode::TOO_MANY_REQUESTS, Again::TooManyAttempts(secs));
            if let Ok(v) = HeaderValue::try_from(secs.to_string()) {
                r.headers_mut().insert(header::RETRY_AFTER, v);
            }
            return r;
        }
        Err(Denied::Wrong) => {
            // A 200 page, as it must be: without this, credential stuffing
            // on the sign-in page showed on no dashboard.
            metrics::counter!("tessera_sign_in_failures_total", "reason" => "invalid_credentials")
                .increment(1);
            return again(StatusCode::OK, Again::WrongCredentials);
        }
        Err(Denied::Failed(e)) => return failure(&pages, &e),
    };
    // Answered already (a double click, or Back): only the same user,
    // whose code is still to be exchanged, goes on, to get it again
    // (with a session in this browser again: the first answer's cookie
    // was lost with it). Anyone else logs in to nothing.
    let digest = pending.answer();
    let answered = match codes::answer_to(&app.db, &digest).await {
        Ok(answered) => answered,
        Err(e) => return failure(&pages, &e),
    };
    if let Some(answer) = &answered {
        let code = app.keys.master().code_for(&digest, &answer.user_id);
        if answer.user_id != user.id || !answer.is_usable_code(&code) {
            return super::authorize::already_done(&pages);
        }
    }
    // A new cookie whatever happens (no fixation). The same person
    // logging in again (`prompt=login`, `max_age`) goes on in the session
    // they had, so the apps it signed in to and the refresh tokens issued
    // in it go on; another user's session in this browser ends.
    let previous = match current_session(&app, &parts.headers).await {
        Ok(s) => s,
        Err(e) => return failure(&pages, &e),
    };
    let checked = sessions::LoggedIn {
        user_id: &user.id,
        password_hash: &user.password_hash,
    };
    let renewed = match &previous {
        Some(old) if old.user_id == user.id => {
            sessions::renew(&app.db, &old.sid, checked, app.config.sessions).await
        }
        _ => Ok(None),
    };
    let renewed = match renewed {
        Ok(renewed) => renewed,
        Err(e) => return failure(&pages, &e),
    };
    let (cookie, session) = match renewed {
        Some(renewed) => renewed,
        None => {
            if let Some(old) = previous {
                if let Err(e) = sessions::end(
                    &app.db,
                    &old.sid,
                    NEW_LOGIN,
                    app.config.revocation_keep(),
                    ended_by_new_login(&old.sid, &old.user_id),
                )
                .await
                {
                    return failure(&pages, &e);
                }
                app.access.revoked().catch_up(&app.db).await;
            }
            match sessions::start(&app.db, checked, app.config.sessions, &browser).await {
                Ok(Some(started)) => started,
                // The password changed (or the user was disabled) while
                // it was being checked.
                Ok(None) => return again(StatusCode::OK, Again::WrongCredentials),
                Err(e) => return failure(&pages, &e),
            }
        }
    };
    // Another user's sessions started in this browser by logins sent at
    // the same moment (whose cookies it did not keep) end too. Not done,
    // they end at the next logout here: the login, whose session exists
    // now, goes on (its cookie not set, it would be lost to the browser).
    if let Err(e) = end_others_in_browser(&app, &browser, &user.id).await {
        tracing::warn!(error = %e, "another user's session in this browser was not ended at login");
    }
    // The session is renewed or started: from here on the browser gets
    // its cookie whatever the answer, a failure page included (else a
    // renewed session would be out of the browser's reach, its logout
    // finding no session to end).
    let proceeded = async {
        let session = sessions::by_sid_for_client(
            &app.db,
            &session.sid,
            app.config.sessions,
            &client.client_id,
        )
        .await?;
        match &answered {
            Some(answer) => Ok(send_again(
                &app,
                &pages,
                &client,
                (&pending.request, &digest),
                answer,
            )),
            None => {
                proceed(
                    &app,
                    &pages,
                    &client,
                    auth,
                    session,
                    true,
                    &browser,
                    Some(&pending),
                )
                .await
            }
        }
    }
    .await;
    let mut response = proceeded.unwrap_or_else(|e: crate::Error| failure(&pages, &e));
    response
        .headers_mut()
        .append(header::SET_COOKIE, jar(&app).set(cookies::SESSION, &cookie));
    response
}

/// A form without its CSRF token (or with another's).
pub(crate) fn forbidden(pages: &SharedPages) -> Response {
    pages.error(
        StatusCode::FORBIDDEN,
        "This form has expired",
        "The form was not sent from this sign-in page.",
        "Go back to the application and sign in again.",
    )
}

/// Why a session ends when another user logs in in its browser.
const NEW_LOGIN: &str = "new login in this browser";

/// The audit event of session `sid` of user `user_id` ended by another
/// user's login in its browser (written with the end).
fn ended_by_new_login<'a>(sid: &'a str, user_id: &'a str) -> InChange<'a, sessions::Ended> {
    InChange::of(move |_: &sessions::Ended| {
        Event::new("session_ended")
            .subject(user_id)
            .detail(format!("sid={sid} reason=new_login_in_browser"))
    })
}

/// End the sessions of browser `browser` that belong to a user other than
/// `user_id`.
async fn end_others_in_browser(
    app: &App,
    browser: &str,
    user_id: &str,
) -> Result<(), crate::Error> {
    let mut ended = false;
    for (sid, owner) in sessions::of_browser(&app.db, browser).await? {
        if owner != user_id {
            let keep = app.config.revocation_keep();
            let recorded = ended_by_new_login(&sid, &owner);
            ended |= sessions::end(&app.db, &sid, NEW_LOGIN, keep, recorded)
                .await?
                .is_some();
        }
    }
    if ended {
        app.access.revoked().catch_up(&app.db).await;
    }
    Ok(())
}
