//! Sign-in for people: the authorization request (RFC 6749 §4.1, PKCE as
//! RFC 7636 and RFC 9700 §2.1.1 require, OpenID Connect Core §3.1.2), what
//! happens next (log in, consent, or a code), ID tokens, and logout. No
//! HTTP here: `http/authorize.rs`, `http/pages.rs` and `http/logout.rs`
//! turn these decisions into redirects and pages.

pub mod backchannel;
pub mod id_token;
pub mod pending;
pub mod redirect;

use serde::{Deserialize, Serialize};

use crate::grant::Parameters;
use crate::store::clients::{Client, GrantType};
use crate::store::sessions::Session;
use crate::store::Scopes;

/// Scopes of OpenID Connect itself: every user may be granted them (API
/// scopes must also be among the user's).
pub const OIDC_SCOPES: [&str; 4] = ["openid", "profile", "email", "offline_access"];

/// Standard OpenID Connect scopes this server does not offer (Core §5.4):
/// asked for, they are left out of the grant rather than refused, since
/// scope values not understood "SHOULD be ignored" (Core §3.1.2.1).
/// Discovery's `scopes_supported` does not list them.
const IGNORED_SCOPES: [&str; 2] = ["address", "phone"];

/// The longest `state` or `nonce` kept (they travel in URLs).
pub(crate) const MAX_ECHO: usize = 1024;

/// How the response goes back to the client.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResponseMode {
    /// In the redirect URI's query (the default for `code`).
    Query,
    /// An auto-submitting form POSTed to the redirect URI (OAuth 2.0 Form
    /// Post Response Mode).
    FormPost,
}

/// What `prompt` asked for (OpenID Connect Core §3.1.2.1).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Prompt {
    /// `none`: no page may be shown.
    pub none: bool,
    /// `login` (or `select_account`): log in again.
    pub login: bool,
    /// `consent`: ask again.
    pub consent: bool,
}

/// A validated authorization request, kept while the person logs in and
/// consents.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthorizationRequest {
    /// The client.
    pub client_id: String,
    /// Where the response goes (one of the client's).
    pub redirect_uri: String,
    /// How it goes.
    pub response_mode: ResponseMode,
    /// Echoed back unchanged.
    pub state: Option<String>,
    /// The scopes asked for, within the client's.
    pub scope: String,
    /// For the ID token.
    pub nonce: Option<String>,
    /// PKCE S256 challenge.
    pub code_challenge: String,
    /// `prompt`.
    pub prompt: Prompt,
    /// `max_age` in seconds.
    pub max_age: Option<i64>,
    /// `login_hint`: the username to fill in.
    pub login_hint: Option<String>,
    /// The user an `id_token_hint` names (read by the endpoint, which has
    /// the keys): a session of anyone else needs a login.
    #[serde(default)]
    pub hint_subject: Option<String>,
    /// An `id_token_hint` shaped as this server's ID token for the client
    /// but signed under a key it does not publish (one rotated out since,
    /// in life): who it names cannot be known, so a session needs a login
    /// (`login_required` under `prompt=none`), and whoever logs in for
    /// the request is answered. Its `sub`, unverified, is never compared:
    /// anyone can forge one, and the answer would tell whether the
    /// browser's user is the one it names.
    #[serde(default)]
    pub hint_unconfirmed: bool,
}

/// Where an error in an authorization request goes.
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    /// The client or the redirect URI cannot be trusted: the person gets
    /// an error page and nothing is redirected (RFC 6749 §4.1.2.1).
    NoRedirect(String),
    /// An error the client gets at its redirect URI.
    Redirect(ErrorResponse),
}

/// An error response to the client (RFC 6749 §4.1.2.1).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ErrorResponse {
    /// Where it goes and how.
    pub redirect_uri: String,
    /// Query or form post.
    pub response_mode: ResponseMode,
    /// `error`.
    pub error: &'static str,
    /// `error_description`.
    pub description: String,
    /// `state`, as the request had it.
    pub state: Option<String>,
}

