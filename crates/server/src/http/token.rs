//! `POST /oauth2/token` (RFC 6749 §3.2): every grant, one client
//! authentication, one access token (RFC 9068) and, where the client may
//! refresh, a refresh token.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use zeroize::Zeroizing;

use super::error::client_refusal;
use super::form::OAuthForm;
use super::{App, OAuthError};
use crate::access::Mint;
use crate::grant::client_auth::{authenticate, identifies_client, verify_assertion, Accept};
use crate::grant::{
    authorization_code, client_credentials, jwt_bearer, password, refresh, Armed, Granted, Refusal,
    TakeBack, TokenRequest,
};
use crate::signin::id_token::{self, IdClaims, IdToken};
use crate::store::audit::Event;
use crate::store::clients::{Client, GrantType};
use crate::store::{now, secs, CLOCK_SPREAD};

#[derive(Serialize)]
struct TokenResponse {
    access_token: String,
    token_type: &'static str,
    expires_in: i64,
    /// Always sent, empty too: RFC 6749 §5.1 lets it be left out only
    /// when it is what was asked for, and a client that asked for scopes
    /// it was not given must see that it has none.
    scope: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    refresh_token: Option<Zeroizing<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    id_token: Option<String>,
}

/// Authorization: any registered client, for the grants it was given.
pub async fn token(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    form: OAuthForm,
) -> Result<Response, OAuthError> {
    // Before anything is read: a change to the client or user committed
    // from this second on may not have been seen by this request.
    let started = now();
    if !app.audit.accepting() {
        // Nothing is issued that the audit trail could not record.
        return Err(OAuthError::temporarily_unavailable(
            &crate::Error::Unavailable("the audit trail is not being written".into()),
        ));
    }
    // Changes made through other instances (a secret rotated, a client
    // or user cut off) arrive through the revocation log: a copy not read
    // lately is read first, or the request is answered 503.
    app.access.revoked().current(&app.db).await?;
    // What of the log this request saw before it read anything: a cut
    // that arrives after it committed while the request was under way.
    let seen = app.access.revoked().latest();
    // A key revoked through any instance (it leaked): the keys are read
    // again before anything is signed, since it may be the one that signs.
    app.keys.caught_up().await?;
    let grant_type = form.require("grant_type")?;
    let grant = GrantType::parse(grant_type).ok_or_else(|| {
        OAuthError::unsupported_grant_type(format!("grant_type {grant_type:?} is not supported"))
    })?;
    // A browser names the page that sent the request. The endpoint
    // answers scripts of any origin (CORS, for single-page apps): any web
    // page could otherwise spread password guesses over its visitors'
    // addresses and read each answer. People sign in on this server's
    // own pages instead (RFC 9700 §2.4 removes the password grant).
    if grant == GrantType::Password && headers.contains_key(header::ORIGIN) {
        return Err(OAuthError::invalid_request(
            "the password grant is not offered to web pages (the request has an Origin \
             header); sign people in with the authorization code flow",
        ));
    }
    // RFC 7523 §3.1: with the jwt-bearer grant the assertion's issuer may
    // stand for the client.
    let (client, assertion) = if grant == GrantType::JwtBearer {
        // Named in the body and nothing else (RFC 6749 §3.2.1 lets a
        // client send its `client_id`): the assertion authenticates it,
        // and must be its own, below. Taken for the `none` method, it
        // was refused as "must authenticate".
        let credentials = form.credentials();
        let only_named = credentials.authorization.is_none()
            && ["client_secret", "client_assertion"]
                .iter()
                .all(|p| form.get(p).is_none());
        let named = form.get("client_id").filter(|_| only_named);
        let authenticated = if named.is_none() && identifies_client(&credentials) {
            Some(
                authenticate(app.verifier(), &form.credentials(), Accept::AnyClient)
                    .await
                    .map_err(|r| client_refusal(r, &form))?,
            )
        } else {
            None
        };
        let verified = verify_assertion(app.verifier(), form.require("assertion")?)
            .await?
            .map_err(OAuthError::invalid_grant)?;
        let claimed = authenticated
            .as_ref()
            .map(|c| c.client_id.as_str())
            .or(named);
        if claimed.is_some_and(|id| id != verified.client.client_id) {
            return Err(OAuthError::invalid_grant(
                "the assertion was issued by another client",
            ));
        }
        (verified.client.clone(), Some(verified))
    } else {
        (
            authenticate(app.verifier(), &form.credentials(), Accept::AnyClient)
                .await
                .map_err(|r| client_refusal(r, &form))?,
            None,
        )
    };
    if !client.allows(grant) {
        return Err(OAuthError::unauthorized_client(format!(
            "this client may not use the {} grant",
            grant.as_str()
        )));
    }
    let request = TokenRequest {
        client: &client,
        params: &form,
        peer: form.peer,
    };
    let granted = match grant {
        GrantType::ClientCredentials => client_credentials::grant(&request),
        GrantType::Password => password::grant(&request, app.login()).await,
        GrantType::RefreshToken => refresh::grant(&request, app.rotate()).await,
        GrantType::AuthorizationCode => authorization_code::grant(&request, app.exchange()).await,
        GrantType::JwtBearer => match &assertion {
            Some(assertion) => jwt_bearer::grant(&request, assertion, &app.db, &app.audit).await,
            None => return Err(OAuthError::invalid_request("missing parameter assertion")),
        },
    }?;
    // A rotation, a spent code or assertion, or a password login's new
    // family has committed: if the answer fails from here on, or the
    // request is dropped (its timeout), it is taken back
    // (`grant::TakeBack`).
    let take_back = Armed::new(
        TakeBack::of(grant, &request, &granted, &app.refresh, assertion),
        &app.db,
        &app.audit,
    );
    let answered = after_cut_off(&app, &client, &granted, (started, seen), &form)
        .await
        .and_then(|()| issue(&app, &client, granted));
    let response = match answered {
        Ok(response) => {
            take_back.disarm();
            response
        }
        Err(e) => {
            take_back.apply().await;
            return Err(e);
        }
    };
    metrics::counter!("tessera_tokens_issued_total", "grant" => grant.as_str()).increment(1);
    Ok(response)
}

