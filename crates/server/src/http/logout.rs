//! Logout (OpenID Connect RP-Initiated Logout 1.0): `GET`/`POST
//! /oauth2/logout` is the `end_session_endpoint`; `POST /logout` is the
//! confirmation page's form.
//!
//! A logout ends every session of the browser (the current one, and any
//! a login sent at the same moment started, whose cookie the browser did
//! not keep). An `id_token_hint` that names one of them, of the user
//! signed in, ends them at once; otherwise the person confirms on a page (a link elsewhere must
//! not sign anyone out; "Stay signed in" goes back to the application
//! too, which has signed the person out on its side, and the page's CSRF
//! token is the browser cookie's, so it still signs out after a login in
//! another tab gave the browser a new session). A hint this server cannot verify (signed by a
//! key removed since) counts as none: the person confirms, and is sent on
//! only to a URI registered by the `client_id` given with it. A
//! `post_logout_redirect_uri` is followed only if
//! the client registered it exactly: one the client did not register is
//! an error page; with a client that no longer exists, the person can
//! still sign out and gets the "signed out" page. A `POST` without this
//! server's cookies (a form on the client's site, sent cross-site) is
//! sent back as a `GET` first, which carries them. Ending a session
//! revokes its refresh tokens and queues the back-channel logouts of its
//! clients (`signin::backchannel`).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Extension, State};
use axum::http::{header, HeaderMap, Method, StatusCode, Uri};
use axum::response::Response;
use url::Url;

use super::authorize::{bad_request, failure, jar, resent_as_get, see_other};
use super::cookies::{self, csrf_ok, csrf_token};
use super::form::OAuthForm;
use super::login::forbidden;
use super::pages::SharedPages;
use crate::app::App;
use crate::signin::id_token::read_hint;
use crate::store::audit::{Event, InChange};
use crate::store::clients::Client;
use crate::store::sessions::{self, Session};
use crate::store::users;

/// Where to go after the logout, if the client registered it.
struct Target {
    client: Option<Arc<Client>>,
    redirect: Option<String>,
    state: Option<String>,
}

