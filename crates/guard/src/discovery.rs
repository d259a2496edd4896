//! Finding an issuer's metadata, and the HTTP client the guard fetches
//! with: shared by [`crate::RemoteJwks`] and [`crate::RevocationFeed`].

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value};

/// Why keys, metadata or a feed could not be had (or a setting that
/// names them is wrong).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchError(pub String);

impl std::fmt::Display for FetchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for FetchError {}

/// `issuer`'s metadata (RFC 8414 §3, then OpenID Connect Discovery, as
/// RFC 8414 §5 says), whose `issuer` must be `issuer` exactly (RFC 8414
/// §3.3: a trailing `/` counts), with the URL it came from.
pub(crate) async fn metadata(
    client: &reqwest::Client,
    issuer: &str,
    max_bytes: usize,
) -> Result<(String, Map<String, Value>), FetchError> {
    let (oauth, openid) = metadata_urls(issuer)?;
    match metadata_at(client, &oauth, issuer, max_bytes).await {
        Ok(found) => Ok((oauth, found)),
        Err(first) => match metadata_at(client, &openid, issuer, max_bytes).await {
            Ok(found) => Ok((openid, found)),
            Err(second) => Err(FetchError(format!("no usable metadata: {first}; {second}"))),
        },
    }
}

/// The metadata at `url`, which must be `issuer`'s.
async fn metadata_at(
    client: &reqwest::Client,
    url: &str,
    issuer: &str,
    max_bytes: usize,
) -> Result<Map<String, Value>, FetchError> {
    let (body, _) = get(client, url, max_bytes).await?;
    let metadata: Map<String, Value> =
        serde_json::from_str(&body).map_err(|e| FetchError(format!("{url}: {e}")))?;
    if metadata.get("issuer").and_then(Value::as_str) != Some(issuer) {
        return Err(FetchError(format!("{url}: issuer is not {issuer:?}")));
    }
    Ok(metadata)
}

/// GET `url`: 200, at most `max_bytes` of UTF-8, with the headers.
pub(crate) async fn get(
    client: &reqwest::Client,
    url: &str,
    max_bytes: usize,
) -> Result<(String, http::HeaderMap), FetchError> {
    let fail = |e: &dyn std::fmt::Display| FetchError(format!("{url}: {e}"));
    let mut response = client.get(url).send().await.map_err(|e| fail(&e))?;
    if response.status() != reqwest::StatusCode::OK {
        return Err(fail(&response.status()));
    }
    let headers = response.headers().clone();
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| fail(&e))? {
        if body.len() + chunk.len() > max_bytes {
            return Err(fail(&format!("larger than {max_bytes} bytes")));
        }
        body.extend_from_slice(&chunk);
    }
    let text = String::from_utf8(body).map_err(|e| fail(&e))?;
    Ok((text, headers))
}

/// Where `issuer`'s metadata may be: RFC 8414 §3.1 (the well-known path
/// inserted between the host and the issuer's path, whose final `/` is
/// dropped) and OpenID Connect Discovery §4 (appended to the issuer, its
/// final `/` dropped).
pub(crate) fn metadata_urls(issuer: &str) -> Result<(String, String), FetchError> {
    let bad = || FetchError(format!("issuer {issuer:?} is not an http(s) URL"));
    let rest = issuer
        .strip_prefix("https://")
        .map(|r| ("https://", r))
        .or_else(|| issuer.strip_prefix("http://").map(|r| ("http://", r)));
    let (scheme, rest) = rest.ok_or_else(bad)?;
    if rest.contains(['?', '#']) {
        return Err(bad());
    }
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    if authority.is_empty() {
        return Err(bad());
    }
    let path = path.trim_end_matches('/');
    Ok((
        format!("{scheme}{authority}/.well-known/oauth-authorization-server{path}"),
        format!("{scheme}{authority}{path}/.well-known/openid-configuration"),
    ))
}