/// How many seconds before a request began a change to its client still
/// has the request check its client against the database: longer than a
/// cached client is trusted (`store::revocation::TRUSTED_FOR`) and the
/// log is polled, plus the seconds instances' clocks may differ by.
const CLIENT_RECHECK: i64 = 10;

/// When the user or client was cut off within the last moments (a
/// password change, a user disabled, a rotated secret, a client deleted:
/// the cut reaches `store::revocation::CUT_MARGIN` seconds past the
/// change, and refuses tokens whose `iat` is at or before it):
///
/// - a request that was under way when the change committed is refused:
///   it may have checked what the change replaced (the old password, a
///   family the change revoked), and a token minted after the cut would
///   outlive the change. Without the wait below the cut would have
///   refused its token anyway. For a user, under way means that the
///   change's event reached this instance's copy of the log after the
///   request began (one that was in it by then committed before the
///   grant read the user); for a client, authenticated
///   against another client than the database holds now (the old secret,
///   a deleted client), checked for any change since [`CLIENT_RECHECK`]
///   seconds before the request began;
/// - any other waits until the cut has passed, so that its token (a login
///   right after a password change) is not refused with the ones before
///   it. Rare, and seven seconds at most (the margin and a second, and
///   as far as this clock may be behind the database's, which stamps the
///   cut).
async fn after_cut_off(
    app: &App,
    client: &Client,
    granted: &Granted,
    (started, seen): (i64, i64),
    form: &OAuthForm,
) -> Result<(), OAuthError> {
    let subject = granted.subject.as_str();
    use crate::store::revocation::CUT_MARGIN;
    let revoked = app.access.revoked();
    // The copy was current when the request began; a grant may take
    // seconds (the password queue, lock waits), and a change made through
    // another instance meanwhile must be in the copy read below.
    revoked.current(&app.db).await?;
    // Under way when the change committed: its event reached the copy
    // after the request began (the log's order, not the clocks', which
    // are the database's for the cut and this instance's for the
    // request). One read before then committed before the grant read
    // the user.
    if revoked.cut_off(Some(subject), None).is_some() && revoked.user_cut_since(seen, subject) {
        return Err(OAuthError::invalid_grant(
            "the user's account changed while this request was answered: ask again",
        ));
    }
    // A client's cut is checked exactly, from well before the request
    // began: did it authenticate against the client the database holds?
    // Its client may have come from the cache, which trusts a copy of the
    // log read up to `TRUSTED_FOR` ago, and a change made through another
    // instance, stamped by that instance's clock, may have reached the
    // copy only since: a cut checked from the same second on let an old
    // secret, or a deleted client, through to a token minted after the
    // cut, which nothing refuses.
    let changed_lately = |cut: i64| {
        cut.saturating_sub(CUT_MARGIN)
            .saturating_add(CLIENT_RECHECK)
            >= started
    };
    if revoked
        .cut_off(None, Some(&client.client_id))
        .is_some_and(changed_lately)
    {
        let now_stored = crate::store::clients::find(&app.db, &client.client_id)
            .await
            .map_err(|e| OAuthError::temporarily_unavailable(&e))?;
        // Another secret, no client, or fewer scopes than this request
        // granted (a scope taken away: the cut refuses the tokens before
        // it, and this one, minted after, would keep the scope).
        if now_stored.is_none_or(|c| {
            c.secret_hash != client.secret_hash || !granted.scope.is_subset(&c.scopes)
        }) {
            // As any other refusal of the client (400 without a Basic
            // challenge, when it authenticated in the body).
            return Err(client_refusal(
                Refusal::InvalidClient(
                    "the client's credentials changed while this request was answered".into(),
                ),
                form,
            ));
        }
    }
    let Some(cut) = revoked.cut_off(Some(subject), Some(&client.client_id)) else {
        return Ok(());
    };
    let next = u64::try_from(cut.saturating_add(1))
        .unwrap_or(0)
        .saturating_mul(1000);
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    // Up to the cut's margin and a second, and as far as this clock may
    // be behind the one that stamped it.
    let most = 1000 * u64::try_from(CUT_MARGIN + 1 + CLOCK_SPREAD).unwrap_or(0);
    let wait = next.saturating_sub(now_ms).min(most);
    if wait > 0 {
        tokio::time::sleep(Duration::from_millis(wait)).await;
    }
    // The `iat` comes from `store::now`, the coarse clock, which may still
    // show the old second for a tick or so after the precise one moved on.
    for _ in 0..100 {
        if now() > cut {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    // This clock is further behind the one that stamped the cut than it
    // should be: a token minted now would be refused by the cut itself.
    Err(OAuthError::temporarily_unavailable(
        &crate::Error::Unavailable(format!(
            "this instance's clock has not passed a cut-off at {cut}: it runs behind the \
             database's (docs/server.md asks for clocks within {CLOCK_SPREAD} s)"
        )),
    ))
}

/// Sign the access token (and, for a sign-in with `openid`, the ID
/// token) and answer.
fn issue(app: &App, client: &Client, granted: Granted) -> Result<Response, OAuthError> {
    let at = now();
    let max = app.config.max_access_ttl;
    let ttl = client
        .access_ttl
        .and_then(|s| u64::try_from(s).ok())
        .map(Duration::from_secs)
        .unwrap_or(app.config.access_ttl)
        .min(max);
    // A token that administers this server is for this server alone,
    // whatever other audiences its client has (one registered before
    // registration refused that): else the API it was also for could
    // replay it here.
    let audience = if client.audiences.is_empty() || crate::admin::administers(&granted.scope) {
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
            jti: granted.sign_in.as_ref().map(|s| s.jti.clone()),
            sid: granted.sid.clone(),
            family: granted.family.clone(),
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
    let mut id_token = None;
    if let Some(sign_in) = &granted.sign_in {
        if granted.scope.contains("openid") {
            let alg = client.id_token_alg();
            id_token = Some(id_token::sign(
                &app.keys,
                alg,
                IdToken {
                    issuer: &app.config.issuer,
                    subject: &granted.subject,
                    client_id: &client.client_id,
                    claims: IdClaims {
                        auth_time: granted.auth_time.unwrap_or(at),
                        nonce: sign_in.nonce.clone(),
                        sid: sign_in.sid.clone(),
                        at_hash: Some(id_token::at_hash(alg, &minted.token)),
                    },
                    ttl,
                },
                at,
            )?);
        }
    }
    let body = TokenResponse {
        access_token: minted.token,
        token_type: "Bearer",
        expires_in: secs(ttl),
        scope,
        refresh_token: granted.refresh_token,
        id_token,
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
