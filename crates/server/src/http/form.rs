//! Form bodies (`application/x-www-form-urlencoded`), parsed strictly.
//!
//! RFC 6749 §3.2 and §3.1: parameters must not repeat, and parameters sent
//! without a value are treated as omitted. Other media types are refused
//! where the RFCs name this one.

use std::collections::HashMap;
use std::net::IpAddr;

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};

use super::client_address::ClientAddress;
use super::OAuthError;
use crate::grant::client_auth::Credentials;
use crate::grant::Parameters;

/// A parsed form, with the `Authorization` header and the peer's address.
pub struct OAuthForm {
    params: HashMap<String, String>,
    /// The `Authorization` header, for client authentication.
    pub authorization: Option<HeaderValue>,
    /// The peer's address, when the server knows it.
    pub peer: Option<IpAddr>,
}

impl std::fmt::Debug for OAuthForm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Values include passwords, secrets and tokens: names only.
        f.debug_struct("OAuthForm")
            .field("params", &self.params.keys().collect::<Vec<_>>())
            .field("peer", &self.peer)
            .finish_non_exhaustive()
    }
}

impl OAuthForm {
    /// A parameter's value, if present and not empty.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.params.get(name).map(String::as_str)
    }

    /// A required parameter.
    pub fn require(&self, name: &str) -> Result<&str, OAuthError> {
        self.get(name)
            .ok_or_else(|| OAuthError::invalid_request(format!("missing parameter {name}")))
    }

    /// Parse `body` (exposed for tests).
    pub fn parse(
        body: &[u8],
        authorization: Option<HeaderValue>,
        peer: Option<IpAddr>,
    ) -> Result<OAuthForm, OAuthError> {
        let (form, repeated) = OAuthForm::parse_keeping_first(body, authorization, peer)?;
        match repeated.first() {
            Some(name) => Err(OAuthError::invalid_request(format!(
                "{} given more than once",
                parameter(name)
            ))),
            None => Ok(form),
        }
    }

    /// Parse `body` by [`OAuthForm::parse`]'s rules, except that a
    /// parameter given more than once keeps its first value; with the
    /// names of those parameters (for the authorization endpoint, which
    /// answers a repeat at the client's redirect URI when that URI and the
    /// client are themselves given once, RFC 6749 §4.1.2.1).
    pub(crate) fn parse_keeping_first(
        body: &[u8],
        authorization: Option<HeaderValue>,
        peer: Option<IpAddr>,
    ) -> Result<(OAuthForm, Vec<String>), OAuthError> {
        let mut params = HashMap::new();
        let mut seen = std::collections::HashSet::new();
        // In order, for the error (the first one named); the set keeps a
        // body of thousands of names each given twice from costing their
        // square.
        let mut repeated = Vec::new();
        let mut repeated_set = std::collections::HashSet::new();
        for (name, value) in strict_pairs(body)? {
            // Identifiers, tokens and scopes never hold control characters
            // (a NUL would reach the database); a password may hold anything
            // its owner typed, and only ever reaches the hasher.
            if name.chars().any(char::is_control)
                || (name != "password" && value.chars().any(char::is_control))
            {
                return Err(OAuthError::invalid_request(format!(
                    "{} holds a control character",
                    parameter(&name)
                )));
            }
            if !seen.insert(name.clone()) {
                if repeated_set.insert(name.clone()) {
                    repeated.push(name);
                }
                continue;
            }
            if !value.is_empty() {
                params.insert(name, value);
            }
        }
        let form = OAuthForm {
            params,
            authorization,
            peer,
        };
        Ok((form, repeated))
    }
}