/// An HTTP client on rustls with the aws-lc-rs provider (the crypto
/// library of the rest of Tessera) and the webpki roots.
pub(crate) fn client(timeout: Duration) -> Result<reqwest::Client, FetchError> {
    builder()?
        .timeout(timeout)
        .build()
        .map_err(|e| FetchError(format!("HTTP client: {e}")))
}

/// A client for long responses (a feed): only connecting is bounded in
/// time; the reader bounds the gaps between events itself.
pub(crate) fn streaming_client(connect: Duration) -> Result<reqwest::Client, FetchError> {
    builder()?
        .connect_timeout(connect)
        .build()
        .map_err(|e| FetchError(format!("HTTP client: {e}")))
}

fn builder() -> Result<reqwest::ClientBuilder, FetchError> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| FetchError(format!("TLS: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .redirect(reqwest::redirect::Policy::custom(
            |attempt| match redirect_refused(attempt.previous(), attempt.url()) {
                Some(why) => attempt.error(why),
                None => attempt.follow(),
            },
        )))
}

/// Why a redirect to `next` after `previous` (the URLs fetched so far) is
/// not followed: more than three, or from https to anything else (keys
/// and revocations asked for over TLS never come over plain HTTP).
fn redirect_refused(previous: &[reqwest::Url], next: &reqwest::Url) -> Option<&'static str> {
    if previous.len() > 3 {
        return Some("more than three redirects");
    }
    let from_tls = previous.iter().any(|url| url.scheme() == "https");
    (from_tls && next.scheme() != "https").then_some("a redirect from https to plain http")
}

#[cfg(test)]
mod tests {
    use super::{metadata_urls, redirect_refused};

    #[test]
    fn redirects_never_leave_tls_and_stop_after_three() {
        let url = |u: &str| reqwest::Url::parse(u).unwrap();
        let tls = [url("https://auth.example.com/jwks")];
        assert_eq!(
            redirect_refused(&tls, &url("https://cdn.example.com/jwks")),
            None
        );
        assert!(redirect_refused(&tls, &url("http://cdn.example.com/jwks")).is_some());
        // Plain HTTP (a development issuer) may move within plain HTTP or
        // up to TLS.
        let plain = [url("http://127.0.0.1:8080/jwks")];
        assert_eq!(
            redirect_refused(&plain, &url("http://127.0.0.1:8081/jwks")),
            None
        );
        assert_eq!(
            redirect_refused(&plain, &url("https://auth.example.com/jwks")),
            None
        );
        let four = [
            url("http://a/1"),
            url("http://a/2"),
            url("http://a/3"),
            url("http://a/4"),
        ];
        assert!(redirect_refused(&four, &url("http://a/5")).is_some());
    }

    #[test]
    fn metadata_is_looked_for_where_both_specifications_put_it() {
        let urls = |i: &str| metadata_urls(i).unwrap();
        assert_eq!(
            urls("https://auth.example.com"),
            (
                "https://auth.example.com/.well-known/oauth-authorization-server".into(),
                "https://auth.example.com/.well-known/openid-configuration".into()
            )
        );
        // Auth0-style: a trailing slash.
        assert_eq!(
            urls("https://tenant.auth0.com/"),
            (
                "https://tenant.auth0.com/.well-known/oauth-authorization-server".into(),
                "https://tenant.auth0.com/.well-known/openid-configuration".into()
            )
        );
        // Entra ID / Keycloak style: a path.
        assert_eq!(
            urls("https://login.example.com/tenant-id/v2.0"),
            (
                "https://login.example.com/.well-known/oauth-authorization-server/tenant-id/v2.0"
                    .into(),
                "https://login.example.com/tenant-id/v2.0/.well-known/openid-configuration".into()
            )
        );
        assert!(metadata_urls("auth.example.com").is_err());
        assert!(metadata_urls("https://").is_err());
        assert!(metadata_urls("https://a.example/?x").is_err());
    }
}
