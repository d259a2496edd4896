//! OAuth error responses (RFC 6749 §5.2).

use std::time::Duration;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::log_limit::PerCaller;

/// An error as the client sees it: a code from RFC 6749 §5.2 (or RFC 7009
/// §2.2.1), a description for developers, and the status that goes with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OAuthError {
    /// `invalid_request`, `invalid_client`, …
    pub code: &'static str,
    /// Human-readable detail; never a secret.
    pub description: String,
    /// The HTTP status.
    pub status: StatusCode,
    /// Seconds to wait (`Retry-After`), for 429 and 503.
    pub retry_after: Option<u64>,
}

#[derive(Serialize)]
struct Body<'a> {
    error: &'a str,
    error_description: &'a str,
}

impl OAuthError {
    fn new(code: &'static str, status: StatusCode, description: impl Into<String>) -> OAuthError {
        OAuthError {
            code,
            description: description.into(),
            status,
            retry_after: None,
        }
    }

    /// `invalid_request` (400).
    pub fn invalid_request(description: impl Into<String>) -> OAuthError {
        OAuthError::new("invalid_request", StatusCode::BAD_REQUEST, description)
    }

    /// `invalid_client` (401, with `WWW-Authenticate: Basic`): for a
    /// client that authenticated with Basic (`client_refusal` picks 401 or
    /// 400 by how the client authenticated).
    pub fn invalid_client(description: impl Into<String>) -> OAuthError {
        OAuthError::new("invalid_client", StatusCode::UNAUTHORIZED, description)
    }

    /// `invalid_grant` (400).
    pub fn invalid_grant(description: impl Into<String>) -> OAuthError {
        OAuthError::new("invalid_grant", StatusCode::BAD_REQUEST, description)
    }

    /// `unauthorized_client` (400).
    pub fn unauthorized_client(description: impl Into<String>) -> OAuthError {
        OAuthError::new("unauthorized_client", StatusCode::BAD_REQUEST, description)
    }

    /// `unsupported_grant_type` (400).
    pub fn unsupported_grant_type(description: impl Into<String>) -> OAuthError {
        OAuthError::new(
            "unsupported_grant_type",
            StatusCode::BAD_REQUEST,
            description,
        )
    }

    /// `invalid_scope` (400).
    pub fn invalid_scope(description: impl Into<String>) -> OAuthError {
        OAuthError::new("invalid_scope", StatusCode::BAD_REQUEST, description)
    }

    /// A body over the size limit (413, code `invalid_request`).
    pub fn payload_too_large(description: impl Into<String>) -> OAuthError {
        OAuthError::new(
            "invalid_request",
            StatusCode::PAYLOAD_TOO_LARGE,
            description,
        )
    }

    /// 429 with `Retry-After` (at least a second) and `description`.
    fn too_many(retry_after: u64, description: &str) -> OAuthError {
        OAuthError {
            retry_after: Some(retry_after.max(1)),
            ..OAuthError::new(
                "invalid_request",
                StatusCode::TOO_MANY_REQUESTS,
                description,
            )
        }
    }

    /// Too many logins, failed or not (429 with `Retry-After`).
    pub fn too_many_attempts(retry_after: u64) -> OAuthError {
        OAuthError::too_many(retry_after, "too many logins; try again later")
    }

    /// A client holding as many revocation-feed streams as it may (429
    /// with `Retry-After`).
    pub fn too_many_streams(retry_after: u64) -> OAuthError {
        OAuthError::too_many(
            retry_after,
            "this client has as many revocation streams open here as it may",
        )
    }

    /// A client rotating one user's refresh tokens faster than its
    /// allowance (429 with `Retry-After`).
    pub fn too_many_refreshes(retry_after: u64) -> OAuthError {
        OAuthError::too_many(
            retry_after,
            "too many refreshes for this user; try again later with the same refresh token",
        )
    }

    /// A client revoking access tokens faster than its allowance (503
    /// with `Retry-After`, which RFC 7009 §2.2.1 defines for revocation:
    /// the token still exists, retry later).
    pub fn revoking_too_fast(wait: std::time::Duration) -> OAuthError {
        OAuthError {
            retry_after: Some(wait.as_secs().saturating_add(1)),
            ..OAuthError::new(
                "temporarily_unavailable",
                StatusCode::SERVICE_UNAVAILABLE,
                "this client has revoked too many access tokens of this subject lately; \
                 the token is not revoked, retry later",
            )
        }
    }

    /// The database (or the audit trail, or the instance's own state)
    /// cannot serve the request now (503 with `Retry-After`): nothing was
    /// written, and a retry may succeed. Said in the log at most every
    /// 10 s from each place that refuses, with how many were left out: an
    /// outage refuses every request alike, unauthenticated ones too.
    #[track_caller]
    pub fn temporarily_unavailable(cause: &crate::Error) -> OAuthError {
        static SAID: PerCaller = PerCaller::new(Duration::from_secs(10));
        if let Some(left_out) = SAID.admit() {
            tracing::warn!(
                error = %cause,
                left_out,
                "request refused: temporarily unavailable (said at most every 10 s from each \
                 place that refuses; left_out: refusals there since the last one said)"
            );
        }
        OAuthError {
            retry_after: Some(RETRY_UNAVAILABLE),
            ..OAuthError::new(
                "temporarily_unavailable",
                StatusCode::SERVICE_UNAVAILABLE,
                "the server cannot serve this request now; try again later",
            )
        }
    }

