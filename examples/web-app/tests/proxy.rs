//! The app's requests to a provider on loopback never go through the
//! proxy the environment names. A test binary of its own: it sets
//! `HTTP_PROXY` for the whole process.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "it/harness.rs"]
#[allow(dead_code)]
mod harness;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// With `HTTP_PROXY` set (a corporate host, a CI runner, a container), the
/// plain-HTTP requests to a provider on this host (its metadata, then the
/// code exchanges, refreshes and userinfo through the same client) go to
/// it directly. Before, reqwest sent them to the proxy, across the
/// network in the clear with the client secret and tokens, and whoever
/// sat there could rewrite the metadata.
#[test]
fn loopback_is_reached_directly_whatever_the_environment_proxy() {
    let proxy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let proxy_address = proxy.local_addr().unwrap();
    // Before any other thread of the test runs: the environment is the
    // process's.
    std::env::set_var("HTTP_PROXY", format!("http://{proxy_address}"));
    std::env::set_var("ALL_PROXY", format!("http://{proxy_address}"));
    let proxied = Arc::new(AtomicUsize::new(0));
    std::thread::spawn({
        let proxied = Arc::clone(&proxied);
        move || {
            // Anything that comes is counted and refused.
            for connection in proxy.incoming() {
                proxied.fetch_add(1, Ordering::SeqCst);
                drop(connection);
            }
        }
    });
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let provider = harness::Provider::start().await;
        let discovered = web_app::WebApp::discover(harness::settings(&provider.url)).await;
        assert!(discovered.is_ok(), "{:?}", discovered.err());
    });
    assert_eq!(
        proxied.load(Ordering::SeqCst),
        0,
        "a request went through the proxy"
    );
}
