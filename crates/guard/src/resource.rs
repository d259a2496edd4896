//! OAuth 2.0 Protected Resource Metadata (RFC 9728): the API says which
//! authorization servers issue its tokens, so a client that met a `401`
//! can find where to get one (Model Context Protocol clients do this).

use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use http::{header, HeaderValue};
use serde::Serialize;

use crate::discovery::FetchError;

/// The metadata document of a protected resource (RFC 9728 §2).
#[derive(Clone, Debug, Serialize)]
pub struct ProtectedResource {
    resource: String,
    authorization_servers: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    scopes_supported: Vec<String>,
    bearer_methods_supported: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    resource_name: Option<String>,
}

impl ProtectedResource {
    /// The resource `resource` (its URL, `https` or `http`, without query
    /// or fragment: RFC 9728 §2), whose tokens `authorization_server`
    /// issues. Tokens go in the `Authorization` header only.
    pub fn new(
        resource: impl Into<String>,
        authorization_server: impl Into<String>,
    ) -> Result<ProtectedResource, FetchError> {
        let resource = resource.into();
        let issuer = authorization_server.into();
        for url in [&resource, &issuer] {
            check_url(url)?;
        }
        Ok(ProtectedResource {
            resource,
            authorization_servers: vec![issuer],
            scopes_supported: Vec::new(),
            bearer_methods_supported: vec!["header".into()],
            resource_name: None,
        })
    }

    /// The scopes a client may ask for to use this resource.
    #[must_use]
    pub fn scopes<I, S>(mut self, scopes: I) -> ProtectedResource
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.scopes_supported = scopes.into_iter().map(Into::into).collect();
        self
    }

    /// A name for people (`resource_name`).
    #[must_use]
    pub fn name(mut self, name: impl Into<String>) -> ProtectedResource {
        self.resource_name = Some(name.into());
        self
    }

    /// The resource identifier.
    pub fn resource(&self) -> &str {
        &self.resource
    }

    /// The path the document is served at (RFC 9728 §3.1: the well-known
    /// segment goes before the resource's path, whose final `/` is
    /// dropped).
    pub fn well_known_path(&self) -> String {
        let path = path_of(&self.resource).trim_end_matches('/');
        format!("/.well-known/oauth-protected-resource{path}")
    }

    /// Where the document is: what goes in `resource_metadata` of the
    /// challenges ([`crate::GuardBuilder::resource_metadata`]).
    pub fn metadata_url(&self) -> String {
        let path = path_of(&self.resource);
        let origin = &self.resource[..self.resource.len() - path.len()];
        format!("{origin}{}", self.well_known_path())
    }

    /// A router serving the document at [`Self::well_known_path`], to
    /// merge into the API's router outside the guard layer.
    pub fn router<S: Clone + Send + Sync + 'static>(&self) -> Router<S> {
        let body = serde_json::to_vec(self).unwrap_or_default();
        Router::new().route(
            &self.well_known_path(),
            get(move || {
                let body = body.clone();
                async move { document(body) }
            }),
        )
    }
}

fn document(body: Vec<u8>) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=3600"),
    );
    response
}

/// The path of an `http(s)` URL already checked (`""` when none).
fn path_of(url: &str) -> &str {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .unwrap_or(url);
    match rest.find('/') {
        Some(i) => &rest[i..],
        None => "",
    }
}

/// An `http(s)` URL with a host, no query or fragment, and nothing that
/// would need escaping inside a quoted challenge parameter.
pub(crate) fn check_url(url: &str) -> Result<(), FetchError> {
    let bad = || {
        FetchError(format!(
            "{url:?} is not an http(s) URL without query or fragment"
        ))
    };
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or_else(bad)?;
    let host = rest.split('/').next().unwrap_or_default();
    if host.is_empty()
        || url
            .chars()
            .any(|c| matches!(c, '?' | '#' | '"' | '\\') || c.is_control() || c == ' ')
    {
        return Err(bad());
    }
    // The path becomes a route of the metadata's router, where these are
    // captures and wildcards (axum refuses some with a panic): the
    // document would be served at other paths, or not at all.
    let route_syntax = rest
        .split('/')
        .skip(1)
        .any(|segment| segment.starts_with([':', '*']) || segment.contains(['{', '}']));
    if route_syntax {
        return Err(FetchError(format!(
            "{url:?}: a path segment that starts with ':' or '*', or holds '{{' or '}}', \
             is not served"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_goes_before_the_resource_path() {
        let root =
            ProtectedResource::new("https://api.example.com", "https://as.example.com").unwrap();
        assert_eq!(
            root.well_known_path(),
            "/.well-known/oauth-protected-resource"
        );
        assert_eq!(
            root.metadata_url(),
            "https://api.example.com/.well-known/oauth-protected-resource"
        );
        let nested =
            ProtectedResource::new("https://example.com/store/", "https://as.example.com").unwrap();
        assert_eq!(
            nested.metadata_url(),
            "https://example.com/.well-known/oauth-protected-resource/store"
        );
        assert!(ProtectedResource::new("https://api.example.com/?x=1", "https://a").is_err());
        assert!(ProtectedResource::new("api.example.com", "https://a").is_err());
        assert!(ProtectedResource::new("https://api.example.com", "https://a\"b").is_err());
        // Route syntax in the path (axum panicked on some when the router
        // was built; others became captures served at any path).
        for path in ["/:v1", "/*rest", "/a{b", "/{tenant}/api", "/v1/x}"] {
            let url = format!("https://api.example.com{path}");
            assert!(ProtectedResource::new(&url, "https://a").is_err(), "{path}");
        }
        let colon = ProtectedResource::new("https://api.example.com:8443/v1:x", "https://a");
        let _: axum::Router = colon.unwrap().router();
    }
}
