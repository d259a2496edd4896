//! Starting with the provider: the app waits for one not up yet, and
//! gives up at once on one that is not a provider.

use std::time::Duration;

use crate::harness::{settings, Provider};

/// Started together with its provider (a `docker compose up`, a reboot),
/// the app waits for it instead of exiting, which its supervisor would
/// answer by starting it again and again.
#[tokio::test]
async fn the_app_waits_for_a_provider_that_is_not_up_yet() {
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = free.local_addr().unwrap();
    drop(free);
    let issuer = format!("http://{address}");
    let discovering = tokio::spawn(web_app::WebApp::discover_when_reachable(settings(&issuer)));
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert!(!discovering.is_finished(), "it waits while nothing answers");
    let provider = Provider::start_at(tokio::net::TcpListener::bind(address).await.unwrap()).await;
    assert_eq!(provider.url, issuer);
    let discovered = tokio::time::timeout(Duration::from_secs(10), discovering)
        .await
        .expect("the app found its provider once it was up")
        .unwrap();
    assert!(discovered.is_ok());
}

/// A provider behind a certificate the app does not trust (a private CA
/// not given, a certificate for another name) is the configuration's
/// fault too: the handshake fails the same way every time.
#[tokio::test]
async fn a_provider_whose_certificate_is_not_trusted_ends_the_start_at_once() {
    let certified = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
    let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![certified.cert.der().clone()],
            rustls::pki_types::PrivatePkcs8KeyDer::from(certified.signing_key.serialize_der())
                .into(),
        )
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let issuer = format!("https://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            // The app refuses the handshake.
            let _ = acceptor.accept(tcp).await;
        }
    });
    let started = tokio::time::timeout(
        Duration::from_secs(5),
        web_app::WebApp::discover_when_reachable(settings(&issuer)),
    )
    .await
    .expect("no wait");
    let Err(error) = started else {
        panic!("a certificate no one vouches for");
    };
    assert!(format!("{error:#}").contains("certificate"), "{error:#}");
}

/// A provider that answers, but not as one (no metadata there: the
/// issuer is mistyped), is the configuration's fault: no waiting.
#[tokio::test]
async fn an_issuer_without_metadata_ends_the_start_at_once() {
    let provider = Provider::start().await;
    let mistyped = format!("{}/realms/nowhere", provider.url);
    let started = tokio::time::timeout(
        Duration::from_secs(5),
        web_app::WebApp::discover_when_reachable(settings(&mistyped)),
    )
    .await
    .expect("no wait");
    let Err(error) = started else {
        panic!("no metadata there");
    };
    let error = error.to_string();
    assert!(error.contains("404"), "{error}");
}
