//! Per-route scope requirements.

use std::sync::Arc;
use std::task::{Context, Poll};

use axum::response::Response;
use http::Request;
use tower::{Layer, Service};

use crate::layer::{ResourceMetadata, ResponseFuture};
use crate::{AccessToken, Rejection};

/// Requires scopes of the token [`crate::GuardLayer`] verified: any one of
/// a list, or all of them. Put it inside the guard layer (on a route).
#[derive(Clone, Debug)]
pub struct RequireScope {
    scopes: Arc<[String]>,
    all: bool,
}

impl RequireScope {
    /// At least one of `scopes`.
    ///
    /// # Panics
    ///
    /// When `scopes` is empty or one is not an RFC 6749 scope token.
    pub fn any<I, S>(scopes: I) -> RequireScope
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        RequireScope::new(scopes, false)
    }

    /// Every one of `scopes`.
    ///
    /// # Panics
    ///
    /// When `scopes` is empty or one is not an RFC 6749 scope token.
    pub fn all<I, S>(scopes: I) -> RequireScope
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        RequireScope::new(scopes, true)
    }

    /// # Panics
    ///
    /// When `scopes` is empty or one is not an RFC 6749 scope token
    /// (visible ASCII but `"` and `\`): a mistake in the program, which
    /// would otherwise refuse every token or answer a challenge clients
    /// cannot read.
    fn new<I, S>(scopes: I, all: bool) -> RequireScope
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let scopes: Arc<[String]> = scopes.into_iter().map(Into::into).collect();
        assert!(!scopes.is_empty(), "RequireScope needs at least one scope");
        for scope in scopes.iter() {
            let token = !scope.is_empty()
                && scope
                    .bytes()
                    .all(|b| matches!(b, 0x21 | 0x23..=0x5B | 0x5D..=0x7E));
            assert!(
                token,
                "RequireScope: {scope:?} is not a scope token (RFC 6749 §3.3)"
            );
        }
        RequireScope { scopes, all }
    }

    fn allows(&self, token: &AccessToken) -> bool {
        if self.all {
            self.scopes.iter().all(|s| token.has_scope(s))
        } else {
            self.scopes.iter().any(|s| token.has_scope(s))
        }
    }
}

impl<S> Layer<S> for RequireScope {
    type Service = RequireScopeService<S>;

    fn layer(&self, inner: S) -> RequireScopeService<S> {
        RequireScopeService {
            inner,
            required: self.clone(),
        }
    }
}

/// The service [`RequireScope`] makes.
#[derive(Clone, Debug)]
pub struct RequireScopeService<S> {
    inner: S,
    required: RequireScope,
}

impl<S, B> Service<Request<B>> for RequireScopeService<S>
where
    S: Service<Request<B>, Response = Response>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = Response;
    type Error = S::Error;
    type Future = ResponseFuture<S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> ResponseFuture<S::Error> {
        let refusal = match request.extensions().get::<Arc<AccessToken>>() {
            None => Some(Rejection::Missing),
            Some(token) if !self.required.allows(token) => Some(Rejection::InsufficientScope {
                scope: self.required.scopes.join(" "),
            }),
            Some(_) => None,
        };
        match refusal {
            Some(rejection) => {
                ResponseFuture::refused(rejection, request.extensions().get::<ResourceMetadata>())
            }
            None => ResponseFuture::new(self.inner.call(request)),
        }
    }
}
