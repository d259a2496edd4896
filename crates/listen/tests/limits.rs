//! The listener's limits against real sockets: silent, slow-header,
//! idle and trickled-body connections are closed; new clients are served
//! while hundreds of slow ones are open; the connection limit holds.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::ConnectInfo;
use axum::routing::{get, post};
use axum::Router;
use tessera_listen::{serve, Limits};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

async fn start(limits: Limits) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let router = Router::new()
        .route("/", get(|| async { "ok" }))
        .route(
            "/peer",
            get(|ConnectInfo(peer): ConnectInfo<SocketAddr>| async move { peer.to_string() }),
        )
        .route("/echo", post(|body: Bytes| async move { body }));
    tokio::spawn(serve(listener, router, limits, std::future::pending()));
    address
}

fn limits(header: u64, request: u64, connections: usize) -> Limits {
    Limits {
        header_timeout: Duration::from_secs(header),
        request_timeout: Duration::from_secs(request),
        max_connections: connections,
    }
}

/// GET `path` on a new connection; the status line and body.
async fn get_once(address: SocketAddr, path: &str) -> String {
    let mut stream = TcpStream::connect(address).await.unwrap();
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.unwrap();
    answer
}

/// Read until the peer closes; how long that took.
async fn closed_after(stream: &mut TcpStream, within: Duration) -> Duration {
    let started = Instant::now();
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout(within, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return started.elapsed(),
            Ok(Ok(_)) => continue,
            Err(_) => panic!("still open after {within:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_and_idle_connections_are_closed() {
    let address = start(limits(1, 5, 100)).await;
    // Never sends a byte.
    let mut silent = TcpStream::connect(address).await.unwrap();
    // One request, then idle on keep-alive.
    let mut idle = TcpStream::connect(address).await.unwrap();
    idle.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut first = [0u8; 256];
    let n = idle.read(&mut first).await.unwrap();
    assert!(first[..n].starts_with(b"HTTP/1.1 200"));
    let silent_for = closed_after(&mut silent, Duration::from_secs(5)).await;
    let idle_for = closed_after(&mut idle, Duration::from_secs(5)).await;
    assert!(silent_for >= Duration::from_millis(900), "{silent_for:?}");
    assert!(idle_for < Duration::from_secs(3), "{idle_for:?}");
    // The handler sees the peer's address.
    assert!(get_once(address, "/peer").await.contains("127.0.0.1:"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_headers_are_cut_and_new_clients_still_served() {
    let address = start(limits(2, 5, 1000)).await;
    // 300 connections sending their headers a byte at a time.
    let mut slow = Vec::new();
    for _ in 0..300 {
        let mut stream = TcpStream::connect(address).await.unwrap();
        stream
            .write_all(b"GET / HTTP/1.1\r\nX-Slow: ")
            .await
            .unwrap();
        slow.push(stream);
    }
    let drip = tokio::spawn(async move {
        let mut closed = 0;
        for _ in 0..20 {
            tokio::time::sleep(Duration::from_millis(250)).await;
            closed = 0;
            for stream in &mut slow {
                if stream.write_all(b"a").await.is_err() {
                    closed += 1;
                }
            }
        }
        closed
    });
    // Meanwhile a normal client is served at once.
    for _ in 0..5 {
        let started = Instant::now();
        let answer = get_once(address, "/").await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "{:?}",
            started.elapsed()
        );
    }
    // Five seconds of dripping, against a two-second header limit.
    let closed = drip.await.unwrap();
    assert_eq!(closed, 300, "slow-header connections still open");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trickled_body_gets_408() {
    let address = start(limits(2, 1, 100)).await;
    let mut stream = TcpStream::connect(address).await.unwrap();
    stream
        .write_all(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    let mut answer = Vec::new();
    let mut buf = [0u8; 256];
    loop {
        // A byte every 200 ms: each read succeeds, the whole never does.
        let _ = stream.write_all(b"x").await;
        match tokio::time::timeout(Duration::from_millis(200), stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => answer.extend_from_slice(&buf[..n]),
            Err(_) => {}
        }
        assert!(started.elapsed() < Duration::from_secs(5), "never cut");
    }
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_connection_limit_holds_and_frees() {
    let address = start(limits(1, 5, 20)).await;
    // Twenty silent connections take every slot.
    let mut silent = Vec::new();
    for _ in 0..20 {
        silent.push(TcpStream::connect(address).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    // The next client waits in the accept queue, then is served once the
    // header timeout frees the slots: after about a second, not before.
    let started = Instant::now();
    let answer = tokio::time::timeout(Duration::from_secs(5), get_once(address, "/"))
        .await
        .expect("never served");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(500),
        "the limit did not hold: {waited:?}"
    );
    drop(silent);
}
