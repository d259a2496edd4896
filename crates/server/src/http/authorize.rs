//! `GET`/`POST /oauth2/authorize` (RFC 6749 §4.1.1, OpenID Connect Core
//! §3.1.2): validate the request, then log in, consent or answer with a
//! code. The decisions are `crate::signin`'s; this file turns them into
//! redirects and pages, and holds what the login and consent pages share
//! with it: finding the browser's session, continuing a pending request,
//! and answering the client.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Extension, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use url::Url;

use super::cookies::{self, Jar};
use super::pages::SharedPages;
use crate::app::App;
use crate::signin::id_token::{read_authorize_hint, Hinted};
use crate::signin::pending::{self, Pending};
use crate::signin::{self, AuthorizationRequest, ErrorResponse, Next, Refused, ResponseMode};
use crate::store::clients::Client;
use crate::store::sessions::{self, ForClient, Session};
use crate::store::{codes, now, Scopes};

/// The cookies of this server.
pub(crate) fn jar(app: &App) -> Jar {
    Jar::new(!app.config.on_http())
}

/// Authorization: anyone (the person is identified by the session).
pub async fn authorize(
    State(app): State<Arc<App>>,
    Extension(pages): Extension<SharedPages>,
    method: Method,
    headers: HeaderMap,
    uri: Uri,
    body: Bytes,
) -> Response {
    let (params, repeated) =
        match super::page_params::of_query_or_body_keeping_first(&method, &headers, &uri, &body) {
            Ok(read) => read,
            Err(why) => return bad_request(&pages, &why),
        };
    // A parameter given twice (RFC 6749 §3.1: never) is answered at the
    // redirect URI once the client and that URI are known good; which
    // client, which URI or how to answer given twice is never redirected.
    let unsure = ["client_id", "redirect_uri", "response_mode"];
    if let Some(name) = repeated.iter().find(|n| unsure.contains(&n.as_str())) {
        return bad_request(&pages, &format!("parameter {name} given more than once"));
    }
    if let Some(resent) = resent_as_get(&app, &pages, &method, &headers, "/oauth2/authorize", &body)
    {
        return resent;
    }
    let client = match params.get("client_id") {
        Some(id) => match app.clients.find(&app.db, id).await {
            Ok(c) => c,
            Err(e) => return failure(&pages, &e),
        },
        None => None,
    };
    // Which state to send back is not known when it came twice.
    let state_unsure = repeated.iter().any(|n| n == "state");
    let mut request = match signin::validate(&params, client.as_deref()) {
        Ok(r) => r,
        Err(Refused::NoRedirect(why)) => return bad_request(&pages, &why),
        Err(Refused::Redirect(mut error)) => {
            if state_unsure {
                error.state = None;
            }
            return respond_error(&app, &pages, &error);
        }
    };
    // A public client registered before the rule that gives admin scopes
    // only to those redirecting to https (`admin::add_client`) gets no
    // code for them: any program on the device could collect it.
    if let Some(client) = client.as_deref().filter(|c| c.is_public()) {
        let open = client
            .redirect_uris
            .iter()
            .any(|uri| !signin::redirect::reaches_only_its_owner(uri));
        if open && crate::admin::administers(&request.scopes()) {
            let error = request.error(
                "invalid_scope",
                "the admin scopes are not given to a public client with loopback or \
                 private-use redirect URIs",
            );
            return respond_error(&app, &pages, &error);
        }
    }
    if let Some(name) = repeated.first() {
        if state_unsure {
            request.state = None;
        }
        let error = request.error(
            "invalid_request",
            format!("{} given more than once", super::form::parameter(name)),
        );
        return respond_error(&app, &pages, &error);
    }
    if let Some(token) = params.get("id_token_hint") {
        let (hint, confirmed) = match read_authorize_hint(&app.keys, &app.config.issuer, token) {
            Hinted::Verified(hint) => (Some(hint), true),
            Hinted::KeyGone(hint) => (Some(hint), false),
            Hinted::Refused => (None, false),
        };
        let hint = hint.filter(|hint| hint.aud.contains(&request.client_id));
        match hint.and_then(|hint| hint.sub) {
            Some(sub) if confirmed => request.hint_subject = Some(sub),
            // Who it names is not known: a login, whoever is signed in
            // (its `sub`, unverified, is never compared: that would tell a
            // forger whether the browser's user is the one it names).
            Some(_) => {
                tracing::debug!(
                    client_id = %request.client_id,
                    "an id_token_hint signed under a key not published here: a login is asked for"
                );
                request.hint_unconfirmed = true;
            }
            None => {
                let error = request.error(
                    "invalid_request",
                    "the id_token_hint is not an ID token this server issued to this client",
                );
                return respond_error(&app, &pages, &error);
            }
        }
    }
    let Some(client) = client else {
        return bad_request(&pages, "unknown client");
    };
    let jar = jar(&app);
    let (browser, new_browser) = match jar.get(&headers, cookies::BROWSER) {
        Some(b) => (b, false),
        None => match crate::secret::random_token() {
            Ok(t) => (t.to_string(), true),
            Err(e) => return failure(&pages, &e),
        },
    };
    let session = match jar.get(&headers, cookies::SESSION) {
        Some(cookie) => {
            match sessions::find_for_client(
                &app.db,
                &cookie,
                app.config.sessions,
                &client.client_id,
            )
            .await
            {
                Ok(s) => s,
                Err(e) => return failure(&pages, &e),
            }
        }
        None => None,
    };
    let mut response = match proceed(
        &app, &pages, &client, request, session, false, &browser, None,
    )
    .await
    {
        Ok(r) => r,
        Err(e) => failure(&pages, &e),
    };
    if new_browser {
        response
            .headers_mut()
            .append(header::SET_COOKIE, jar.set(cookies::BROWSER, &browser));
    }
    response
}

