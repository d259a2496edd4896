//! The store API through its router, without sockets: scopes, CRUD,
//! validation, documents.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use axum::Router;
use serde_json::{json, Value};
use tessera_guard::Guard;
use tessera_jose::jws::Header;
use tessera_jose::{jwt, Algorithm, Claims, KeySet, NumericDate, SigningKey};
use tower::ServiceExt;

const ISS: &str = "https://auth.tessera.test";

struct Api {
    app: Router,
    key: SigningKey,
    _dir: tempfile::TempDir,
}

impl Api {
    async fn new() -> Api {
        let dir = tempfile::tempdir().unwrap();
        let db = store_api::open_db(&format!("sqlite://{}", dir.path().join("s.db").display()))
            .await
            .unwrap();
        let key = SigningKey::generate(Algorithm::ES256)
            .unwrap()
            .with_thumbprint_kid()
            .unwrap();
        let keys = KeySet::new(vec![key.verifying_key().unwrap()]).unwrap();
        let guard = Guard::builder(ISS, "store-api", keys).build().unwrap();
        Api {
            app: store_api::app(db, guard),
            key,
            _dir: dir,
        }
    }

    fn token(&self, scope: &str) -> String {
        self.token_of("alice", scope)
    }

    /// A token of `sub`'s.
    fn token_of(&self, sub: &str, scope: &str) -> String {
        let claims = Claims::with_custom(json!({ "scope": scope, "client_id": "c" }))
            .issuer(ISS)
            .subject(sub)
            .audience("store-api")
            .expires_at(NumericDate::now().plus(Duration::from_secs(300)));
        jwt::sign_with_header(
            &Header::for_key(&self.key).typ("at+jwt"),
            &claims,
            &self.key,
        )
        .unwrap()
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        scope: Option<&str>,
        body: Option<&str>,
    ) -> (StatusCode, Value) {
        let (status, _, value) = self.call_with_headers(method, path, scope, body).await;
        (status, value)
    }

    /// [`Api::call`], with the answer's headers.
    async fn call_with_headers(
        &self,
        method: Method,
        path: &str,
        scope: Option<&str>,
        body: Option<&str>,
    ) -> (StatusCode, axum::http::HeaderMap, Value) {
        self.send(method, path, scope.map(|s| self.token(s)), body)
            .await
    }