/// The name-value pairs of a form body, decoded strictly: `+` is a space,
/// `%` must start an escape of two hex digits, and what the escapes spell
/// must be UTF-8. (`form_urlencoded::parse` passes a broken escape
/// through as text and replaces bytes that are not UTF-8 with U+FFFD, so
/// that two different passwords could arrive as one.) Empty pieces
/// (`a=1&&b=2`) are skipped, and a piece without `=` is a name with an
/// empty value, as there.
pub(crate) fn strict_pairs(body: &[u8]) -> Result<Vec<(String, String)>, OAuthError> {
    let decode = |part: &[u8]| -> Result<String, OAuthError> {
        let broken = part.iter().enumerate().any(|(i, b)| {
            *b == b'%'
                && !matches!(
                    (part.get(i + 1), part.get(i + 2)),
                    (Some(h), Some(l)) if h.is_ascii_hexdigit() && l.is_ascii_hexdigit()
                )
        });
        if broken {
            return Err(OAuthError::invalid_request(
                "the form holds a % that starts no escape",
            ));
        }
        let spaced: Vec<u8> = part
            .iter()
            .map(|b| if *b == b'+' { b' ' } else { *b })
            .collect();
        String::from_utf8(percent_encoding::percent_decode(&spaced).collect())
            .map_err(|_| OAuthError::invalid_request("the form is not UTF-8"))
    };
    body.split(|b| *b == b'&')
        .filter(|piece| !piece.is_empty())
        .map(|piece| {
            let (name, value) = match piece.iter().position(|b| *b == b'=') {
                Some(at) => (&piece[..at], &piece[at + 1..]),
                None => (piece, &b""[..]),
            };
            Ok((decode(name)?, decode(value)?))
        })
        .collect()
}

/// The one `Authorization` header, if any. Two are refused: which one a
/// proxy or the server would read is not defined, so neither is trusted.
pub(crate) fn single_authorization(headers: &HeaderMap) -> Result<Option<HeaderValue>, OAuthError> {
    let mut all = headers.get_all(header::AUTHORIZATION).iter();
    let first = all.next().cloned();
    if all.next().is_some() {
        return Err(OAuthError::invalid_request(
            "more than one Authorization header",
        ));
    }
    Ok(first)
}

impl Parameters for OAuthForm {
    fn get(&self, name: &str) -> Option<&str> {
        OAuthForm::get(self, name)
    }
}

impl OAuthForm {
    /// What the request presents to identify its client.
    pub fn credentials(&self) -> Credentials<'_> {
        Credentials {
            authorization: self.authorization.as_ref().map(HeaderValue::as_bytes),
            params: self,
        }
    }
}

/// A parameter named in an error message, which pages show: by its name
/// when that is a plain one (as every protocol parameter's is), else
/// unnamed, so that a link cannot put the text of its choice on this
/// server's pages ("parameter Your account is locked, call …").
pub(crate) fn parameter(name: &str) -> String {
    let plain = (1..=32).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if plain {
        format!("parameter {name}")
    } else {
        "a parameter".into()
    }
}

/// Whether the body is `application/x-www-form-urlencoded` (parameters
/// such as `charset` allowed).
pub(crate) fn is_form(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| {
            v.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        })
}

impl<S: Send + Sync> FromRequest<S> for OAuthForm {
    type Rejection = OAuthError;