/// The longest URL a cookie-less `POST` is sent back to as a `GET`.
const MAX_RESENT_URL: usize = 8 * 1024;

/// A `POST` that carries none of this server's cookies came from a form
/// on another site: `SameSite=Lax` keeps cookies off a cross-site `POST`,
/// so the person's session would go unseen (a logout would end nothing
/// yet say "signed out"; a sign-in would ask for a login again and end
/// the session it could not see). It is sent back as a `303` to `path`
/// with the same parameters in the query: the browser returns with a
/// top-level `GET`, which carries the cookies. `None`: go on as asked.
pub(crate) fn resent_as_get(
    app: &App,
    pages: &SharedPages,
    method: &Method,
    headers: &HeaderMap,
    path: &str,
    body: &Bytes,
) -> Option<Response> {
    let jar = jar(app);
    if method != Method::POST
        || jar.get(headers, cookies::SESSION).is_some()
        || jar.get(headers, cookies::BROWSER).is_some()
    {
        return None;
    }
    let Ok(pairs) = super::form::strict_pairs(body) else {
        return Some(bad_request(pages, "the request is not a well-formed form"));
    };
    let query = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish();
    let location = format!("{path}?{query}");
    if location.len() > MAX_RESENT_URL {
        return Some(bad_request(pages, "the request is too large"));
    }
    Some(see_other(&location))
}

/// The live session of the browser that sent `headers`, if any.
pub(crate) async fn current_session(
    app: &App,
    headers: &HeaderMap,
) -> Result<Option<Session>, crate::Error> {
    match jar(app).get(headers, cookies::SESSION) {
        Some(cookie) => sessions::find(&app.db, &cookie, app.config.sessions).await,
        None => Ok(None),
    }
}

