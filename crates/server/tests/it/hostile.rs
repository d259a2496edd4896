//! Hostile requests at the edge: control characters in identifiers, two
//! `Authorization` headers, bodies too large to read. Each gets its 4xx,
//! never a 500 and never a wait.

use std::time::Duration;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use base64_simd::STANDARD;
use tessera_jose::{jwt, Algorithm, Claims, JwkSet, NumericDate, SigningKey};
use tessera_server::store::clients::{self, GrantType, NewClient};
use tessera_server::store::Scopes;

use crate::{both_backends, Backend, Harness, Reply, ISSUER};

both_backends!(
    control_characters_are_refused_at_the_edge,
    two_authorization_headers_are_refused,
    oversized_bodies_are_refused_with_413
);

async fn admin_token(h: &Harness) -> String {
    let (id, secret) = h
        .client(&[GrantType::ClientCredentials], "tessera:admin")
        .await;
    h.client_credentials_token(&id, &secret).await
}

async fn jwt_bearer(h: &Harness, assertion: &str) -> Reply {
    h.post(
        "/oauth2/token",
        &[
            ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
            ("assertion", assertion),
        ],
        None,
    )
    .await
}

fn assert_invalid_request(r: &Reply, what: &str) {
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{what}: {}", r.text);
    assert_eq!(r.error(), "invalid_request", "{what}: {}", r.text);
}

async fn control_characters_are_refused_at_the_edge(backend: Backend) {
    let Some(h) = Harness::new(backend).await else {
        return;
    };
    let public = h.public_client("read").await;
    h.user("alice", "correct horse", "read").await;
    let nul_client = [
        ("grant_type", "client_credentials"),
        ("client_id", "a\0b"),
        ("client_secret", "x"),
    ];
    assert_invalid_request(
        &h.post("/oauth2/token", &nul_client, None).await,
        "client_id",
    );
    let r = h
        .post(
            "/oauth2/token",
            &[("grant_type", "client_credentials")],
            Some(("a\0b", "x")),
        )
        .await;
    assert_invalid_request(&r, "Basic credentials");
    assert_invalid_request(
        &h.login(&public, "al\0ice", "correct horse").await,
        "username",
    );
    // A password may hold anything; it is simply wrong here.
    let r = h.login(&public, "alice", "correct\0horse").await;
    assert_eq!(r.error(), "invalid_grant", "{}", r.text);

    // jwt-bearer: `sub` and `jti` come from a signed assertion.
    let key = SigningKey::generate(Algorithm::ES256)
        .unwrap()
        .with_thumbprint_kid()
        .unwrap();
    let issuer = clients::add(
        &h.db,
        NewClient {
            name: "issuer".into(),
            grants: vec![GrantType::JwtBearer],
            scopes: Scopes::parse("read").unwrap(),
            jwks: Some(
                JwkSet::new(vec![key.verifying_key().unwrap().to_public_jwk().unwrap()]).to_json(),
            ),
            ..NewClient::default()
        },
        tessera_server::store::audit::InChange::none(),
    )
    .await
    .unwrap()
    .client_id;
    for (sub, jti) in [("al\0ice", "j-1"), ("alice", "j\u{0}2"), ("alice", "j\n3")] {
        let claims = Claims::new()
            .issuer(issuer.as_str())
            .subject(sub)
            .audience(format!("{ISSUER}/oauth2/token"))
            .jwt_id(jti)
            .expires_at(NumericDate::now().plus(Duration::from_secs(60)));
        let r = jwt_bearer(&h, &jwt::sign(&claims, &key).unwrap()).await;
        assert_eq!(
            r.status,
            StatusCode::BAD_REQUEST,
            "{sub:?} {jti:?}: {}",
            r.text
        );
        assert_eq!(r.error(), "invalid_grant", "{}", r.text);
    }
    // An assertion whose unverified `iss` holds a NUL names no client.
    let claims = Claims::new()
        .issuer("iss\0uer")
        .subject("alice")
        .audience(ISSUER)
        .jwt_id("j-4")
        .expires_at(NumericDate::now().plus(Duration::from_secs(60)));
    let r = jwt_bearer(&h, &jwt::sign(&claims, &key).unwrap()).await;
    assert_eq!(r.error(), "invalid_grant", "{}", r.text);

    // The admin API: a path segment and the audit filter.
    let admin = admin_token(&h).await;
    for (method, path) in [
        ("POST", "/admin/users/al%00ice/disable"),
        ("DELETE", "/admin/clients/a%00b"),
        ("GET", "/admin/audit?event=token%00issued"),
        ("GET", "/admin/audit?event=token%0Aissued"),
    ] {
        let r = h
            .send(
                Request::builder()
                    .method(method)
                    .uri(path)
                    .header(header::AUTHORIZATION, format!("Bearer {admin}"))
                    .body(Body::empty())
                    .unwrap(),
            )
            .await;
        assert_invalid_request(&r, path);
    }
    // Refused before the sign-in routes' layers, a person's page still
    // answers with what every sign-in answer carries.
    let r = h.get("/oauth2/authorize?client_id=a%00b").await;
    assert_invalid_request(&r, "/oauth2/authorize");
    for (name, value) in [
        ("x-frame-options", "DENY"),
        ("x-content-type-options", "nosniff"),
        ("referrer-policy", "no-referrer"),
        ("cache-control", "no-store"),
    ] {
        assert_eq!(r.headers[name], value, "{name}");
    }
    h.finish().await;
}