    /// The server is at capacity (503 with `Retry-After: 1`). Not logged
    /// per request: a flood would flood the log; a metric counts them.
    pub fn overloaded(why: &'static str) -> OAuthError {
        OAuthError {
            retry_after: Some(1),
            ..OAuthError::new(
                "temporarily_unavailable",
                StatusCode::SERVICE_UNAVAILABLE,
                format!("the server is busy ({why}); try again shortly"),
            )
        }
    }

    /// The server failed (500); the cause is logged, not sent.
    pub fn server_error(cause: &crate::Error) -> OAuthError {
        tracing::error!(error = %cause, "request failed");
        OAuthError::new(
            "server_error",
            StatusCode::INTERNAL_SERVER_ERROR,
            "the server failed; see its log",
        )
    }
}

/// `Retry-After` seconds when the database is unavailable.
pub(crate) const RETRY_UNAVAILABLE: u64 = 5;

impl From<crate::Error> for OAuthError {
    /// Through `?` too, an outage's warning is said per place that
    /// refuses (`temporarily_unavailable`'s log period).
    #[track_caller]
    fn from(e: crate::Error) -> OAuthError {
        match e {
            crate::Error::Unavailable(_) => OAuthError::temporarily_unavailable(&e),
            crate::Error::Overloaded(why) => OAuthError::overloaded(why),
            e => OAuthError::server_error(&e),
        }
    }
}

impl IntoResponse for OAuthError {
    fn into_response(self) -> Response {
        let description = description_text(&self.description);
        let body = Body {
            error: self.code,
            error_description: &description,
        };
        let mut response = (self.status, axum::Json(body)).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
        if self.status == StatusCode::UNAUTHORIZED {
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"tessera\", charset=\"UTF-8\""),
            );
        }
        if let Some(secs) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response.extensions_mut().insert(FailureReason(self.code));
        response
    }
}

/// Longest `error_description` sent, in characters.
const DESCRIPTION_MAX: usize = 256;

/// An `error_description` as RFC 6749 §4.1.2.1 and §5.2 allow it: printable
/// ASCII without `"` and `\` (`'` and `/` stand in for them, `?` for
/// anything else), at most [`DESCRIPTION_MAX`] characters. Descriptions
/// may quote what the request sent (an unsupported `response_type`), and
/// what reaches the client, and perhaps its user, must not say more.
pub(crate) fn description_text(text: &str) -> String {
    let mut out: String = text
        .chars()
        .map(|c| match c {
            '"' => '\'',
            '\\' => '/',
            ' '..='~' => c,
            _ => '?',
        })
        .take(DESCRIPTION_MAX)
        .collect();
    if text.chars().nth(DESCRIPTION_MAX).is_some() {
        out.truncate(DESCRIPTION_MAX - 3);
        out.push_str("...");
    }
    out
}

/// A refused client authentication, answered as RFC 6749 §5.2 says: a
/// client that tried the `Authorization` header (Basic), or sent no
/// credentials at all, gets 401 with the Basic challenge (the scheme to
/// use); one that authenticated in the body or with an assertion gets 400
/// `invalid_client`, without a challenge for a scheme it did not use (a
/// 401 must carry one, RFC 9110 §15.5.2).
pub(crate) fn client_refusal(
    refusal: crate::grant::Refusal,
    form: &super::form::OAuthForm,
) -> OAuthError {
    let mut error = OAuthError::from(refusal);
    let in_body = form.get("client_id").is_some() || form.get("client_assertion").is_some();
    if error.code == "invalid_client" && form.authorization.is_none() && in_body {
        error.status = StatusCode::BAD_REQUEST;
    }
    error
}

/// The error code of a failed response, for the metrics middleware.
#[derive(Clone, Copy, Debug)]
pub(crate) struct FailureReason(pub &'static str);

impl From<crate::grant::Refusal> for OAuthError {
    #[track_caller]
    fn from(refusal: crate::grant::Refusal) -> OAuthError {
        use crate::grant::Refusal;
        match refusal {
            Refusal::InvalidRequest(why) => OAuthError::invalid_request(why),
            Refusal::InvalidClient(why) => OAuthError::invalid_client(why),
            Refusal::InvalidGrant(why) => OAuthError::invalid_grant(why),
            Refusal::InvalidScope(why) => OAuthError::invalid_scope(why),
            Refusal::TooManyAttempts(wait) => {
                OAuthError::too_many_attempts(wait.as_secs().saturating_add(1))
            }
            Refusal::TooManyRefreshes(wait) => {
                OAuthError::too_many_refreshes(wait.as_secs().saturating_add(1))
            }
            Refusal::Failed(e) => OAuthError::from(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptions_hold_only_what_rfc_6749_allows_and_are_bounded() {
        assert_eq!(
            description_text("response_type \"tok\\en\" é\n"),
            "response_type 'tok/en' ??"
        );
        let long = description_text(&"x".repeat(1000));
        assert_eq!(long.len(), DESCRIPTION_MAX);
        assert!(long.ends_with("..."));
        let exact = "y".repeat(DESCRIPTION_MAX);
        assert_eq!(description_text(&exact), exact);
    }
}
