//! Whom the guard trusts for keys: an issuer behind a private CA once
//! its certificate is given, and plain HTTP only on this host unless
//! allowed.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use tessera_guard::{Guard, Rejection, RemoteJwks};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::remote::{self, jwks, key, token, AUD, ISS};

/// A certificate authority of our own.
struct Ca {
    pem: String,
    issuer: Issuer<'static, KeyPair>,
}

fn ca(name: &str) -> Ca {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    let key = KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    Ca {
        pem: cert.pem(),
        issuer: Issuer::new(params, key),
    }
}

/// Serves `jwks` at any path over TLS, as 127.0.0.1 and `localhost`,
/// under a certificate `ca` signed; counts the requests answered.
async fn tls_jwks(ca: &Ca, jwks: String) -> (SocketAddr, Arc<AtomicUsize>) {
    let key = KeyPair::generate().unwrap();
    let params =
        CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()]).unwrap();
    let cert = params.signed_by(&key, &ca.issuer).unwrap();
    let config = rustls_config(cert.der().to_vec(), key.serialize_der());
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let answered = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&answered);
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let (acceptor, jwks, count) = (acceptor.clone(), jwks.clone(), Arc::clone(&count));
            tokio::spawn(async move {
                // A handshake the client refuses ends here.
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                answer(&mut tls, &jwks).await;
                count.fetch_add(1, Ordering::SeqCst);
            });
        }
    });
    (addr, answered)
}

fn rustls_config(cert: Vec<u8>, key: Vec<u8>) -> tokio_rustls::rustls::ServerConfig {
    use tokio_rustls::rustls;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.into()],
            rustls::pki_types::PrivatePkcs8KeyDer::from(key).into(),
        )
        .unwrap()
}

/// Read one request's head and answer it with `jwks`.
async fn answer(stream: &mut (impl AsyncReadExt + AsyncWriteExt + Unpin), jwks: &str) {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && head.len() < 16 * 1024 {
        if stream.read(&mut byte).await.unwrap_or(0) == 0 {
            return;
        }
        head.push(byte[0]);
    }
    let response = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{jwks}",
        jwks.len()
    );
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
}

fn guard(remote: RemoteJwks) -> Guard {
    remote::guard(remote.cooldown(Duration::ZERO))
}

#[tokio::test]
async fn an_issuer_behind_a_private_ca_is_trusted_once_its_certificate_is_given() {
    let (ours, theirs) = (ca("Tessera test CA"), ca("Another CA"));
    let signer = key();
    let (addr, answered) = tls_jwks(&ours, jwks(&[&signer])).await;
    let token = token(&signer, ISS);
    for host in ["127.0.0.1", "localhost"] {
        let url = format!("https://{host}:{}/jwks.json", addr.port());
        // Mozilla's roots alone do not know our CA: the handshake fails
        // and no key is had.
        let unknown = guard(RemoteJwks::url(&url).unwrap());
        assert_eq!(
            unknown.verify(&token).await.unwrap_err(),
            Rejection::KeysUnavailable,
            "{host}"
        );
        // Another private CA is no better.
        let other = guard(
            RemoteJwks::url(&url)
                .unwrap()
                .root_certificates(theirs.pem.as_bytes())
                .unwrap(),
        );
        assert_eq!(
            other.verify(&token).await.unwrap_err(),
            Rejection::KeysUnavailable,
            "{host}"
        );
        assert_eq!(answered.load(Ordering::SeqCst), 0, "no request was sent");
        // With our CA given (among others), the keys come over TLS.
        let bundle = format!("{}{}", theirs.pem, ours.pem);
        let trusted = guard(
            RemoteJwks::url(&url)
                .unwrap()
                .root_certificates(bundle.as_bytes())
                .unwrap(),
        );
        trusted.verify(&token).await.unwrap();
        assert_eq!(answered.swap(0, Ordering::SeqCst), 1, "{host}");
    }
    // Text that holds no certificate is an error, not an empty trust.
    assert!(RemoteJwks::url("https://127.0.0.1/")
        .unwrap()
        .root_certificates(b"not PEM")
        .is_err());
}

/// The address this host reaches others from, if it has one that is not
/// a loopback address (a UDP socket's connect sends nothing).
fn outward_address() -> Option<IpAddr> {
    let socket = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    socket.connect("192.0.2.1:9").ok()?;
    let ip = socket.local_addr().ok()?.ip();
    (!ip.is_loopback() && !ip.is_unspecified()).then_some(ip)
}

#[tokio::test]
async fn plain_http_reaches_only_this_host_unless_allowed() {
    let Some(ip) = outward_address() else {
        eprintln!("skipped: this host has no address but loopback ones");
        return;
    };
    let signer = key();
    let listener = TcpListener::bind(SocketAddr::new(ip, 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let body = jwks(&[&signer]);
    let answered = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&answered);
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            answer(&mut tcp, &body).await;
            count.fetch_add(1, Ordering::SeqCst);
        }
    });
    let url = format!("http://{addr}/jwks.json");
    let token = token(&signer, ISS);
    // Keys over plain HTTP from another host could be swapped on the way:
    // no guard is built on them (before, it was built, and answered 503
    // to every request), and no request is sent.
    for (issuer, keys) in [
        (ISS.to_owned(), RemoteJwks::url(&url).unwrap()),
        (
            format!("http://{addr}"),
            RemoteJwks::discover(format!("http://{addr}")).unwrap(),
        ),
    ] {
        let refused = Guard::builder(issuer, AUD, keys).build().unwrap_err();
        assert!(refused.to_string().contains("plain HTTP"), "{refused}");
    }
    assert_eq!(answered.load(Ordering::SeqCst), 0);
    // Allowed explicitly, they are fetched.
    let allowed = guard(RemoteJwks::url(&url).unwrap().allow_plain_http().unwrap());
    allowed.verify(&token).await.unwrap();
    assert_eq!(answered.load(Ordering::SeqCst), 1);
}