impl AuthorizationRequest {
    /// An error for the client at its redirect URI.
    pub fn error(&self, error: &'static str, description: impl Into<String>) -> ErrorResponse {
        ErrorResponse {
            redirect_uri: self.redirect_uri.clone(),
            response_mode: self.response_mode,
            error,
            description: description.into(),
            state: self.state.clone(),
        }
    }

    /// The requested scopes.
    pub fn scopes(&self) -> Scopes {
        Scopes::parse(&self.scope).unwrap_or_default()
    }
}

/// Validate an authorization request against its client (`None`: unknown).
/// The client and redirect URI are checked first: until both are known
/// good, nothing may be redirected.
pub fn validate(
    params: &dyn Parameters,
    client: Option<&Client>,
) -> Result<AuthorizationRequest, Refused> {
    if params.get("client_id").is_none() {
        return Err(Refused::NoRedirect(
            "the request names no client (client_id)".into(),
        ));
    }
    let Some(client) = client else {
        // Not quoted: the page would show whatever text the link's
        // author chose, under this server's name.
        return Err(Refused::NoRedirect(
            "there is no client with this client_id".into(),
        ));
    };
    let redirect_uri = match params.get("redirect_uri") {
        Some(uri) if redirect::matches(&client.redirect_uris, uri) => uri.to_owned(),
        Some(_) => {
            return Err(Refused::NoRedirect(
                "the redirect_uri is not one this client registered".into(),
            ))
        }
        None => {
            return Err(Refused::NoRedirect(
                "the request has no redirect_uri (OpenID Connect requires one)".into(),
            ))
        }
    };
    // A state too long to carry back is not echoed in the error that
    // refuses it.
    let state = params
        .get("state")
        .filter(|s| s.len() <= MAX_ECHO)
        .map(str::to_owned);
    let response_mode = match params.get("response_mode") {
        None | Some("query") => ResponseMode::Query,
        Some("form_post") => ResponseMode::FormPost,
        Some(_) => ResponseMode::Query,
    };
    let fail = |error: &'static str, description: String| {
        Refused::Redirect(ErrorResponse {
            redirect_uri: redirect_uri.clone(),
            response_mode,
            error,
            description,
            state: state.clone(),
        })
    };
    if let Some(mode) = params.get("response_mode") {
        if mode != "query" && mode != "form_post" {
            return Err(fail(
                "invalid_request",
                format!("response_mode {mode:?} is not supported: use query or form_post"),
            ));
        }
    }
    if params.get("state").is_some_and(|s| s.len() > MAX_ECHO) {
        return Err(fail("invalid_request", "state is too long".into()));
    }
    match params.get("response_type") {
        Some("code") => {}
        Some(other) => {
            return Err(fail(
                "unsupported_response_type",
                format!("response_type {other:?} is not supported: use code"),
            ))
        }
        None => {
            return Err(fail(
                "invalid_request",
                "missing parameter response_type".into(),
            ))
        }
    }
    if !client.allows(GrantType::AuthorizationCode) {
        return Err(fail(
            "unauthorized_client",
            "this client may not use the authorization code grant".into(),
        ));
    }
    if params.get("request").is_some() {
        return Err(fail(
            "request_not_supported",
            "request objects are not supported".into(),
        ));
    }
    if params.get("request_uri").is_some() {
        return Err(fail(
            "request_uri_not_supported",
            "request_uri is not supported".into(),
        ));
    }
    let code_challenge = match (
        params.get("code_challenge"),
        params.get("code_challenge_method"),
    ) {
        (None, _) => {
            return Err(fail(
                "invalid_request",
                "PKCE is required: send code_challenge with code_challenge_method=S256".into(),
            ))
        }
        (Some(_), Some("S256")) => params.get("code_challenge").unwrap_or_default(),
        (Some(_), None | Some("plain")) => {
            return Err(fail(
                "invalid_request",
                "code_challenge_method must be S256 (plain is not accepted)".into(),
            ))
        }
        (Some(_), Some(other)) => {
            return Err(fail(
                "invalid_request",
                format!("code_challenge_method {other:?} is not supported: use S256"),
            ))
        }
    };
    // The base64url of a SHA-256 digest: 43 characters.
    if code_challenge.len() != 43
        || !code_challenge
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(fail(
            "invalid_request",
            "code_challenge must be the base64url SHA-256 of the verifier (43 characters)".into(),
        ));
    }
    let mut scope = match params.get("scope") {
        Some(text) => Scopes::parse(text).map_err(|e| fail("invalid_scope", e.to_string()))?,
        None => Scopes::default(),
    };
    for ignored in IGNORED_SCOPES {
        if !client.scopes.contains(ignored) {
            scope = scope.without(ignored);
        }
    }
    if !scope.is_subset(&client.scopes) {
        return Err(fail(
            "invalid_scope",
            "a requested scope is not allowed for this client".into(),
        ));
    }
    let mut prompt = Prompt::default();
    for value in params
        .get("prompt")
        .unwrap_or_default()
        .split(' ')
        .filter(|v| !v.is_empty())
    {
        match value {
            "none" => prompt.none = true,
            "login" | "select_account" => prompt.login = true,
            "consent" => prompt.consent = true,
            other => {
                return Err(fail(
                    "invalid_request",
                    format!("prompt {other:?} is not supported"),
                ))
            }
        }
    }
    if prompt.none && (prompt.login || prompt.consent) {
        return Err(fail(
            "invalid_request",
            "prompt=none cannot be combined with other values".into(),
        ));
    }
    let max_age = match params.get("max_age") {
        None => None,
        // Any number of seconds (OpenID Connect sets no bound): one
        // beyond what an i64 holds asks no more than i64::MAX does.
        Some(text) if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) => {
            Some(text.parse::<i64>().unwrap_or(i64::MAX))
        }
        Some(_) => {
            return Err(fail(
                "invalid_request",
                "max_age must be a number of seconds".into(),
            ))
        }
    };
    let nonce = params.get("nonce").map(str::to_owned);
    if nonce.as_ref().is_some_and(|n| n.len() > MAX_ECHO) {
        return Err(fail("invalid_request", "nonce is too long".into()));
    }
    Ok(AuthorizationRequest {
        client_id: client.client_id.clone(),
        redirect_uri,
        response_mode,
        state,
        scope: scope.to_string(),
        nonce,
        code_challenge: code_challenge.to_owned(),
        prompt,
        max_age,
        login_hint: params
            .get("login_hint")
            .filter(|h| h.len() <= 200)
            .map(str::to_owned),
        hint_subject: None,
        hint_unconfirmed: false,
    })
}