async fn two_authorization_headers_are_refused(backend: Backend) {
    let Some(h) = Harness::new(backend).await else {
        return;
    };
    let (id, secret) = h.client(&[GrantType::ClientCredentials], "read").await;
    let basic = format!(
        "Basic {}",
        STANDARD.encode_to_string(format!("{id}:{secret}"))
    );
    let token = h.client_credentials_token(&id, &secret).await;
    let admin = admin_token(&h).await;
    for (path, body) in [
        ("/oauth2/token", "grant_type=client_credentials".to_owned()),
        ("/oauth2/introspect", format!("token={token}")),
        ("/oauth2/revoke", format!("token={token}")),
    ] {
        let r = h
            .send(
                Request::post(path)
                    .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                    .header(header::AUTHORIZATION, &basic)
                    .header(header::AUTHORIZATION, "Basic Zm9vOmJhcg==")
                    .body(Body::from(body))
                    .unwrap(),
            )
            .await;
        assert_invalid_request(&r, path);
        // The same header, twice, is still two.
        let r = h
            .send(
                Request::post(path)
                    .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                    .header(header::AUTHORIZATION, &basic)
                    .header(header::AUTHORIZATION, &basic)
                    .body(Body::from("token=x&grant_type=client_credentials"))
                    .unwrap(),
            )
            .await;
        assert_invalid_request(&r, path);
    }
    // The token was not revoked by the refused request.
    let r = h
        .post(
            "/oauth2/introspect",
            &[("token", &token)],
            Some((&id, &secret)),
        )
        .await;
    assert_eq!(r.json["active"], true, "{}", r.text);
    let r = h
        .send(
            Request::get("/admin/users")
                .header(header::AUTHORIZATION, format!("Bearer {admin}"))
                .header(header::AUTHORIZATION, format!("Bearer {admin}"))
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
    h.finish().await;
}

async fn oversized_bodies_are_refused_with_413(backend: Backend) {
    let Some(h) = Harness::new(backend).await else {
        return;
    };
    let (id, secret) = h.client(&[GrantType::ClientCredentials], "read").await;
    // A body larger than the limit, sent without a length (as chunked).
    let big = format!(
        "grant_type=client_credentials&pad={}",
        "a".repeat(64 * 1024)
    );
    let r = h
        .send(
            Request::post("/oauth2/token")
                .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                .body(Body::from(big.clone()))
                .unwrap(),
        )
        .await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE, "{}", r.text);
    assert_eq!(r.error(), "invalid_request");
    let r = h
        .post(
            "/oauth2/token",
            &[("grant_type", "client_credentials"), ("pad", &big)],
            Some((&id, &secret)),
        )
        .await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE, "{}", r.text);

    // A body that only declares ten megabytes is refused from the header:
    // the request below never sends a byte, so reading it would hang.
    for path in ["/oauth2/token", "/admin/users"] {
        let never = Body::from_stream(Never);
        let request = Request::post(path)
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(header::CONTENT_LENGTH, "10485760")
            .body(never)
            .unwrap();
        let r = tokio::time::timeout(Duration::from_secs(5), h.send(request))
            .await
            .expect("a declared 10 MB body was waited for");
        assert_eq!(
            r.status,
            StatusCode::PAYLOAD_TOO_LARGE,
            "{path}: {}",
            r.text
        );
    }
    h.finish().await;
}

/// A body that never sends a byte.
struct Never;

impl futures_core::Stream for Never {
    type Item = Result<String, std::io::Error>;
    fn poll_next(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        std::task::Poll::Pending
    }
}
