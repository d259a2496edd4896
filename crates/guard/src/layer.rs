//! The tower layer that checks bearer tokens, and the axum extractor that
//! hands the verified token to handlers.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::extract::FromRequestParts;
use axum::response::{IntoResponse, Response};
use http::request::Parts;
use http::{header, Request};
use tower::{Layer, Service};

use crate::{AccessToken, Guard, Rejection};

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

/// The future of [`GuardService`]: the inner service's response, or the
/// refusal.
pub struct ResponseFuture<F> {
    state: State<F>,
}

enum State<F> {
    Inner(Pin<Box<F>>),
    Refused(Option<Rejection>),
}

impl<F> std::fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl<F> ResponseFuture<F> {
    pub(crate) fn inner(future: F) -> ResponseFuture<F> {
        ResponseFuture {
            state: State::Inner(Box::pin(future)),
        }
    }

    pub(crate) fn refused(rejection: Rejection) -> ResponseFuture<F> {
        ResponseFuture {
            state: State::Refused(Some(rejection)),
        }
    }
}

impl<F, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response, E>>,
{
    type Output = Result<Response, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        match &mut this.state {
            State::Inner(future) => future.as_mut().poll(cx),
            State::Refused(rejection) => Poll::Ready(Ok(rejection.take().map_or_else(
                || Rejection::Missing.into_response(),
                IntoResponse::into_response,
            ))),
        }
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
    let (scheme, token) = value.split_once(' ').ok_or(Rejection::Malformed)?;
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
    S: Service<Request<B>, Response = Response>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> ResponseFuture<S::Future> {
        let verified = bearer(request.headers()).and_then(|token| self.guard.verify(token));
        match verified {
            Ok(token) => {
                request.extensions_mut().insert(token);
                ResponseFuture::inner(self.inner.call(request))
            }
            Err(rejection) => ResponseFuture::refused(rejection),
        }
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