/// What the person must do next.
#[derive(Debug, PartialEq, Eq)]
pub enum Next {
    /// Log in (no session, `prompt=login`, or `max_age` passed).
    Login,
    /// Allow the client these scopes.
    Consent,
    /// Nothing: issue a code for these scopes.
    Issue(Scopes),
    /// An error for the client (its code and description): a page would
    /// be needed under `prompt=none`, or the person who logged in is not
    /// the one the `id_token_hint` names.
    Refuse(&'static str, &'static str),
}

/// Decide what comes next for `request` in `session` (`None`: not logged
/// in), where `fresh_login` says the person has just logged in for this
/// request, `remembered` is the consent on record and `user_scopes` what
/// the user may be granted.
pub fn next(
    request: &AuthorizationRequest,
    client: &Client,
    session: Option<&Session>,
    fresh_login: bool,
    remembered: Option<&Scopes>,
    user_scopes: &Scopes,
    now: i64,
) -> Next {
    // A login made for this very request answers `prompt=login` and any
    // `max_age`, however long the password check took.
    let needs_login = match session {
        None => true,
        // Core §3.1.2.1: a positive answer only if the user the
        // `id_token_hint` names "is logged in or is logged in by the
        // request"; someone else who logged in gets an error.
        Some(s)
            if fresh_login
                && request
                    .hint_subject
                    .as_deref()
                    .is_some_and(|sub| sub != s.user_id) =>
        {
            return Next::Refuse(
                "login_required",
                "the user who signed in is not the one the id_token_hint names",
            );
        }
        Some(_) if fresh_login => false,
        Some(s) => {
            request.prompt.login
                // The relying party expects another user than the one
                // signed in here (Core §3.1.2.1: `login_required` under
                // `prompt=none`), or one this server cannot name.
                || request
                    .hint_subject
                    .as_deref()
                    .is_some_and(|sub| sub != s.user_id)
                || request.hint_unconfirmed
                // `max_age=0` asks for a login whatever the session's age,
                // as `prompt=login` does (OpenID Connect Core 1.0, errata
                // set 2, §3.1.2.1), even within the login's own second.
                || request
                    .max_age
                    .is_some_and(|max| max == 0 || now.saturating_sub(s.auth_time) > max)
        }
    };
    if needs_login {
        return if request.prompt.none {
            Next::Refuse("login_required", "the user is not signed in (prompt=none)")
        } else {
            Next::Login
        };
    }
    let granted = grantable(&request.scopes(), user_scopes);
    let consented = client.first_party
        || (!request.prompt.consent && remembered.is_some_and(|r| granted.is_subset(r)));
    if consented {
        Next::Issue(granted)
    } else if request.prompt.none {
        Next::Refuse(
            "consent_required",
            "the user has not allowed this client these scopes (prompt=none)",
        )
    } else {
        Next::Consent
    }
}