/// Authorization: anyone; what is ended is the browser's own session.
pub async fn end_session(
    State(app): State<Arc<App>>,
    Extension(pages): Extension<SharedPages>,
    method: Method,
    headers: HeaderMap,
    uri: Uri,
    body: Bytes,
) -> Response {
    let params = match super::page_params::of_query_or_body(&method, &headers, &uri, &body) {
        Ok(p) => p,
        Err(why) => return bad_request(&pages, &why),
    };
    if let Some(resent) = resent_as_get(&app, &pages, &method, &headers, "/oauth2/logout", &body) {
        return resent;
    }
    // A hint this server cannot read (signed by a key removed since, for
    // a relying party that kept its ID token for months) does not keep
    // the person from signing out: it counts as no hint, so the person
    // confirms, and nothing unverified chooses where they go next.
    let hint = params
        .get("id_token_hint")
        .and_then(|token| read_hint(&app.keys, &app.config.issuer, token));
    let unread_hint = hint.is_none() && params.get("id_token_hint").is_some();
    // At debug, as the two below: anyone can send such a logout request
    // in a loop, and the person is asked to confirm, which is all.
    if unread_hint {
        tracing::debug!("logout: id_token_hint not readable here; asking the person to confirm");
    }
    // A request this server cannot follow in full (a client_id that is
    // not the hint's audience, a post_logout_redirect_uri not registered
    // or with no client to check it against, a state too long) keeps
    // nobody from signing out: the person confirms, and stays here after
    // (RP-Initiated Logout §3 forbids only the redirect). An error page
    // instead left them signed in, on a shared computer, with the
    // application already signed out on its side.
    let mut doubtful = false;
    let client_id = match (&hint, params.get("client_id")) {
        (Some(h), Some(id)) if !h.aud.contains(id) => {
            tracing::debug!("logout: client_id is not the audience of the id_token_hint; asking the person to confirm");
            doubtful = true;
            None
        }
        (_, Some(id)) => Some(id.to_owned()),
        (Some(h), None) => h.aud.iter().next().map(str::to_owned),
        (None, None) => None,
    };
    // With an unread hint and no client_id, there is no client to check
    // a post_logout_redirect_uri against: the person ends on the "signed
    // out" page.
    let (redirect, state) = if (unread_hint || doubtful) && client_id.is_none() {
        (None, None)
    } else {
        (params.get("post_logout_redirect_uri"), params.get("state"))
    };
    let target = match resolve(&app, client_id.as_deref(), redirect, state).await {
        Ok(t) => t,
        Err(_) if redirect.is_some() || state.is_some() => {
            match resolve(&app, client_id.as_deref(), None, None).await {
                Ok(t) => {
                    tracing::debug!("logout: its post_logout_redirect_uri or state cannot be followed; asking the person to confirm");
                    doubtful = true;
                    t
                }
                Err(page) => return page(&pages),
            }
        }
        Err(page) => return page(&pages),
    };
    let session = match session_to_end(&app, &headers).await {
        Ok(s) => s,
        Err(e) => return failure(&pages, &e),
    };
    let Some(session) = session else {
        // Nobody is signed in here: nothing to end.
        return finish(&app, &pages, &target);
    };
    let here = match sessions_here(&app, &headers, &session).await {
        Ok(here) => here,
        Err(e) => return failure(&pages, &e),
    };
    // At once only for the person signed in here: a hint naming a
    // session of someone else who used this browser gets the page.
    let hinted = hint.as_ref().and_then(|h| h.sid.as_deref());
    let named = here.iter().find(|(sid, _)| Some(sid.as_str()) == hinted);
    if !doubtful && named.is_some_and(|(_, user)| *user == session.user_id) {
        return end_and_finish(&app, &pages, &target, &here).await;
    }
    confirm(&app, &pages, &headers, &session, &target).await
}

type ErrorPage = fn(&SharedPages) -> Response;

async fn resolve(
    app: &App,
    client_id: Option<&str>,
    redirect: Option<&str>,
    state: Option<&str>,
) -> Result<Target, ErrorPage> {
    // It travels in the address the person is sent back to.
    if state.is_some_and(|s| s.len() > crate::signin::MAX_ECHO) {
        return Err(|p| bad_request(p, "state is too long"));
    }
    let client = match client_id {
        // An unknown client (one deleted since its ID token was issued,
        // say) does not keep the person from signing out.
        Some(id) => match app.clients.find(&app.db, id).await {
            Ok(found) => found,
            Err(e) => {
                tracing::warn!(error = %e, "a logout's client could not be read");
                return Err(|p| failure(p, &crate::Error::Unavailable("database".into())));
            }
        },
        None => None,
    };
    let redirect = match (redirect, &client) {
        (None, _) => None,
        // Nothing to check an unknown client's URI against: not followed.
        (Some(_), None) if client_id.is_some() => None,
        (Some(_), None) => {
            return Err(|p| {
                bad_request(
                    p,
                    "post_logout_redirect_uri needs id_token_hint or client_id",
                )
            })
        }
        (Some(uri), Some(c)) if c.post_logout_redirect_uris.iter().any(|r| r == uri) => {
            Some(uri.to_owned())
        }
        (Some(_), Some(_)) => {
            return Err(|p| {
                bad_request(
                    p,
                    "the post_logout_redirect_uri is not one this client registered",
                )
            })
        }
    };
    Ok(Target {
        client,
        redirect,
        state: state.map(str::to_owned),
    })
}

