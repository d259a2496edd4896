//! Serve an axum [`Router`] on a TCP listener with the limits a public
//! endpoint needs, which `axum::serve` does not set (it installs no timer,
//! so hyper's header timeout never fires):
//!
//! - **header timeout**: a connection must deliver a request's headers
//!   within [`Limits::header_timeout`] of being opened, or of its previous
//!   response. This closes slow-header ("slowloris") and silent connections,
//!   and is also the keep-alive idle timeout (hyper starts the same timer
//!   while a kept-alive connection waits for its next request);
//! - **request timeout**: a request (reading its body included) must be
//!   answered within [`Limits::request_timeout`], or its connection is
//!   closed after a last answer: `408` when its body had not all arrived
//!   (a body trickled a byte at a time cannot hold a connection open; the
//!   request was never acted on, and HTTP clients may send it again), `503`
//!   when it had (the handler was slow: it may have acted, and `408` would
//!   invite clients to send again, which OkHttp and browsers do on their
//!   own — a refresh token presented twice ends its whole family);
//! - **send timeout**: a write to the client may wait at most
//!   [`Limits::send_timeout`] for the client to take bytes, or the
//!   connection is closed: a client that never reads its response (a zero
//!   receive window) cannot hold a connection open. The timer restarts with
//!   every byte sent, so a long event stream to a reading client lives on.
//!   On Linux the kernel also gives up a connection whose sent bytes go
//!   unacknowledged that long (`TCP_USER_TIMEOUT`): a peer that vanished
//!   (its host gone, the flow dropped by a NAT or a firewall) acknowledges
//!   nothing, and a stream of small events to it would fill the kernel's
//!   buffer only after hours, while the kernel's own retries take some
//!   fifteen minutes (`tcp_retries2`);
//! - **connection limit**: at most [`Limits::max_connections`] connections
//!   are open at once. Past it, new connections wait in the kernel's accept
//!   queue until one closes (the timeouts above close silent, slow and idle
//!   ones; a client that keeps its connections busy holds them, and a cap
//!   per address belongs in front, where a proxy's address is not one
//!   client). The default stays under the process's file-descriptor limit,
//!   with headroom for the database and files ([`Limits::for_this_process`]);
//! - **shutdown**: when the shutdown future completes, no connection is
//!   accepted; requests in flight get [`Limits::shutdown_grace`] to finish,
//!   then the connections left are dropped, so that [`serve`] returns with
//!   nothing of the router still alive;
//! - **panics**: a request whose handler (or middleware) panics is
//!   answered `500` and its connection closed, the panic logged; the
//!   server goes on.
//!
//! The defaults are tighter than nginx's (60 s `client_header_timeout`,
//! `client_body_timeout` and `send_timeout`, 75 s `keepalive_timeout`):
//! 30 s each.
//!
//! ```no_run
//! # async fn run(router: axum::Router) -> std::io::Result<()> {
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! let limits = tessera_listen::Limits::for_this_process(64);
//! tessera_listen::serve(listener, router, limits, tessera_listen::shutdown_signal()).await
//! # }
//! ```

#![forbid(unsafe_code)]
#![deny(missing_docs)]

use std::future::Future;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use axum::body::HttpBody;
use axum::extract::{ConnectInfo, Request};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use futures_util::FutureExt as _;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tower::ServiceExt;

/// File descriptors kept free for everything but client connections: the
/// database's connections, its files, logs, outgoing requests.
pub const RESERVED_DESCRIPTORS: usize = 64;

/// The largest request head (request line and headers) read: room for
/// a 16 KiB bearer token and the cookies of a busy site.
pub const MAX_HEAD: usize = 64 * 1024;