/// The requested scopes a user may have: OpenID Connect's own, and API
/// scopes that are among the user's.
pub fn grantable(requested: &Scopes, user_scopes: &Scopes) -> Scopes {
    let mut granted = requested.intersection(user_scopes);
    for scope in OIDC_SCOPES {
        if requested.contains(scope) {
            granted = granted.union(&Scopes::parse(scope).unwrap_or_default());
        }
    }
    granted
}

/// The S256 challenge `verifier` answers (RFC 7636 §4.2), or `None` when
/// it is not 43 to 128 unreserved characters (§4.1).
pub fn pkce_challenge(verifier: &str) -> Option<String> {
    let well_formed = (43..=128).contains(&verifier.len())
        && verifier
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'));
    if !well_formed {
        return None;
    }
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, verifier.as_bytes());
    Some(tessera_jose::b64::encode(digest.as_ref()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pkce_verifies(verifier: &str, challenge: &str) -> bool {
        pkce_challenge(verifier).is_some_and(|computed| computed == challenge)
    }

    #[test]
    fn pkce_follows_rfc_7636_appendix_b() {
        let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
        let challenge = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
        assert!(pkce_verifies(verifier, challenge));
        assert!(!pkce_verifies(
            "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXj",
            challenge
        ));
        assert!(!pkce_verifies(challenge, challenge), "plain is not S256");
        assert!(!pkce_verifies("short", challenge));
        assert!(!pkce_verifies(&format!("{verifier}+"), challenge));
    }

    struct Params(Vec<(&'static str, String)>);

    impl Parameters for Params {
        fn get(&self, name: &str) -> Option<&str> {
            self.0
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.as_str())
        }
    }

    /// A state too long to echo is refused, and not echoed in the refusal.
    #[test]
    fn a_state_too_long_is_refused_without_being_echoed() {
        let client = Client {
            redirect_uris: vec!["https://a/cb".into()],
            ..client()
        };
        let with_state = |state: String| {
            Params(vec![
                ("client_id", "c".into()),
                ("redirect_uri", "https://a/cb".into()),
                ("response_type", "code".into()),
                ("scope", "openid".into()),
                ("code_challenge", "x".repeat(43)),
                ("code_challenge_method", "S256".into()),
                ("state", state),
            ])
        };
        let ok = validate(&with_state("s".repeat(MAX_ECHO)), Some(&client));
        assert_eq!(
            ok.ok().and_then(|r| r.state).map(|s| s.len()),
            Some(MAX_ECHO)
        );
        match validate(&with_state("s".repeat(MAX_ECHO + 1)), Some(&client)) {
            Err(Refused::Redirect(e)) => {
                assert_eq!(e.error, "invalid_request");
                assert_eq!(e.state, None);
            }
            _ => panic!("a state too long must be refused by redirect"),
        }
    }

    fn client() -> Client {
        Client {
            secret_hash: None,
            grants: vec![GrantType::AuthorizationCode],
            scopes: Scopes::parse("openid").unwrap_or_default(),
            first_party: true,
            ..Client::for_tests("c")
        }
    }

    #[test]
    fn a_fresh_login_answers_max_age_and_prompt_login() {
        let client = client();
        let request = AuthorizationRequest {
            client_id: "c".into(),
            redirect_uri: "https://a/cb".into(),
            response_mode: ResponseMode::Query,
            state: None,
            scope: "openid".into(),
            nonce: None,
            code_challenge: "x".repeat(43),
            prompt: Prompt {
                login: true,
                ..Prompt::default()
            },
            max_age: Some(0),
            login_hint: None,
            hint_subject: None,
            hint_unconfirmed: false,
        };
        let session = Session {
            sid: "s".into(),
            user_id: "u".into(),
            auth_time: 100,
            created_at: 100,
            last_seen: 100,
            expires_at: 1000,
        };
        let none = Scopes::default();
        // The password check took three seconds: still no second login.
        let fresh = next(&request, &client, Some(&session), true, None, &none, 103);
        assert!(matches!(fresh, Next::Issue(_)), "{fresh:?}");
        let later = next(&request, &client, Some(&session), false, None, &none, 103);
        assert_eq!(later, Next::Login);
        assert_eq!(
            next(&request, &client, None, false, None, &none, 103),
            Next::Login
        );
        // An id_token_hint naming someone else: a login, or under
        // prompt=none, login_required; naming the session's user: nothing.
        let mut hinted = AuthorizationRequest {
            prompt: Prompt::default(),
            max_age: None,
            hint_subject: Some("someone else".into()),
            ..request
        };
        let at =
            |r: &AuthorizationRequest| next(r, &client, Some(&session), false, None, &none, 103);
        assert_eq!(at(&hinted), Next::Login);
        hinted.prompt.none = true;
        assert!(matches!(at(&hinted), Next::Refuse("login_required", _)));
        hinted.hint_subject = Some("u".into());
        assert!(matches!(at(&hinted), Next::Issue(_)), "{:?}", at(&hinted));
        // Someone else than the hint names logs in: an error for the
        // client, not a code for the wrong user.
        hinted.hint_subject = Some("someone else".into());
        hinted.prompt.none = false;
        assert!(matches!(
            next(&hinted, &client, Some(&session), true, None, &none, 103),
            Next::Refuse("login_required", _)
        ));
        hinted.hint_subject = Some("u".into());
        assert!(matches!(
            next(&hinted, &client, Some(&session), true, None, &none, 103),
            Next::Issue(_)
        ));
        // A hint that cannot be verified: a login whoever the session's
        // user is (under prompt=none, login_required), and the person who
        // logs in is answered.
        let unconfirmed = AuthorizationRequest {
            hint_subject: None,
            hint_unconfirmed: true,
            ..hinted
        };
        assert_eq!(at(&unconfirmed), Next::Login);
        let silent = AuthorizationRequest {
            prompt: Prompt {
                none: true,
                ..Prompt::default()
            },
            ..unconfirmed.clone()
        };
        assert!(matches!(at(&silent), Next::Refuse("login_required", _)));
        assert!(matches!(
            next(
                &unconfirmed,
                &client,
                Some(&session),
                true,
                None,
                &none,
                103
            ),
            Next::Issue(_)
        ));
    }

    #[test]
    fn oidc_scopes_need_no_user_scope_and_api_scopes_do() {
        let requested = Scopes::parse("openid email orders:read admin").unwrap();
        let user = Scopes::parse("orders:read").unwrap();
        assert_eq!(
            grantable(&requested, &user).to_string(),
            "email openid orders:read"
        );
    }
}