/// Take `request` one step further: a login or consent page (through a
/// pending request), a code, or an error for the client. `fresh_login`
/// says the person just logged in for it; `pending` is the pending
/// request it came from (answered once).
#[allow(clippy::too_many_arguments)]
pub(crate) async fn proceed(
    app: &App,
    pages: &SharedPages,
    client: &Client,
    request: AuthorizationRequest,
    session: Option<ForClient>,
    fresh_login: bool,
    browser: &str,
    pending: Option<&Pending>,
) -> Result<Response, crate::Error> {
    let (remembered, user_scopes) = match &session {
        Some(s) => (
            s.consent.as_deref().map(Scopes::parse).transpose()?,
            Scopes::parse(&s.user_scopes)?,
        ),
        None => (None, Scopes::default()),
    };
    let next = signin::next(
        &request,
        client,
        session.as_ref().map(|s| &s.session),
        fresh_login,
        remembered.as_ref(),
        &user_scopes,
        now(),
    );
    let master = app.keys.master();
    match (next, session) {
        (Next::Issue(scopes), Some(session)) => {
            let known = session.client_known;
            let answers = pending.map(Pending::answer);
            issue(
                app,
                pages,
                client,
                &request,
                &session.session,
                known,
                scopes,
                answers,
            )
            .await
        }
        // After a page: the pending request is answered, once.
        (Next::Refuse(error, description), Some(session)) if pending.is_some() => {
            let answers = pending.map(Pending::answer).unwrap_or_default();
            refuse(
                app,
                pages,
                &grant_of(client, &request, &session.session, Scopes::default()),
                &answers,
                client,
                &request.error(error, description),
            )
            .await
        }
        (Next::Refuse(error, description), _) => Ok(respond_error(
            app,
            pages,
            &request.error(error, description),
        )),
        (Next::Login, _) | (Next::Issue(_), None) => {
            let id = match pending {
                Some(p) => p.id.clone(),
                None => pending::seal(&master, browser, &request, None, None, now())?,
            };
            Ok(see_other(&format!("/login?request={id}")))
        }
        (Next::Consent, Some(session)) => {
            // Sealed again with the session it now belongs to.
            let id = pending::seal(
                &master,
                browser,
                &request,
                Some((&session.session.sid, fresh_login)),
                pending,
                now(),
            )?;
            Ok(see_other(&format!("/consent?request={id}")))
        }
        (Next::Consent, None) => Ok(see_other("/login")),
    }
}

/// The page for a pending request answered already (a form sent twice).
pub(crate) fn already_done(pages: &SharedPages) -> Response {
    pages.error(
        StatusCode::BAD_REQUEST,
        "Already done",
        "This sign-in has already been completed.",
        "Go back to the application and start again.",
    )
}

/// Issue a code for `scopes` in `session` and send it to the client;
/// `client_known` says the session has signed in to the client before
/// (else it is recorded, for back-channel logout), `answers` the digest
/// of the pending request this answers (answered once: a form sent again
/// gets the same code, [`send_again`], or the "already done" page).
#[allow(clippy::too_many_arguments)]
pub(crate) async fn issue(
    app: &App,
    pages: &SharedPages,
    client: &Client,
    request: &AuthorizationRequest,
    session: &Session,
    client_known: bool,
    scopes: Scopes,
    answers: Option<Vec<u8>>,
) -> Result<Response, crate::Error> {
    // A user is issued so many codes a minute (`code_limit.rs`): a
    // silent request looped by a script with the cookie would fill the
    // database with them.
    if let Err(wait) = app.code_limit.check(&session.user_id) {
        let mut fields = vec![
            ("error", "temporarily_unavailable".to_owned()),
            ("error_description", too_many_codes(client, wait)),
        ];
        if let Some(state) = &request.state {
            fields.push(("state", state.clone()));
        }
        fields.push(("iss", app.config.issuer.clone()));
        return Ok(respond(
            pages,
            &client.name,
            &request.redirect_uri,
            request.response_mode,
            &fields,
        ));
    }
    // The client is recorded with the session before a code can exist:
    // a code, sent again or not, always finds its client there for the
    // session's back-channel logout.
    if !client_known {
        sessions::add_client(&app.db, &session.sid, &client.client_id).await?;
    }
    let master = app.keys.master();
    let answering = answers.as_ref().map(|digest| codes::Answering {
        request: digest.clone(),
        code: master.code_for(digest, &session.user_id),
    });
    let code = app
        .codes
        .issue(&grant_of(client, request, session, scopes), answering)
        .await?;
    let code = match (code, &answers) {
        (Some(code), _) => code,
        (None, None) => return Ok(already_done(pages)),
        // Answered meanwhile: by this same login form sent twice at once,
        // both passwords checked before either answer was stored. The
        // first one's code goes again (the browser keeps one of the two
        // answers, and a logout there ends both sessions).
        (None, Some(digest)) => {
            return match codes::answer_to(&app.db, digest).await? {
                Some(answer) if answer.user_id == session.user_id => {
                    Ok(send_again(app, pages, client, (request, digest), &answer))
                }
                _ => Ok(already_done(pages)),
            };
        }
    };
    // The code is stored: it goes to the client whatever happens to the
    // idle clock (a failure here would throw a stored code away and show
    // the person an error page).
    if let Err(e) = sessions::touch(&app.db, session, app.config.sessions).await {
        tracing::warn!(error = %e, "a session's last use was not recorded; its idle clock runs on");
    }
    let mut fields = vec![("code", code.to_string())];
    if let Some(state) = &request.state {
        fields.push(("state", state.clone()));
    }
    fields.push(("iss", app.config.issuer.clone()));
    Ok(respond(
        pages,
        &client.name,
        &request.redirect_uri,
        request.response_mode,
        &fields,
    ))
}