    async fn from_request(req: Request, state: &S) -> Result<OAuthForm, OAuthError> {
        if !is_form(req.headers()) {
            return Err(OAuthError::invalid_request(
                "the body must be application/x-www-form-urlencoded",
            ));
        }
        // RFC 6749 §2.3.1: credentials never in the URI (nor, by §3.2, a
        // token request's parameters), where logs and proxies keep them.
        // Refused rather than ignored, so that the client that sends them
        // there learns it (the page routes refuse a query beside a body
        // too).
        if req.uri().query().is_some_and(|q| !q.is_empty()) {
            return Err(OAuthError::invalid_request(
                "parameters go in the body, not the URL's query (RFC 6749 §2.3.1, §3.2)",
            ));
        }
        let authorization = single_authorization(req.headers())?;
        let peer = req.extensions().get::<ClientAddress>().map(|c| c.0);
        let body = Bytes::from_request(req, state).await.map_err(|e| {
            // Too large is 413, whatever else went wrong is 400.
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                OAuthError::payload_too_large(format!("unreadable body: {e}"))
            } else {
                OAuthError::invalid_request(format!("unreadable body: {e}"))
            }
        })?;
        OAuthForm::parse(&body, authorization, peer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_parameters_are_refused_and_empty_ones_omitted() {
        let f = OAuthForm::parse(b"grant_type=password&scope=&username=a%20b", None, None).unwrap();
        assert_eq!(f.get("username"), Some("a b"));
        assert_eq!(f.get("scope"), None);
        assert!(f.require("scope").is_err());
        let err = OAuthForm::parse(b"scope=a&scope=b", None, None).unwrap_err();
        assert_eq!(err.code, "invalid_request");
        // A repeat is refused even when one of the values is empty.
        assert!(OAuthForm::parse(b"scope=&scope=b", None, None).is_err());
    }

    #[test]
    fn repeated_names_are_listed_once_each_in_the_order_they_repeat() {
        let (form, repeated) =
            OAuthForm::parse_keeping_first(b"b=1&a=1&c=1&b=2&a=2&b=3&a=", None, None).unwrap();
        assert_eq!(repeated, ["b", "a"]);
        assert_eq!((form.get("a"), form.get("b")), (Some("1"), Some("1")));
        let err = OAuthForm::parse(b"b=1&a=1&a=2&b=2", None, None).unwrap_err();
        assert!(
            err.description.starts_with("parameter a "),
            "{}",
            err.description
        );
    }

    #[test]
    fn broken_escapes_and_text_that_is_not_utf8_are_refused() {
        for body in [
            &b"password=%FF"[..],
            b"password=%E9t%E9",
            b"client_id=abc%2",
            b"client_id=a%zzb",
            b"client%=a",
            b"username=al\xffice",
        ] {
            let err = OAuthForm::parse(body, None, None).unwrap_err();
            assert_eq!(err.code, "invalid_request", "{body:?}");
        }
        // What is well formed decodes as before: + is a space, escapes of
        // UTF-8 are text, a name alone has no value.
        let f = OAuthForm::parse(
            b"username=al+ice&password=%C3%A9t%C3%A9+%2B&&scope&state=a%3Db",
            None,
            None,
        )
        .unwrap();
        assert_eq!(f.get("username"), Some("al ice"));
        assert_eq!(f.get("password"), Some("\u{e9}t\u{e9} +"));
        assert_eq!(f.get("scope"), None);
        assert_eq!(f.get("state"), Some("a=b"));
    }

    #[test]
    fn control_characters_are_refused_outside_passwords() {
        for body in [
            &b"client_id=a%00b"[..],
            b"username=al%00ice",
            b"scope=read%0Awrite",
            b"client%00id=a",
            b"password%00=x",
        ] {
            let err = OAuthForm::parse(body, None, None).unwrap_err();
            assert_eq!(err.code, "invalid_request", "{body:?}");
            assert!(err.description.contains("control character"), "{body:?}");
        }
        let f = OAuthForm::parse(b"username=alice&password=tab%09and%00nul", None, None).unwrap();
        assert_eq!(f.get("password"), Some("tab\tand\0nul"));
    }

    #[test]
    fn two_authorization_headers_are_refused() {
        let mut headers = HeaderMap::new();
        assert_eq!(single_authorization(&headers).unwrap(), None);
        headers.append(
            header::AUTHORIZATION,
            HeaderValue::from_static("Basic YTpi"),
        );
        assert!(single_authorization(&headers).unwrap().is_some());
        headers.append(
            header::AUTHORIZATION,
            HeaderValue::from_static("Basic Yzpk"),
        );
        assert_eq!(
            single_authorization(&headers).unwrap_err().code,
            "invalid_request"
        );
    }
}
