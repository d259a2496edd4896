//! Reading the parameters of the pages' requests, strictly (no repeated
//! parameter, no control character; `form.rs`'s rules).

use axum::body::Bytes;
use axum::extract::Request;
use axum::http::request::Parts;
use axum::http::{Method, Uri};

use super::client_address::ClientAddress;
use super::form::OAuthForm;

/// The parameters of a `GET` (its query) or a `POST` (its form body), as
/// the authorization and logout endpoints take either: both read by the
/// same strict rules, from the bytes sent (a query decoded leniently
/// first would turn a broken escape into text and bytes that are not
/// UTF-8 into U+FFFD, so two different values could arrive as one).
pub(crate) fn of_query_or_body(
    method: &Method,
    uri: &Uri,
    body: &Bytes,
) -> Result<OAuthForm, String> {
    OAuthForm::parse(query_or_body(method, uri, body), None, None).map_err(|e| e.description)
}

/// [`of_query_or_body`], a parameter given more than once keeping its
/// first value; with the names of those parameters.
pub(crate) fn of_query_or_body_keeping_first(
    method: &Method,
    uri: &Uri,
    body: &Bytes,
) -> Result<(OAuthForm, Vec<String>), String> {
    OAuthForm::parse_keeping_first(query_or_body(method, uri, body), None, None)
        .map_err(|e| e.description)
}

fn query_or_body<'a>(method: &Method, uri: &'a Uri, body: &'a Bytes) -> &'a [u8] {
    if method == Method::POST {
        body
    } else {
        uri.query().unwrap_or_default().as_bytes()
    }
}

/// A page's form `POST`: the request's parts and its fields (with the
/// peer's address, for the login limits).
pub(crate) async fn form(request: Request) -> Result<(Parts, OAuthForm), String> {
    let peer = request.extensions().get::<ClientAddress>().map(|c| c.0);
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, super::BODY_LIMIT)
        .await
        .map_err(|_| "the form could not be read".to_owned())?;
    let form = OAuthForm::parse(&body, None, peer).map_err(|e| e.description)?;
    Ok((parts, form))
}
