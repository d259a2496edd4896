//! RFC 6750 §3 error responses.

use axum::response::{IntoResponse, Response};
use http::{header, HeaderValue, StatusCode};

/// Why a request was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Rejection {
    /// No `Authorization` header (401, a bare `Bearer` challenge).
    Missing,
    /// The header is not `Bearer <token>` (400 `invalid_request`).
    Malformed,
    /// The token is not valid here (401 `invalid_token`). The reason is
    /// coarse on purpose: `expired` or `invalid`.
    InvalidToken {
        /// `"the access token expired"` or `"the access token is invalid"`.
        description: &'static str,
    },
    /// The keys could not be fetched and none are cached (503).
    KeysUnavailable,
    /// The revocation feed has been unreachable longer than its bound and
    /// its policy is to refuse (503).
    RevocationsUnavailable,
    /// A valid token without the scope the route needs (403).
    InsufficientScope {
        /// The scope (or scopes, space-separated) the route needs.
        scope: String,
    },
}

impl Rejection {
    /// The status code.
    pub fn status(&self) -> StatusCode {
        match self {
            Rejection::Missing | Rejection::InvalidToken { .. } => StatusCode::UNAUTHORIZED,
            Rejection::Malformed => StatusCode::BAD_REQUEST,
            Rejection::InsufficientScope { .. } => StatusCode::FORBIDDEN,
            Rejection::KeysUnavailable | Rejection::RevocationsUnavailable => {
                StatusCode::SERVICE_UNAVAILABLE
            }
        }
    }

    /// The `WWW-Authenticate` challenge.
    pub fn challenge(&self) -> String {
        match self {
            Rejection::Missing => "Bearer".into(),
            Rejection::Malformed => {
                "Bearer error=\"invalid_request\", error_description=\"malformed Authorization header\"".into()
            }
            Rejection::InvalidToken { description } => {
                format!("Bearer error=\"invalid_token\", error_description=\"{description}\"")
            }
            Rejection::InsufficientScope { scope } => {
                format!("Bearer error=\"insufficient_scope\", scope=\"{scope}\"")
            }
            Rejection::KeysUnavailable | Rejection::RevocationsUnavailable => "Bearer".into(),
        }
    }
}

impl Rejection {
    /// The RFC 6750 error code and a description, for the JSON body;
    /// `None` for a request that sent no token (RFC 6750 §3.1: no error
    /// information then) and when the server cannot check tokens now.
    fn body(&self) -> Option<(&'static str, &'static str)> {
        match self {
            Rejection::Missing | Rejection::KeysUnavailable | Rejection::RevocationsUnavailable => {
                None
            }
            Rejection::Malformed => Some(("invalid_request", "malformed Authorization header")),
            Rejection::InvalidToken { description } => Some(("invalid_token", description)),
            Rejection::InsufficientScope { .. } => Some((
                "insufficient_scope",
                "the access token lacks the scope this request needs",
            )),
        }
    }
}

impl IntoResponse for Rejection {
    fn into_response(self) -> Response {
        self.response(None)
    }
}

/// `Retry-After` (seconds) on a `503`.
const RETRY_UNAVAILABLE: &str = "5";

impl Rejection {
    /// The answer, its challenge naming the resource's metadata (RFC 9728
    /// §5.1) when there is one.
    pub(crate) fn response(self, resource_metadata: Option<&str>) -> Response {
        let mut response = match self.body() {
            Some((error, description)) => (
                self.status(),
                axum::Json(serde_json::json!({
                    "error": error,
                    "error_description": description,
                })),
            )
                .into_response(),
            None => self.status().into_response(),
        };
        if self.status() == StatusCode::SERVICE_UNAVAILABLE {
            // When to ask again: the feed reconnects and keys are fetched
            // again within seconds (RFC 9110 §10.2.3).
            response.headers_mut().insert(
                http::header::RETRY_AFTER,
                HeaderValue::from_static(RETRY_UNAVAILABLE),
            );
            return response;
        }
        // Scopes are RFC 6749 scope tokens (no quotes or backslashes), so
        // the challenge is always a valid header value.
        let mut challenge = self.challenge();
        if let Some(url) = resource_metadata {
            // Checked when the guard was built: nothing to escape.
            let separator = if challenge == "Bearer" { " " } else { ", " };
            challenge = format!("{challenge}{separator}resource_metadata=\"{url}\"");
        }
        if let Ok(value) = HeaderValue::from_str(&challenge) {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, value);
        }
        response
    }
}
