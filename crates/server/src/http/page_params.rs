//! Reading the parameters of the pages' requests, strictly (no repeated
//! parameter, no control character; `form.rs`'s rules).

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};

use super::client_address::ClientAddress;
use super::form::{is_form, OAuthForm};
use super::pages::SharedPages;
use super::OAuthError;

/// The parameters of a `GET` (its query) or a `POST` (its form body), as
/// the authorization and logout endpoints take either: both read by the
/// same strict rules, from the bytes sent (a query decoded leniently
/// first would turn a broken escape into text and bytes that are not
/// UTF-8 into U+FFFD, so two different values could arrive as one).
pub(crate) fn of_query_or_body(
    method: &Method,
    headers: &HeaderMap,
    uri: &Uri,
    body: &Bytes,
) -> Result<OAuthForm, String> {
    OAuthForm::parse(query_or_body(method, headers, uri, body)?, None, None)
        .map_err(|e| e.description)
}

/// [`of_query_or_body`], a parameter given more than once keeping its
/// first value; with the names of those parameters.
pub(crate) fn of_query_or_body_keeping_first(
    method: &Method,
    headers: &HeaderMap,
    uri: &Uri,
    body: &Bytes,
) -> Result<(OAuthForm, Vec<String>), String> {
    OAuthForm::parse_keeping_first(query_or_body(method, headers, uri, body)?, None, None)
        .map_err(|e| e.description)
}

/// A `POST`'s parameters are its form body alone: a body of another type
/// is refused, and so is a query beside it (neither merged nor ignored:
/// what a proxy or a log reads in the address would not be what is
/// answered).
fn query_or_body<'a>(
    method: &Method,
    headers: &HeaderMap,
    uri: &'a Uri,
    body: &'a Bytes,
) -> Result<&'a [u8], String> {
    if method != Method::POST {
        return Ok(uri.query().unwrap_or_default().as_bytes());
    }
    if !is_form(headers) {
        return Err(NOT_A_FORM.into());
    }
    if has_query(uri) {
        return Err(QUERY_BESIDE_BODY.into());
    }
    Ok(body)
}

/// Whether the address carries a query (beside a `POST`'s body, refused).
pub(crate) fn has_query(uri: &Uri) -> bool {
    uri.query().is_some_and(|q| !q.is_empty())
}

pub(crate) const QUERY_BESIDE_BODY: &str =
    "a POST carries its parameters in its body, not in the address";

const NOT_A_FORM: &str = "the form must be sent as application/x-www-form-urlencoded";

/// Why a page's form was not read.
pub(crate) enum Unread {
    /// Its body is larger than [`super::BODY_LIMIT`] (sent in chunks: a
    /// declared length is refused before, by `edge::check`).
    TooLarge,
    /// Anything else, said on the error page.
    Invalid(String),
}

impl Unread {
    /// The answer: `413` as for any body too large, else the error page.
    pub(crate) fn answer(&self, pages: &SharedPages) -> Response {
        match self {
            Unread::TooLarge => OAuthError::payload_too_large(format!(
                "the body is larger than {} bytes",
                super::BODY_LIMIT
            ))
            .into_response(),
            Unread::Invalid(why) => super::authorize::bad_request(pages, why),
        }
    }
}

/// A page's form `POST`: the request's parts and its fields (with the
/// peer's address, for the login limits). No query beside it.
pub(crate) async fn form(request: Request) -> Result<(Parts, OAuthForm), Unread> {
    let peer = request.extensions().get::<ClientAddress>().map(|c| c.0);
    if !is_form(request.headers()) {
        return Err(Unread::Invalid(NOT_A_FORM.into()));
    }
    if has_query(request.uri()) {
        return Err(Unread::Invalid(QUERY_BESIDE_BODY.into()));
    }
    let (parts, body) = request.into_parts();
    // Read within the router's body limit, which tells too large apart.
    let body = Bytes::from_request(Request::from_parts(parts.clone(), body), &())
        .await
        .map_err(|e| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                Unread::TooLarge
            } else {
                Unread::Invalid("the form could not be read".to_owned())
            }
        })?;
    let form = OAuthForm::parse(&body, None, peer).map_err(|e| Unread::Invalid(e.description))?;
    Ok((parts, form))
}