/// The limits a listener enforces.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Time allowed for a request's headers, from the connection's opening
    /// or its previous response (so also the keep-alive idle timeout).
    pub header_timeout: Duration,
    /// Time allowed to answer a request, reading its body included.
    pub request_timeout: Duration,
    /// Time a write may wait for the client to take bytes.
    pub send_timeout: Duration,
    /// Connections open at once at most.
    pub max_connections: usize,
    /// Time requests in flight get to finish once shutdown begins.
    pub shutdown_grace: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            header_timeout: Duration::from_secs(30),
            request_timeout: Duration::from_secs(30),
            send_timeout: Duration::from_secs(30),
            max_connections: 1024 - RESERVED_DESCRIPTORS,
            shutdown_grace: Duration::from_secs(30),
        }
    }
}

impl Limits {
    /// The default timeouts, and a connection limit under this process's
    /// file-descriptor limit: its soft limit is first raised to the hard
    /// one (as most servers do at start), then `reserved` descriptors plus
    /// [`RESERVED_DESCRIPTORS`] are kept free (pass the database pool's size
    /// as `reserved`).
    pub fn for_this_process(reserved: usize) -> Limits {
        let descriptors = raise_descriptor_limit();
        Limits {
            max_connections: descriptors
                .saturating_sub(reserved.saturating_add(RESERVED_DESCRIPTORS))
                .max(1),
            ..Limits::default()
        }
    }
}

impl Limits {
    /// The timeouts cut to [`LONGEST_TIMEOUT`]: hyper and the write
    /// timeout add theirs to the clock's now, which panics past what an
    /// instant holds, in every connection.
    fn bounded(self) -> Limits {
        Limits {
            // tokio's semaphore counts at most this many, and panics past it.
            max_connections: self
                .max_connections
                .min(tokio::sync::Semaphore::MAX_PERMITS),
            header_timeout: self.header_timeout.min(LONGEST_TIMEOUT),
            request_timeout: self.request_timeout.min(LONGEST_TIMEOUT),
            send_timeout: self.send_timeout.min(LONGEST_TIMEOUT),
            ..self
        }
    }
}

/// The longest any timeout of [`Limits`] is taken as: a longer one is
/// this long.
pub const LONGEST_TIMEOUT: Duration = Duration::from_secs(24 * 3600);

/// Raise the soft file-descriptor limit to the hard one; returns the soft
/// limit in force afterwards.
fn raise_descriptor_limit() -> usize {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let limit = getrlimit(Resource::Nofile);
    let raised = match (limit.current, limit.maximum) {
        (Some(current), Some(maximum)) if current < maximum => {
            let wanted = Rlimit {
                current: Some(maximum),
                maximum: Some(maximum),
            };
            match setrlimit(Resource::Nofile, wanted) {
                Ok(()) => Some(maximum),
                Err(e) => {
                    tracing::warn!(error = %e, "could not raise the file-descriptor limit");
                    Some(current)
                }
            }
        }
        (current, _) => current,
    };
    // No limit at all: use a generous finite number.
    raised.map_or(65_536, |n| usize::try_from(n).unwrap_or(usize::MAX))
}

/// Serve `router` on `listener` with `limits` until `shutdown` completes;
/// then stop accepting, let requests in flight finish
/// ([`Limits::shutdown_grace`] at most), drop the connections left and
/// return. Handlers see the peer's address as `ConnectInfo<SocketAddr>`.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let limits = limits.bounded();
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let graceful = GracefulShutdown::new();
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        // A request head larger than this is 431: hyper's own bound is
        // about 400 KiB, which a client trickling heads on many
        // connections could hold each for the header timeout.
        .max_header_size(MAX_HEAD)
        .keep_alive(true);
    // Every connection's task, so that none outlives `serve`: each holds
    // a clone of the router, and with it whatever state the caller will
    // tear down once `serve` returns.
    let mut connections = tokio::task::JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        while connections.try_join_next().is_some() {}
        // A free slot first: at the limit, connections wait in the kernel's
        // queue rather than take a descriptor here.
        let slot = tokio::select! {
            slot = Arc::clone(&slots).acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break,
            },
            () = &mut shutdown => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of descriptors (EMFILE) or a connection reset
                    // before it was accepted: wait a little, never spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        #[cfg(any(target_os = "linux", target_os = "android"))]
        {
            let ms = u32::try_from(limits.send_timeout.as_millis()).unwrap_or(u32::MAX);
            let _ = rustix::net::sockopt::set_tcp_user_timeout(&stream, ms);
        }
        let mut stream = tokio_io_timeout::TimeoutStream::new(stream);
        stream.set_write_timeout(Some(limits.send_timeout));
        let router = router.clone();
        let request_timeout = limits.request_timeout;
        let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
            answer_within(router.clone(), request, peer, request_timeout)
        });
        let connection = builder.serve_connection(TokioIo::new(Box::pin(stream)), service);
        let connection = graceful.watch(connection);
        connections.spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, %peer, "connection ended with an error");
            }
            drop(slot);
        });
    }
    drop(listener);
    let grace = limits.shutdown_grace;
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            connections = connections.len(),
            "requests still running {grace:?} after shutdown began; closing their connections"
        );
    }
    connections.abort_all();
    while connections.join_next().await.is_some() {}
    Ok(())
}

