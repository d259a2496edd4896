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
            Rejection::KeysUnavailable => StatusCode::SERVICE_UNAVAILABLE,
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
            Rejection::KeysUnavailable => "Bearer".into(),
        }
    }
}

impl Rejection {
    /// The RFC 6750 error code and a description, for the JSON body;
    /// `None` for a request that sent no token (RFC 6750 §3.1: no error
    /// information then) and when the keys are unavailable.
    fn body(&self) -> Option<(&'static str, &'static str)> {
        match self {
            Rejection::Missing | Rejection::KeysUnavailable => None,
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
        if self == Rejection::KeysUnavailable {
            return response;
        }
        // Scopes are RFC 6749 scope tokens (no quotes or backslashes), so
        // the challenge is always a valid header value.
        if let Ok(value) = HeaderValue::from_str(&self.challenge()) {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, value);
        }
        response
    }
}