async fn confirm(
    app: &App,
    pages: &SharedPages,
    headers: &HeaderMap,
    session: &Session,
    target: &Target,
) -> Response {
    // The form's token is the browser's, as the login and consent pages'
    // are, not the session's: a login in another tab meanwhile (a
    // `prompt=login`) gives the browser a new session cookie, and the
    // person who then signs out here means this browser's session
    // whichever it is now. A browser without one (its cookie cleared
    // since the login) gets one.
    let jar = jar(app);
    let (browser, new_browser) = match jar.get(headers, cookies::BROWSER) {
        Some(b) => (b, false),
        None => match crate::secret::random_token() {
            Ok(t) => (t.to_string(), true),
            Err(e) => return failure(pages, &e),
        },
    };
    let username = match users::find_by_id(&app.db, &session.user_id).await {
        Ok(u) => u.map(|u| u.username).unwrap_or_default(),
        Err(e) => return failure(pages, &e),
    };
    let mut page = pages.render(
        StatusCode::OK,
        "logout.html",
        minijinja::context! {
            csrf_token => csrf_token(&browser, "logout"),
            username,
            client_name => target.client.as_ref().map(|c| c.name.clone()),
            client_id => target.client.as_ref().map(|c| c.client_id.clone()),
            post_logout_redirect_uri => &target.redirect,
            state => &target.state,
        },
    );
    if new_browser {
        page.headers_mut()
            .append(header::SET_COOKIE, jar.set(cookies::BROWSER, &browser));
    }
    page
}

/// Authorization: the session's own browser, with the page's CSRF token
/// (derived from the browser cookie).
pub async fn confirmed(
    State(app): State<Arc<App>>,
    Extension(pages): Extension<SharedPages>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if !super::form::is_form(&headers) {
        return bad_request(
            &pages,
            "the form must be sent as application/x-www-form-urlencoded",
        );
    }
    if super::page_params::has_query(&uri) {
        return bad_request(&pages, super::page_params::QUERY_BESIDE_BODY);
    }
    let form = match OAuthForm::parse(&body, None, None) {
        Ok(f) => f,
        Err(e) => return bad_request(&pages, &e.description),
    };
    let target = match resolve(
        &app,
        form.get("client_id"),
        form.get("post_logout_redirect_uri"),
        form.get("state"),
    )
    .await
    {
        Ok(t) => t,
        Err(page) => return page(&pages),
    };
    // A form without the browser's cookies: the person goes where the
    // application asked (only to a URI the client registered, as for a
    // logout with no session). Nothing is cleared on that path: a form
    // posted from another site carries no `SameSite=Lax` cookie, and a
    // `Set-Cookie` that removed the session cookie would sign the browser
    // out from there. One with the browser cookie alone (the form sent
    // again after its logout, or a session whose cookie the browser lost)
    // goes on to its CSRF check, and ends what this browser started.
    let browser = jar(&app).get(&headers, cookies::BROWSER);
    if jar(&app).get(&headers, cookies::SESSION).is_none() && browser.is_none() {
        return leave(&pages, &target, SIGNED_OUT);
    }
    if !form
        .get("csrf_token")
        .zip(browser)
        .is_some_and(|(t, browser)| csrf_ok(&browser, "logout", t))
    {
        return forbidden(&pages);
    }
    let session = match session_to_end(&app, &headers).await {
        Ok(s) => s,
        Err(e) => return failure(&pages, &e),
    };
    match (form.get("decision"), session) {
        (Some("logout"), Some(session)) => match sessions_here(&app, &headers, &session).await {
            Ok(here) => end_and_finish(&app, &pages, &target, &here).await,
            Err(e) => failure(&pages, &e),
        },
        (Some("logout"), None) => finish(&app, &pages, &target),
        // Back to the application that asked, which has signed the
        // person out on its side already; signed in here as before.
        _ => leave(
            &pages,
            &target,
            (
                "You are still signed in",
                "Nothing was changed. You can close this page.",
            ),
        ),
    }
}

