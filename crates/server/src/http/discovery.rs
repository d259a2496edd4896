//! `GET /.well-known/jwks.json` and the server metadata (RFC 8414; the
//! same document at `/.well-known/openid-configuration`).

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use tessera_jose::Algorithm;

use super::App;
use crate::config::Config;
use crate::store::clients::GrantType;

/// The metadata document: only what this server really supports.
pub(super) fn metadata(config: &Config) -> String {
    let issuer = &config.issuer;
    let auth_methods = [
        "client_secret_basic",
        "client_secret_post",
        "private_key_jwt",
        "none",
    ];
    let assertion_algs: Vec<&str> = Algorithm::all()
        .filter(|a| !a.is_symmetric())
        .map(Algorithm::as_str)
        .collect();
    json!({
        "issuer": issuer,
        "token_endpoint": config.endpoint("/oauth2/token"),
        "jwks_uri": config.jwks_uri(),
        "introspection_endpoint": config.endpoint("/oauth2/introspect"),
        "revocation_endpoint": config.endpoint("/oauth2/revoke"),
        tessera_guard::FEED_METADATA: config.endpoint("/oauth2/revocations"),
        "authorization_endpoint": config.endpoint("/oauth2/authorize"),
        "userinfo_endpoint": config.endpoint("/oauth2/userinfo"),
        "end_session_endpoint": config.endpoint("/oauth2/logout"),
        "grant_types_supported": GrantType::ALL.iter().map(|g| g.as_str()).collect::<Vec<_>>(),
        "response_types_supported": ["code"],
        "response_modes_supported": ["query", "form_post"],
        "code_challenge_methods_supported": ["S256"],
        "scopes_supported": crate::signin::OIDC_SCOPES,
        "claims_supported": [
            "sub", "iss", "aud", "exp", "iat", "auth_time", "nonce", "sid", "at_hash",
            "name", "preferred_username", "email", "email_verified", "updated_at"
        ],
        "prompt_values_supported": ["none", "login", "consent", "select_account"],
        "authorization_response_iss_parameter_supported": true,
        "backchannel_logout_supported": true,
        "backchannel_logout_session_supported": true,
        "request_parameter_supported": false,
        "request_uri_parameter_supported": false,
        "token_endpoint_auth_methods_supported": auth_methods,
        "token_endpoint_auth_signing_alg_values_supported": assertion_algs,
        "introspection_endpoint_auth_methods_supported": &auth_methods[..3],
        "revocation_endpoint_auth_methods_supported": auth_methods,
        // RFC 8414 §2: required beside `private_key_jwt`, each endpoint
        // for itself (the same client authentication serves all three).
        "introspection_endpoint_auth_signing_alg_values_supported": assertion_algs,
        "revocation_endpoint_auth_signing_alg_values_supported": assertion_algs,
        // Those kept for the clients that still use them too: a relying
        // party may check its algorithm against this list.
        "id_token_signing_alg_values_supported": config
            .keys
            .id_token_algorithms
            .iter()
            .chain(&config.keys.kept_for_clients)
            .map(|a| a.as_str())
            .collect::<Vec<_>>(),
        "subject_types_supported": ["public"],
    })
    .to_string()
}

fn json_response(body: String, cache: HeaderValue) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(header::CACHE_CONTROL, cache);
    response
}

/// Authorization: none (public keys).
pub async fn jwks(State(app): State<Arc<App>>) -> Response {
    let max_age = app.config.keys.jwks_max_age.as_secs();
    let cache = HeaderValue::from_str(&format!("public, max-age={max_age}"))
        .unwrap_or(HeaderValue::from_static("public, max-age=300"));
    let mut response = json_response(app.keys.jwks_json().to_string(), cache);
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/jwk-set+json"),
    );
    response
}

/// Authorization: none.
pub async fn server_metadata(State(app): State<Arc<App>>) -> Response {
    json_response(
        app.metadata.get_or_init(|| metadata(&app.config)).clone(),
        HeaderValue::from_static("public, max-age=3600"),
    )
}