/// Completes on Ctrl-C or, on Unix, SIGTERM: the usual `shutdown` for
/// [`serve`]. A signal that cannot be listened for never fires (rather
/// than stopping the server at once).
pub async fn shutdown_signal() {
    let interrupt = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => {}
        () = terminate => {}
    }
}

/// One request, with the peer's address, answered by `router` within
/// `limit` (see the crate docs): else `408` for a request whose body had
/// not all arrived, `503` for one whose handler was slow; either way the
/// connection is closed after it. (A service of its own around the
/// router, not a middleware inside it: no boxed future, and the body is
/// boxed once, by the router, as it would be anyway.)
async fn answer_within(
    router: Router,
    request: hyper::Request<Incoming>,
    peer: SocketAddr,
    limit: Duration,
) -> Result<Response, std::convert::Infallible> {
    let (mut parts, body) = request.into_parts();
    parts.extensions.insert(ConnectInfo(peer));
    let arrived = Arc::new(AtomicBool::new(body.is_end_stream()));
    let body = Arrival {
        body,
        arrived: Arc::clone(&arrived),
    };
    let answer = AssertUnwindSafe(router.oneshot(Request::from_parts(parts, body))).catch_unwind();
    match tokio::time::timeout(limit, answer).await {
        Ok(Ok(answered)) => answered,
        Ok(Err(panic)) => {
            // A bug, never the client's doing: answered 500 and said,
            // where the panic used to end the connection's task, and the
            // client got no answer at all (a token request could not tell
            // a failure from a lost reply) and the log no word. The state
            // a handler shares is behind locks that survive a panic, or
            // atomics; the connection is closed all the same.
            let message = panic
                .downcast_ref::<&str>()
                .copied()
                .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
                .unwrap_or("(no message)");
            tracing::error!(%peer, panic = message, "a request's handler panicked (500)");
            Ok(closing(StatusCode::INTERNAL_SERVER_ERROR))
        }
        Err(_) => {
            // A slow handler is this server's trouble, said; a body that
            // did not arrive is the client's, and common (a slow-body
            // attack would fill the log with it).
            let status = if arrived.load(Ordering::Acquire) {
                tracing::warn!(%peer, ?limit, "a request was not answered in time (503)");
                StatusCode::SERVICE_UNAVAILABLE
            } else {
                tracing::debug!(%peer, ?limit, "a request's body did not arrive in time (408)");
                StatusCode::REQUEST_TIMEOUT
            };
            Ok(closing(status))
        }
    }
}

/// A bodiless answer of the listener's own, after which the connection
/// is closed; never kept by a cache.
fn closing(status: StatusCode) -> Response {
    let mut response = status.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// A request body that records when all of it has arrived.
struct Arrival {
    body: Incoming,
    arrived: Arc<AtomicBool>,
}

impl HttpBody for Arrival {
    type Data = axum::body::Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        let polled = std::pin::Pin::new(&mut self.body).poll_frame(cx);
        if matches!(polled, std::task::Poll::Ready(None)) || self.body.is_end_stream() {
            self.arrived.store(true, Ordering::Release);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}
