//! Reading the parameters of the pages' requests, strictly (no repeated
//! parameter, no control character; `form.rs`'s rules).

use axum::body::Bytes;
use axum::extract::Request;
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method, Uri};

use super::client_address::ClientAddress;
use super::form::{is_form, OAuthForm};

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
    if uri.query().is_some_and(|q| !q.is_empty()) {
        return Err("a POST carries its parameters in its body, not in the address".into());
    }
    Ok(body)
}

const NOT_A_FORM: &str = "the form must be sent as application/x-www-form-urlencoded";

/// A page's form `POST`: the request's parts and its fields (with the
/// peer's address, for the login limits).
pub(crate) async fn form(request: Request) -> Result<(Parts, OAuthForm), String> {
    let peer = request.extensions().get::<ClientAddress>().map(|c| c.0);
    if !is_form(request.headers()) {
        return Err(NOT_A_FORM.into());
    }
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, super::BODY_LIMIT)
        .await
        .map_err(|_| "the form could not be read".to_owned())?;
    let form = OAuthForm::parse(&body, None, peer).map_err(|e| e.description)?;
    Ok((parts, form))
}
