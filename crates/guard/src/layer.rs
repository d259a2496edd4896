//! The tower layer that checks bearer tokens, and the axum extractor that
//! hands the verified token to handlers.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::extract::FromRequestParts;
use axum::response::Response;
use http::request::Parts;
use http::{header, Request};
use tower::{Layer, Service};

use crate::{AccessToken, Guard, Rejection};

/// The resource's metadata URL, handed to [`crate::RequireScope`] with
/// the verified token so its `403` names it too.
#[derive(Clone, Debug)]
pub(crate) struct ResourceMetadata(pub(crate) Arc<str>);

/// Checks the bearer token of every request; see the crate docs.
#[derive(Clone, Debug)]
pub struct GuardLayer {
    guard: Guard,
}

impl GuardLayer {
    /// A layer that checks tokens with `guard`.
    pub fn new(guard: Guard) -> GuardLayer {
        GuardLayer { guard }
    }
}

impl<S> Layer<S> for GuardLayer {
    type Service = GuardService<S>;

    fn layer(&self, inner: S) -> GuardService<S> {
        GuardService {
            inner,
            guard: self.guard.clone(),
        }
    }
}

/// The service [`GuardLayer`] makes.
#[derive(Clone, Debug)]
pub struct GuardService<S> {
    inner: S,
    guard: Guard,
}

/// The future of [`GuardService`] (and of
/// [`crate::RequireScopeService`]): the inner service's response, or the
/// refusal.
pub struct ResponseFuture<E> {
    inner: Pin<Box<dyn Future<Output = Result<Response, E>> + Send>>,
}

impl<E> std::fmt::Debug for ResponseFuture<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl<E> ResponseFuture<E> {
    pub(crate) fn new(
        future: impl Future<Output = Result<Response, E>> + Send + 'static,
    ) -> ResponseFuture<E> {
        ResponseFuture {
            inner: Box::pin(future),
        }
    }

    pub(crate) fn refused(
        rejection: Rejection,
        resource_metadata: Option<&ResourceMetadata>,
    ) -> ResponseFuture<E>
    where
        E: Send + 'static,
    {
        let url = resource_metadata.map(|m| &*m.0);
        ResponseFuture::new(std::future::ready(Ok(rejection.response(url))))
    }
}

impl<E> Future for ResponseFuture<E> {
    type Output = Result<Response, E>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.inner.as_mut().poll(cx)
    }
}

/// The token of an `Authorization` header: `Bearer <token>`, the scheme
/// in any case, exactly one space-free token.
fn bearer(parts: &http::HeaderMap) -> Result<&str, Rejection> {
    let mut values = parts.get_all(header::AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return Err(Rejection::Missing);
    };
    if values.next().is_some() {
        return Err(Rejection::Malformed);
    }
    let value = value.to_str().map_err(|_| Rejection::Malformed)?;
    // Another scheme, with or without credentials (`Negotiate`, `Basic
    // …`), is no bearer token: answered as none was sent (RFC 6750
    // §3.1), not as a malformed one.
    let (scheme, token) = value.split_once(' ').unwrap_or((value, ""));
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(Rejection::Missing);
    }
    let token = token.trim();
    if token.is_empty() || token.contains(' ') {
        return Err(Rejection::Malformed);
    }
    Ok(token)
}

impl<S, B> Service<Request<B>> for GuardService<S>
where
    S: Service<Request<B>, Response = Response> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    B: Send + 'static,
{
    type Response = Response;
    type Error = S::Error;
    type Future = ResponseFuture<S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> ResponseFuture<S::Error> {
        let metadata = self
            .guard
            .resource_metadata()
            .cloned()
            .map(ResourceMetadata);
        let token = match bearer(request.headers()) {
            Ok(token) => token.to_owned(),
            Err(rejection) => return ResponseFuture::refused(rejection, metadata.as_ref()),
        };
        // The service that was polled ready goes into the future; a clone
        // stays for the next call (the usual tower pattern).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let guard = self.guard.clone();
        ResponseFuture::new(async move {
            match guard.verify(&token).await {
                Ok(verified) => {
                    request.extensions_mut().insert(verified);
                    if let Some(metadata) = metadata {
                        request.extensions_mut().insert(metadata);
                    }
                    inner.call(request).await
                }
                Err(rejection) => Ok(rejection.response(metadata.as_ref().map(|m| &*m.0))),
            }
        })
    }
}

impl<S: Send + Sync> FromRequestParts<S> for AccessToken {
    type Rejection = Rejection;

    /// The token [`GuardLayer`] verified. A route outside the layer gets
    /// 401, never an unchecked token.
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<AccessToken, Rejection> {
        parts
            .extensions
            .get::<Arc<AccessToken>>()
            .map(|t| AccessToken::clone(t))
            .ok_or(Rejection::Missing)
    }
}