    /// [`Api::call`] as `sub`.
    async fn call_as(
        &self,
        sub: &str,
        method: Method,
        path: &str,
        scope: &str,
        body: Option<&str>,
    ) -> (StatusCode, Value) {
        let (status, _, value) = self
            .send(method, path, Some(self.token_of(sub, scope)), body)
            .await;
        (status, value)
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        token: Option<String>,
        body: Option<&str>,
    ) -> (StatusCode, axum::http::HeaderMap, Value) {
        let mut request = Request::builder().method(method).uri(path);
        if let Some(token) = token {
            request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let body = match body {
            Some(text) => {
                request = request.header(header::CONTENT_TYPE, "application/json");
                Body::from(text.to_owned())
            }
            None => Body::empty(),
        };
        let response = self
            .app
            .clone()
            .oneshot(request.body(body).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        (
            status,
            headers,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    /// Every row of the list at `path`, following its `Link` headers,
    /// and the pages it took.
    async fn all_pages(&self, path: &str) -> (Vec<i64>, usize) {
        let (mut ids, mut pages, mut next) = (Vec::new(), 0, Some(path.to_owned()));
        while let Some(path) = next.take() {
            let (status, headers, page) = self
                .call_with_headers(Method::GET, &path, Some("items:read"), None)
                .await;
            assert_eq!(status, StatusCode::OK, "{path}: {page}");
            pages += 1;
            ids.extend(
                page.as_array()
                    .unwrap()
                    .iter()
                    .map(|r| r["id"].as_i64().unwrap()),
            );
            next = headers.get(header::LINK).map(|link| {
                let link = link.to_str().unwrap();
                assert!(link.ends_with(">; rel=\"next\""), "{link}");
                link[1..link.find('>').unwrap()].to_owned()
            });
        }
        (ids, pages)
    }
}

const RW: &str = "items:read items:write";
const ALL: &str = "items:read items:write store:admin";

/// Lists come a page at a time, ids ascending, with a `Link` to the next
/// page while one follows; filters carry over to the next page, and a
/// limit out of range is a 400, not a silent default.
#[tokio::test]
async fn lists_come_a_page_at_a_time() {
    let api = Api::new().await;
    let mut stores = Vec::new();
    for name in ["A", "B", "C"] {
        let body = json!({ "name": name }).to_string();
        let (status, store) = api
            .call(Method::POST, "/stores", Some(RW), Some(&body))
            .await;
        assert_eq!(status, StatusCode::CREATED, "{store}");
        stores.push(store["id"].as_i64().unwrap());
    }
    let mut in_a = Vec::new();
    for i in 0..7 {
        let store = if i % 3 == 0 { stores[1] } else { stores[0] };
        let body =
            json!({ "store_id": store, "name": format!("item {i}"), "price_cents": i }).to_string();
        let (status, item) = api
            .call(Method::POST, "/items", Some(RW), Some(&body))
            .await;
        assert_eq!(status, StatusCode::CREATED, "{item}");
        if store == stores[0] {
            in_a.push(item["id"].as_i64().unwrap());
        }
    }
    let (all, pages) = api.all_pages("/items?limit=2").await;
    assert_eq!(all.len(), 7);
    assert!(all.windows(2).all(|w| w[0] < w[1]), "{all:?}");
    assert_eq!(pages, 4);
    let (of_a, pages) = api
        .all_pages(&format!("/items?store_id={}&limit=2", stores[0]))
        .await;
    assert_eq!(of_a, in_a);
    assert_eq!(in_a.len(), 4);
    // An exactly full last page says so: no Link, no empty page after it.
    assert_eq!(pages, 2);
    let (listed, pages) = api.all_pages("/stores?limit=1").await;
    assert_eq!(listed, stores);
    assert_eq!(pages, 3);
    // The default page holds them all here, with no Link.
    let (status, headers, page) = api
        .call_with_headers(Method::GET, "/items", Some("items:read"), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(page.as_array().unwrap().len(), 7);
    assert!(headers.get(header::LINK).is_none());
    // A store's own page holds its first items, and says where the rest are.
    let big = stores[2];
    let first = store_api::DEFAULT_LIMIT + 1;
    let mut in_big = Vec::new();
    for i in 0..first {
        let body =
            json!({ "store_id": big, "name": format!("thing {i}"), "price_cents": 1 }).to_string();
        let (_, item) = api
            .call(Method::POST, "/items", Some(RW), Some(&body))
            .await;
        in_big.push(item["id"].as_i64().unwrap());
    }
    let (status, with_items) = api
        .call(
            Method::GET,
            &format!("/stores/{big}"),
            Some("items:read"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let shown: Vec<i64> = with_items["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_i64().unwrap())
        .collect();
    assert_eq!(shown, in_big[..in_big.len() - 1]);
    let (rest, _) = api
        .all_pages(with_items["items_next"].as_str().unwrap())
        .await;
    assert_eq!(rest, in_big[in_big.len() - 1..]);
    let (_, small) = api
        .call(
            Method::GET,
            &format!("/stores/{}", stores[0]),
            Some("items:read"),
            None,
        )
        .await;
    assert!(small.get("items_next").is_none(), "{small}");
    for bad in [
        "/items?limit=0",
        "/items?limit=1001",
        "/stores?limit=x",
        "/items?after=y",
    ] {
        let (status, answer) = api.call(Method::GET, bad, Some("items:read"), None).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {answer}");
        assert_eq!(answer["error"], "invalid_request", "{bad}");
    }
}

#[tokio::test]
async fn stores_and_items_round_trip() {
    let api = Api::new().await;
    let (status, store) = api
        .call(
            Method::POST,
            "/stores",
            Some(RW),
            Some(r#"{"name":"  Corner shop "}"#),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{store}");
    assert_eq!(store["name"], "Corner shop");
    let sid = store["id"].as_i64().unwrap();
    let (status, _) = api
        .call(
            Method::POST,
            "/stores",
            Some(RW),
            Some(r#"{"name":"Corner shop"}"#),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT);

    let item = json!({ "store_id": sid, "name": "Chair", "price_cents": 1999 }).to_string();
    let (status, created) = api
        .call(Method::POST, "/items", Some(RW), Some(&item))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let iid = created["id"].as_i64().unwrap();
    let (_, with_items) = api
        .call(
            Method::GET,
            &format!("/stores/{sid}"),
            Some("items:read"),
            None,
        )
        .await;
    assert_eq!(with_items["items"][0]["name"], "Chair");

    let changed = json!({ "store_id": sid, "name": "Chair", "price_cents": 1499 }).to_string();
    let (status, updated) = api
        .call(
            Method::PUT,
            &format!("/items/{iid}"),
            Some(RW),
            Some(&changed),
        )
        .await;
    assert_eq!(
        (status, updated["price_cents"].as_i64()),
        (StatusCode::OK, Some(1499))
    );
    let (_, listed) = api
        .call(
            Method::GET,
            &format!("/items?store_id={sid}"),
            Some("items:read"),
            None,
        )
        .await;
    assert_eq!(listed.as_array().unwrap().len(), 1);

    // Deleting needs the admin scope; a store takes its items with it.
    let (status, _) = api
        .call(Method::DELETE, &format!("/stores/{sid}"), Some(RW), None)
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = api
        .call(Method::DELETE, &format!("/stores/{sid}"), Some(ALL), None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = api
        .call(Method::GET, &format!("/items/{iid}"), Some(ALL), None)
        .await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "the item went with its store"
    );
    let (status, err) = api
        .call(Method::DELETE, &format!("/stores/{sid}"), Some(ALL), None)
        .await;
    assert_eq!(
        (status, err["error"].as_str()),
        (StatusCode::NOT_FOUND, Some("not_found"))
    );
}

/// Scopes say what kind of change a caller may make, the owner to which
/// stores: with `items:write`, Bob cannot add items to Alice's store,
/// change hers, move hers into his or his into hers (OWASP API1, broken
/// object-level authorization: every write checked the scope alone).
/// Everyone with `items:read` still reads the whole catalogue, and
/// `store:admin` changes any store's items.
#[tokio::test]
async fn only_a_stores_owner_changes_its_items() {
    let api = Api::new().await;
    let store = |sub: &'static str, name: &'static str| {
        let api = &api;
        async move {
            let body = json!({ "name": name }).to_string();
            let (status, store) = api
                .call_as(sub, Method::POST, "/stores", RW, Some(&body))
                .await;
            assert_eq!(status, StatusCode::CREATED, "{store}");
            store["id"].as_i64().unwrap()
        }
    };
    let item = |store: i64, price: i64| {
        json!({ "store_id": store, "name": "Chair", "price_cents": price }).to_string()
    };
    let (alices, bobs) = (store("alice", "Alice's").await, store("bob", "Bob's").await);
    let (status, hers) = api
        .call_as(
            "alice",
            Method::POST,
            "/items",
            RW,
            Some(&item(alices, 100)),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let hers = hers["id"].as_i64().unwrap();
    let (status, his) = api
        .call_as("bob", Method::POST, "/items", RW, Some(&item(bobs, 100)))
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let his = his["id"].as_i64().unwrap();

    let path = |id: i64| format!("/items/{id}");
    for (method, path, body) in [
        (Method::POST, "/items".to_owned(), item(alices, 1)),
        (Method::PUT, path(hers), item(alices, 1)),
        (Method::PUT, path(hers), item(bobs, 1)),
        (Method::PUT, path(his), item(alices, 1)),
    ] {
        let (status, err) = api
            .call_as("bob", method.clone(), &path, RW, Some(&body))
            .await;
        assert_eq!(
            status,
            StatusCode::FORBIDDEN,
            "{method} {path} {body}: {err}"
        );
        assert_eq!(err["error"], "forbidden");
    }
    let (_, seen) = api
        .call_as("bob", Method::GET, &path(hers), "items:read", None)
        .await;
    assert_eq!(
        (seen["store_id"].as_i64(), seen["price_cents"].as_i64()),
        (Some(alices), Some(100))
    );
    let (_, listed) = api
        .call_as(
            "bob",
            Method::GET,
            &format!("/items?store_id={alices}"),
            "items:read",
            None,
        )
        .await;
    assert_eq!(
        listed.as_array().map(Vec::len),
        Some(1),
        "no item added to hers"
    );
    // Her own, and the admin's.
    let (status, _) = api
        .call_as(
            "alice",
            Method::PUT,
            &path(hers),
            RW,
            Some(&item(alices, 5)),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, moved) = api
        .call_as("carol", Method::PUT, &path(hers), ALL, Some(&item(bobs, 7)))
        .await;
    assert_eq!(
        (status, moved["store_id"].as_i64()),
        (StatusCode::OK, Some(bobs))
    );
}

#[tokio::test]
async fn every_route_checks_its_scope() {
    let api = Api::new().await;
    let body = r#"{"name":"x"}"#;
    let routes = [
        (Method::GET, "/stores", None, "items:read"),
        (Method::POST, "/stores", Some(body), "items:write"),
        (Method::GET, "/stores/1", None, "items:read"),
        (Method::DELETE, "/stores/1", None, "store:admin"),
        (Method::GET, "/items", None, "items:read"),
        (Method::POST, "/items", Some(body), "items:write"),
        (Method::GET, "/items/1", None, "items:read"),
        (Method::PUT, "/items/1", Some(body), "items:write"),
        (Method::DELETE, "/items/1", None, "store:admin"),
    ];
    for (method, path, body, scope) in routes {
        let (status, _) = api.call(method.clone(), path, None, body).await;
        assert_eq!(
            status,
            StatusCode::UNAUTHORIZED,
            "{method} {path} without a token"
        );
        let (status, _) = api.call(method.clone(), path, Some("profile"), body).await;
        assert_eq!(
            status,
            StatusCode::FORBIDDEN,
            "{method} {path} without {scope}"
        );
        let (status, _) = api.call(method.clone(), path, Some(scope), body).await;
        assert!(
            status != StatusCode::FORBIDDEN && status != StatusCode::UNAUTHORIZED,
            "{method} {path} with {scope}: {status}"
        );
    }
}

#[tokio::test]
async fn bad_bodies_get_422_with_what_to_fix() {
    let api = Api::new().await;
    let (_, store) = api
        .call(Method::POST, "/stores", Some(RW), Some(r#"{"name":"S"}"#))
        .await;
    let sid = store["id"].as_i64().unwrap();
    let cases = [
        ("not JSON", "{name:", "invalid_body"),
        (
            "a field of the wrong type",
            r#"{"store_id":"one","name":"x","price_cents":1}"#,
            "invalid_body",
        ),
        (
            "an unknown field",
            &*format!(r#"{{"store_id":{sid},"name":"x","price_cents":1,"colour":"red"}}"#),
            "invalid_body",
        ),
        ("a missing field", r#"{"name":"x"}"#, "invalid_body"),
        (
            "a negative price",
            &*format!(r#"{{"store_id":{sid},"name":"x","price_cents":-5}}"#),
            "validation_failed",
        ),
        (
            "an empty name",
            &*format!(r#"{{"store_id":{sid},"name":"   ","price_cents":5}}"#),
            "validation_failed",
        ),
        (
            "an unknown store",
            r#"{"store_id":999,"name":"x","price_cents":5}"#,
            "validation_failed",
        ),
        (
            "a line break in a name (a forged log line)",
            &*format!(r#"{{"store_id":{sid},"name":"Chair\nINFO forged","price_cents":5}}"#),
            "validation_failed",
        ),
        (
            "a line separator in a name",
            &*format!(r#"{{"store_id":{sid},"name":"Chair\u2028INFO forged","price_cents":5}}"#),
            "validation_failed",
        ),
        (
            "a right-to-left override in a name",
            &*format!(r#"{{"store_id":{sid},"name":"Chair\u202egpj.exe","price_cents":5}}"#),
            "validation_failed",
        ),
        (
            "a zero-width space in a name (one that looks like another)",
            &*format!(r#"{{"store_id":{sid},"name":"Chair\u200b","price_cents":5}}"#),
            "validation_failed",
        ),
        (
            "a name of nothing but a format character",
            &*format!(r#"{{"store_id":{sid},"name":"\ufeff","price_cents":5}}"#),
            "validation_failed",
        ),
    ];
    for (name, body, error) in cases {
        let (status, answer) = api.call(Method::POST, "/items", Some(RW), Some(body)).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{name}: {answer}");
        assert_eq!(answer["error"], error, "{name}: {answer}");
    }
    let (_, answer) = api
        .call(
            Method::POST,
            "/items",
            Some(RW),
            Some(&format!(
                r#"{{"store_id":{sid},"name":"","price_cents":-1}}"#
            )),
        )
        .await;
    assert!(
        answer["fields"]["name"].is_string() && answer["fields"]["price_cents"].is_string(),
        "{answer}"
    );
}

#[tokio::test]
async fn an_oversized_body_gets_413() {
    let api = Api::new().await;
    let (_, store) = api
        .call(Method::POST, "/stores", Some(RW), Some(r#"{"name":"S"}"#))
        .await;
    let sid = store["id"].as_i64().unwrap();
    // Over axum's 2 MB default for JSON bodies.
    let body = format!(
        r#"{{"store_id":{sid},"name":"{}","price_cents":1}}"#,
        "x".repeat(3 * 1024 * 1024)
    );
    let (status, answer) = api
        .call(Method::POST, "/items", Some(RW), Some(&body))
        .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{answer}");
    assert_eq!(answer["error"], "body_too_large");
}

#[tokio::test]
async fn the_api_describes_itself() {
    let api = Api::new().await;
    let (status, doc) = api.call(Method::GET, "/openapi.json", None, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    let paths: Vec<&str> = doc["paths"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(paths, ["/items", "/items/{id}", "/stores", "/stores/{id}"]);
    let response = api
        .app
        .clone()
        .oneshot(Request::get("/docs").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let csp = response.headers()[header::CONTENT_SECURITY_POLICY]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    let html = axum::body::to_bytes(response.into_body(), 1 << 16)
        .await
        .unwrap();
    let html = String::from_utf8_lossy(&html);
    assert!(html.contains("/openapi.json"));
    // Every file from the CDN is pinned and checked by its hash.
    for tag in ["<script src=", "<link rel=\"stylesheet\""] {
        for at in html.match_indices(tag).map(|(i, _)| i) {
            let element = &html[at..at + html[at..].find('>').unwrap()];
            assert!(element.contains("integrity=\"sha384-"), "{element}");
            assert!(element.contains("@5.35.0/"), "{element}");
        }
    }
}

/// Malformed ids and parameters, unknown routes and methods get the API's
/// JSON error shape, not axum's plain text or empty bodies.
#[tokio::test]
async fn every_refusal_has_the_error_shape() {
    let api = Api::new().await;
    let read = Some(store_api::READ);
    for (method, path, status, error) in [
        (
            Method::GET,
            "/items/abc",
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            Method::GET,
            "/stores/1.5",
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            Method::GET,
            "/items?store_id=x",
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            Method::GET,
            "/no-such-route",
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            Method::PATCH,
            "/stores",
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
        ),
    ] {
        let (got, body) = api.call(method.clone(), path, read, None).await;
        assert_eq!(got, status, "{method} {path}: {body}");
        assert_eq!(body["error"], error, "{method} {path}: {body}");
        assert!(body["message"].is_string(), "{method} {path}: {body}");
    }
}

/// `/healthz` says 503 while the database does not answer.
#[tokio::test]
async fn health_asks_the_database() {
    let dir = tempfile::tempdir().unwrap();
    let db = store_api::open_db(&format!("sqlite://{}", dir.path().join("s.db").display()))
        .await
        .unwrap();
    let keys = KeySet::new(Vec::new()).unwrap();
    let guard = Guard::builder(ISS, "store-api", keys).build().unwrap();
    let health: Router = store_api::health(guard, db.clone());
    let status = |health: Router| async move {
        let request = Request::get("/healthz").body(Body::empty()).unwrap();
        health.oneshot(request).await.unwrap().status()
    };
    assert_eq!(status(health.clone()).await, StatusCode::OK);
    db.close().await;
    assert_eq!(status(health).await, StatusCode::SERVICE_UNAVAILABLE);
}
