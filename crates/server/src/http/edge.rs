//! What every request must satisfy before a handler sees it: no control
//! characters in its decoded path or query (identifiers never hold them,
//! and PostgreSQL refuses a NUL with an error, not an answer), and a
//! declared body no larger than the limit (refused from the header, at
//! once, rather than read first).

use axum::extract::Request;
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use percent_encoding::percent_decode_str;

use super::{OAuthError, BODY_LIMIT};

/// The middleware.
pub async fn check(request: Request, next: Next) -> Response {
    let uri = request.uri();
    let holds_control = |text: &str| percent_decode_str(text).any(|b| b.is_ascii_control());
    // Refused before any route's layers: what the sign-in routes put on
    // every answer (nothing framed, sniffed, cached or referred) is put on
    // these here, whichever path they were for.
    if holds_control(uri.path()) || uri.query().is_some_and(holds_control) {
        return super::framed_nowhere(
            OAuthError::invalid_request("the path or query holds a control character")
                .into_response(),
        )
        .await;
    }
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > BODY_LIMIT as u64) {
        return super::framed_nowhere(
            OAuthError::payload_too_large(format!("the body is larger than {BODY_LIMIT} bytes"))
                .into_response(),
        )
        .await;
    }
    next.run(request).await
}