/// The answer `answer` of pending request `request` (of digest `digest`)
/// again, when it is a code still to be exchanged; else the "already
/// done" page.
pub(crate) fn send_again(
    app: &App,
    pages: &SharedPages,
    client: &Client,
    (request, digest): (&AuthorizationRequest, &[u8]),
    answer: &codes::Answer,
) -> Response {
    let code = app.keys.master().code_for(digest, &answer.user_id);
    if !answer.is_usable_code(&code) {
        return already_done(pages);
    }
    let mut fields = vec![("code", code.to_string())];
    if let Some(state) = &request.state {
        fields.push(("state", state.clone()));
    }
    fields.push(("iss", app.config.issuer.clone()));
    respond(
        pages,
        &client.name,
        &request.redirect_uri,
        request.response_mode,
        &fields,
    )
}

/// What a code for `request` in `session` is bound to.
pub(crate) fn grant_of(
    client: &Client,
    request: &AuthorizationRequest,
    session: &Session,
    scopes: Scopes,
) -> codes::Grant {
    codes::Grant {
        client_id: client.client_id.clone(),
        user_id: session.user_id.clone(),
        sid: session.sid.clone(),
        redirect_uri: request.redirect_uri.clone(),
        code_challenge: request.code_challenge.clone(),
        nonce: request.nonce.clone(),
        scope: scopes.to_string(),
        auth_time: session.auth_time,
    }
}

/// Answer the pending request of digest `answers` in `session` with the
/// error `e` at the client's redirect URI, once (a request answered
/// already, by a code or an error, gets the "already done" page): a
/// person who denied a request and goes back to allow it, or sends the
/// login form again as someone else after an error, does not turn the
/// error the client was sent into a code (RFC 6749 §4.1.2: one answer).
pub(crate) async fn refuse(
    app: &App,
    pages: &SharedPages,
    grant: &codes::Grant,
    answers: &[u8],
    client: &Client,
    e: &ErrorResponse,
) -> Result<Response, crate::Error> {
    // A refusal is stored as a code is, and counts as one: a person who
    // denies consent again and again would fill the table as well.
    if let Err(wait) = app.code_limit.check(&grant.user_id) {
        let e = ErrorResponse {
            error: "temporarily_unavailable",
            description: too_many_codes(client, wait),
            ..e.clone()
        };
        return Ok(respond_error(app, pages, &e));
    }
    if !codes::refuse(&app.db, grant, answers).await? {
        return Ok(already_done(pages));
    }
    Ok(respond_error(app, pages, e))
}