/// The session of this browser's session cookie that a logout ends
/// ([`sessions::find_to_end`]: also one unused past the idle time, or past
/// its absolute end, whose refresh families live on); without one, the
/// newest such session started in this browser: one whose cookie the
/// browser never got (a
/// login again, which gave the session a new cookie, whose answer was
/// lost: the request timeout, the connection gone), or lost since. A
/// logout that found none of them said "signed out" over a session that
/// lived on, its apps' refresh tokens with it.
async fn session_to_end(app: &App, headers: &HeaderMap) -> Result<Option<Session>, crate::Error> {
    let jar = jar(app);
    if let Some(cookie) = jar.get(headers, cookies::SESSION) {
        if let Some(session) = sessions::find_to_end(&app.db, &cookie).await? {
            return Ok(Some(session));
        }
    }
    let Some(browser) = jar.get(headers, cookies::BROWSER) else {
        return Ok(None);
    };
    for (sid, _) in sessions::of_browser(&app.db, &browser).await?.iter().rev() {
        if let Some(session) = sessions::by_sid(&app.db, sid).await? {
            return Ok(Some(session));
        }
    }
    Ok(None)
}

/// The sessions a logout in this browser ends, as `(sid, user_id)`: any
/// started in this browser and not ended (by a login sent at the same
/// moment, in another tab or by a double click, whose cookie the browser
/// did not keep: it would have outlived the logout, its apps' refresh
/// tokens with it), and the current one last: a logout that fails part
/// way leaves the current session, so that trying again finds it and
/// ends the others too (ended first, the retry would find no session and
/// say "signed out" over the others).
async fn sessions_here(
    app: &App,
    headers: &HeaderMap,
    current: &Session,
) -> Result<Vec<(String, String)>, crate::Error> {
    let mut here = Vec::new();
    if let Some(browser) = jar(app).get(headers, cookies::BROWSER) {
        for (sid, user_id) in sessions::of_browser(&app.db, &browser).await? {
            if sid != current.sid {
                here.push((sid, user_id));
            }
        }
    }
    here.push((current.sid.clone(), current.user_id.clone()));
    Ok(here)
}

async fn end_and_finish(
    app: &App,
    pages: &SharedPages,
    target: &Target,
    here: &[(String, String)],
) -> Response {
    for (sid, user_id) in here {
        let keep = app.config.revocation_keep();
        let recorded = InChange::of(|_: &sessions::Ended| {
            Event::new("logout")
                .subject(user_id)
                .detail(format!("sid={sid}"))
        });
        if let Err(e) = sessions::end(&app.db, sid, "logout", keep, recorded).await {
            return failure(pages, &e);
        }
    }
    app.access.revoked().catch_up(&app.db).await;
    finish(app, pages, target)
}

/// Redirect to the registered post-logout URI, or show "signed out"; the
/// session cookie is removed either way.
fn finish(app: &App, pages: &SharedPages, target: &Target) -> Response {
    let mut response = leave(pages, target, SIGNED_OUT);
    response
        .headers_mut()
        .append(header::SET_COOKIE, jar(app).clear(cookies::SESSION));
    response
}

/// The page after a logout: its title and message.
const SIGNED_OUT: (&str, &str) = ("You are signed out", "You can close this page.");

/// The redirect to the registered post-logout URI, or the page saying
/// `(title, message)`; no cookie is touched.
fn leave(pages: &SharedPages, target: &Target, (title, message): (&str, &str)) -> Response {
    match back_to(target) {
        Some(Ok(back)) => back,
        Some(Err(why)) => bad_request(pages, why),
        None => signed_out(pages, title, message),
    }
}

/// The redirect to the registered post-logout URI, with `state`; `None`
/// when none was asked for.
fn back_to(target: &Target) -> Option<Result<Response, &'static str>> {
    let uri = target.redirect.as_ref()?;
    Some(match Url::parse(uri) {
        Ok(mut url) => {
            if let Some(state) = &target.state {
                url.query_pairs_mut().append_pair("state", state);
            }
            Ok(see_other(url.as_str()))
        }
        Err(_) => Err("the post_logout_redirect_uri is not a URL"),
    })
}

fn signed_out(pages: &SharedPages, title: &str, message: &str) -> Response {
    pages.render(
        StatusCode::OK,
        "signed_out.html",
        minijinja::context! { title, message },
    )
}