/// Logs that a user asked for more codes than [`crate::code_limit`]
/// allows, and says when to try again.
fn too_many_codes(client: &Client, wait: std::time::Duration) -> String {
    tracing::warn!(
        client_id = %client.client_id,
        "a user asked for authorization codes faster than they may be issued them"
    );
    format!(
        "too many sign-ins for this account; try again in {} s",
        wait.as_secs().saturating_add(1)
    )
}

/// An error for the client at its redirect URI (RFC 6749 §4.1.2.1, with
/// `iss` of RFC 9207).
pub(crate) fn respond_error(app: &App, pages: &SharedPages, e: &ErrorResponse) -> Response {
    let mut fields = vec![("error", e.error.to_owned())];
    if !e.description.is_empty() {
        fields.push((
            "error_description",
            super::error::description_text(&e.description),
        ));
    }
    if let Some(state) = &e.state {
        fields.push(("state", state.clone()));
    }
    fields.push(("iss", app.config.issuer.clone()));
    respond(
        pages,
        "the application",
        &e.redirect_uri,
        e.response_mode,
        &fields,
    )
}

/// Send `fields` to `redirect_uri`: in its query (a 303), or as a form
/// the browser posts there.
fn respond(
    pages: &SharedPages,
    client_name: &str,
    redirect_uri: &str,
    mode: ResponseMode,
    fields: &[(&str, String)],
) -> Response {
    match mode {
        ResponseMode::Query => match Url::parse(redirect_uri) {
            Ok(mut url) => {
                url.query_pairs_mut()
                    .extend_pairs(fields.iter().map(|(k, v)| (*k, v.as_str())));
                see_other(url.as_str())
            }
            Err(_) => bad_request(pages, "the redirect URI is not a URL"),
        },
        ResponseMode::FormPost => {
            let mut page = pages.render(
                StatusCode::OK,
                "form_post.html",
                minijinja::context! {
                    client_name,
                    action => redirect_uri,
                    fields => fields.iter().map(|(k, v)| (k.to_string(), v.clone())).collect::<Vec<_>>(),
                },
            );
            // The POST to the client carries this server's origin: under
            // `no-referrer` its `Origin` header is `null`, which an
            // application that checks where POSTs come from (Django's
            // CSRF_TRUSTED_ORIGINS, Go's CrossOriginProtection) refuses.
            // The origin alone: the page's address stays unsaid.
            page.headers_mut()
                .insert(header::REFERRER_POLICY, HeaderValue::from_static("origin"));
            page
        }
    }
}

/// A 303 to `location`, with the pages' headers.
pub(crate) fn see_other(location: &str) -> Response {
    let mut r = StatusCode::SEE_OTHER.into_response();
    let h = r.headers_mut();
    if let Ok(v) = HeaderValue::try_from(location) {
        h.insert(header::LOCATION, v);
    }
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    r
}

/// The error page for a request that cannot be answered at a redirect URI.
pub(crate) fn bad_request(pages: &SharedPages, why: &str) -> Response {
    let mut message = why.to_owned();
    if let Some(first) = message.get(..1) {
        message.replace_range(..1, &first.to_uppercase());
    }
    pages.error(
        StatusCode::BAD_REQUEST,
        "This sign-in request is not valid",
        &message,
        "Go back to the application and try again. If this keeps happening, tell its developers.",
    )
}

/// The error page for a failure of the server.
pub(crate) fn failure(pages: &SharedPages, e: &crate::Error) -> Response {
    let (status, message) = if e.is_transient() {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "The sign-in service is busy or briefly unavailable.",
        )
    } else {
        tracing::error!(error = %e, "sign-in failed");
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            "Something went wrong on our side.",
        )
    };
    let mut r = pages.error(
        status,
        "Please try again",
        message,
        "Wait a moment and reload the page.",
    );
    if status == StatusCode::SERVICE_UNAVAILABLE {
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
    }
    r
}
