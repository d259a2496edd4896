//! tessera-server's tests: the storage suite and the HTTP handlers, each
//! run on SQLite and, when `TESSERA_TEST_DATABASE_URL` names a server, on
//! PostgreSQL (every test in a schema of its own).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    missing_debug_implementations
)]

mod endpoints;
mod faults;
mod hostile;
mod signin;
mod store;
mod token;

use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, HeaderMap, Request, StatusCode};
use axum::Router;
use base64_simd::STANDARD;
use serde_json::Value;
use tessera_server::password::Passwords;
use tessera_server::store::audit::AuditQueue;
use tessera_server::store::clients::{self, GrantType, NewClient};
use tessera_server::store::{users, Scopes};
use tessera_server::{App, Config, Db, Overrides};
use tower::ServiceExt;

/// Which database a test runs on.
#[derive(Clone, Copy, Debug)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Run each named `async fn(Backend)` as two tests: `NAME::sqlite` and
/// `NAME::postgres`.
#[macro_export]
macro_rules! both_backends {
    ($($name:ident),* $(,)?) => { $(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn sqlite() {
                super::$name($crate::Backend::Sqlite).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn postgres() {
                super::$name($crate::Backend::Postgres).await
            }
        }
    )* };
}

pub const ISSUER: &str = "https://auth.tessera.test";

/// How long the tests' revocation events of users, clients and sessions
/// are kept (the default configuration's).
pub const KEEP: tessera_server::store::revocation::Keep =
    tessera_server::store::revocation::Keep(3600 + tessera_server::store::revocation::MARGIN);

/// A database of its own: a SQLite file in a temporary directory, or a
/// fresh PostgreSQL schema. `None` (with a notice) when PostgreSQL is not
/// configured.
#[derive(Debug)]
pub struct TestDb {
    pub url: String,
    pub dir: tempfile::TempDir,
    schema: Option<(String, String)>,
}

impl TestDb {
    pub async fn new(backend: Backend) -> Option<TestDb> {
        let dir = tempfile::tempdir().unwrap();
        match backend {
            Backend::Sqlite => Some(TestDb {
                url: format!("sqlite://{}", dir.path().join("tessera.db").display()),
                dir,
                schema: None,
            }),
            Backend::Postgres => {
                let Ok(base) = std::env::var("TESSERA_TEST_DATABASE_URL") else {
                    eprintln!("skipped: PostgreSQL test (set TESSERA_TEST_DATABASE_URL to run it)");
                    return None;
                };
                let schema = format!(
                    "t_{}",
                    tessera_server::secret::random_id()
                        .unwrap()
                        .to_lowercase()
                        .replace(['-', '_'], "x")
                );
                let admin = sqlx::PgPool::connect(&base)
                    .await
                    .expect("TESSERA_TEST_DATABASE_URL");
                sqlx::query(&format!("CREATE SCHEMA {schema}"))
                    .execute(&admin)
                    .await
                    .unwrap();
                admin.close().await;
                let sep = if base.contains('?') { '&' } else { '?' };
                Some(TestDb {
                    url: format!("{base}{sep}options=-c%20search_path%3D{schema}"),
                    dir,
                    schema: Some((base, schema)),
                })
            }
        }
    }

    /// Drop the schema (PostgreSQL); called at the end of a passing test.
    pub async fn cleanup(&self) {
        if let Some((base, schema)) = &self.schema {
            let admin = sqlx::PgPool::connect(base).await.unwrap();
            // Concurrent DROP SCHEMA … CASCADE of many tests can meet in a
            // deadlock PostgreSQL then breaks: try again.
            for attempt in 1.. {
                match sqlx::query(&format!("DROP SCHEMA {schema} CASCADE"))
                    .execute(&admin)
                    .await
                {
                    Ok(_) => break,
                    Err(e) if attempt < 5 => {
                        eprintln!("dropping {schema}: {e}; again");
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    }
                    Err(e) => panic!("dropping {schema}: {e}"),
                }
            }
            admin.close().await;
        }
    }

    /// A configuration on this database, with the master key in the
    /// temporary directory.
    pub fn config(&self) -> Config {
        Config::resolve(Overrides {
            data_dir: Some(self.dir.path().to_owned()),
            database_url: Some(self.url.clone().into()),
            issuer: Some(ISSUER.into()),
            ..Overrides::default()
        })
        .unwrap()
    }
}

/// A server in memory: its state, its router, and helpers to call it
/// without sockets.
pub struct Harness {
    pub app: Arc<App>,
    pub router: Router,
    pub db: Db,
    pub test_db: TestDb,
}

/// A response, its body parsed as JSON (or `Null`).
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub json: Value,
    pub text: String,
}

impl Reply {
    pub fn error(&self) -> &str {
        self.json["error"].as_str().unwrap_or("")
    }

    pub fn str(&self, name: &str) -> String {
        self.json[name]
            .as_str()
            .unwrap_or_else(|| panic!("no {name} in {}", self.text))
            .to_owned()
    }
}

impl Harness {
    pub async fn new(backend: Backend) -> Option<Harness> {
        Harness::with(backend, |_| {}).await
    }

    pub async fn with(backend: Backend, tweak: impl FnOnce(&mut Config)) -> Option<Harness> {
        let test_db = TestDb::new(backend).await?;
        Some(Harness::on(test_db, tweak).await)
    }

    /// A server on `test_db`.
    pub async fn on(test_db: TestDb, tweak: impl FnOnce(&mut Config)) -> Harness {
        let mut config = test_db.config();
        tweak(&mut config);
        let opened = tessera_server::open(config).await.unwrap();
        let (audit, _writer) = AuditQueue::start(opened.db.clone());
        let db = opened.db.clone();
        let app = Arc::new(App::new(
            opened.config,
            opened.db,
            opened.keys,
            Passwords::new(2),
            audit,
        ));
        Harness {
            router: tessera_server::router(Arc::clone(&app)),
            app,
            db,
            test_db,
        }
    }

    pub async fn finish(self) {
        self.db.close().await;
        self.test_db.cleanup().await;
    }

    pub async fn send(&self, request: Request<Body>) -> Reply {
        let response = self.router.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        let text = String::from_utf8(bytes.to_vec()).unwrap();
        Reply {
            status,
            headers,
            json: serde_json::from_str(&text).unwrap_or(Value::Null),
            text,
        }
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.send(Request::get(path).body(Body::empty()).unwrap())
            .await
    }

    /// POST a form, with Basic credentials when given.
    pub async fn post(
        &self,
        path: &str,
        form: &[(&str, &str)],
        basic: Option<(&str, &str)>,
    ) -> Reply {
        let body = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form)
            .finish();
        let mut request =
            Request::post(path).header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
        if let Some((id, secret)) = basic {
            let encoded = STANDARD.encode_to_string(format!("{id}:{secret}"));
            request = request.header(header::AUTHORIZATION, format!("Basic {encoded}"));
        }
        self.send(request.body(Body::from(body)).unwrap()).await
    }

    /// A confidential client; returns (client_id, client_secret).
    pub async fn client(&self, grants: &[GrantType], scopes: &str) -> (String, String) {
        let added = clients::add(
            &self.db,
            NewClient {
                name: "test client".into(),
                grants: grants.to_vec(),
                scopes: Scopes::parse(scopes).unwrap(),
                ..NewClient::default()
            },
            tessera_server::store::audit::InChange::none(),
        )
        .await
        .unwrap();
        (added.client_id, added.client_secret.unwrap().to_string())
    }

    /// An access token for the confidential client `id` (client_credentials
    /// grant, Basic credentials).
    pub async fn client_credentials_token(&self, id: &str, secret: &str) -> String {
        self.client_credentials(id, secret)
            .await
            .str("access_token")
    }

    /// The token endpoint's answer to client `id`'s `client_credentials`
    /// request, whatever it is.
    pub async fn client_credentials(&self, id: &str, secret: &str) -> Reply {
        self.post(
            "/oauth2/token",
            &[("grant_type", "client_credentials")],
            Some((id, secret)),
        )
        .await
    }

    /// A client (scope `read`) that authenticates with assertions signed
    /// by `key`, whose public JWK it registers.
    pub async fn signed_client(&self, key: &tessera_jose::SigningKey) -> clients::Added {
        let jwk = key.verifying_key().unwrap().to_public_jwk().unwrap();
        clients::add(
            &self.db,
            NewClient {
                name: "signed".into(),
                scopes: Scopes::parse("read").unwrap(),
                jwks: Some(tessera_jose::JwkSet::new(vec![jwk]).to_json()),
                ..NewClient::default()
            },
            tessera_server::store::audit::InChange::none(),
        )
        .await
        .unwrap()
    }

    /// A public client for the password and refresh grants.
    pub async fn public_client(&self, scopes: &str) -> String {
        clients::add(
            &self.db,
            NewClient {
                name: "public".into(),
                grants: vec![GrantType::Password, GrantType::RefreshToken],
                scopes: Scopes::parse(scopes).unwrap(),
                public: true,
                ..NewClient::default()
            },
            tessera_server::store::audit::InChange::none(),
        )
        .await
        .unwrap()
        .client_id
    }

    /// The server's Argon2id hash of `password`.
    pub async fn hash(&self, password: &str) -> String {
        self.app
            .passwords
            .hash(zeroize::Zeroizing::new(password.into()))
            .await
            .unwrap()
    }

    pub async fn user(&self, username: &str, password: &str, scopes: &str) -> String {
        let hash = self.hash(password).await;
        users::add(
            &self.db,
            username,
            &hash,
            &Scopes::parse(scopes).unwrap(),
            &users::Profile::default(),
            tessera_server::store::audit::InChange::none(),
        )
        .await
        .unwrap()
        .id
    }

    /// Whether introspection by the confidential client `rs` calls
    /// `token` active.
    pub async fn active(&self, token: &str, rs: (&str, &str)) -> bool {
        self.post("/oauth2/introspect", &[("token", token)], Some(rs))
            .await
            .json["active"]
            == true
    }

    /// Run `sql` with text parameters `binds` on the writer (to change
    /// what no command changes, as an attacker or an outage would).
    pub async fn execute(&self, sql: &str, binds: &[&str]) {
        match &self.db {
            Db::Sqlite { writer, .. } => {
                let mut query = sqlx::query(sql);
                for b in binds {
                    query = query.bind(*b);
                }
                query.execute(writer).await.unwrap();
            }
            Db::Postgres(pool) => {
                let mut query = sqlx::query(sql);
                for b in binds {
                    query = query.bind(*b);
                }
                query.execute(pool).await.unwrap();
            }
        }
    }

    /// A cut of user `user_id`'s tokens stamped further from now than the
    /// token endpoint waits for a cut to pass (the margin, a second and
    /// the clocks' spread), as an instance whose clock runs that far ahead
    /// of this one would stamp it, read into this instance's log: the
    /// token endpoint waits as long as it may, then answers 503 (after its
    /// grant has committed).
    pub async fn cut_beyond_the_wait(&self, user_id: &str) {
        let ahead = tessera_server::store::revocation::CUT_MARGIN
            + 1
            + tessera_server::store::CLOCK_SPREAD
            + 2;
        let cut = tessera_server::store::now() + ahead;
        self.execute(
            &format!(
                "INSERT INTO revocation_events (kind, value, issued_before, keep_until, created_at) \
                 VALUES ('user', $1, {cut}, {}, {cut})",
                cut + 3600
            ),
            &[user_id],
        )
        .await;
        self.app.access.revoked().sync(&self.db).await.unwrap();
    }

    /// Run `request` for half a second while another connection holds
    /// the database (SQLite: its write lock; PostgreSQL: the row that
    /// `pg_lock`, a `SELECT … FOR UPDATE` of one bytes parameter, locks),
    /// then let go: what a request timeout drops while the request waits
    /// for the database. `Err` when it was dropped unanswered.
    pub async fn dropped_while_held<F: std::future::Future>(
        &self,
        pg_lock: (&str, &[u8]),
        request: F,
    ) -> Result<F::Output, tokio::time::error::Elapsed> {
        use sqlx::Connection;
        let wait = std::time::Duration::from_millis(500);
        if self.db.is_postgres() {
            let pool = sqlx::PgPool::connect(&self.test_db.url).await.unwrap();
            let mut holder = pool.begin().await.unwrap();
            sqlx::query(pg_lock.0)
                .bind(pg_lock.1)
                .execute(&mut *holder)
                .await
                .unwrap();
            let dropped = tokio::time::timeout(wait, request).await;
            holder.commit().await.unwrap();
            pool.close().await;
            dropped
        } else {
            let mut holder = sqlx::SqliteConnection::connect(&self.test_db.url)
                .await
                .unwrap();
            sqlx::query("BEGIN IMMEDIATE")
                .execute(&mut holder)
                .await
                .unwrap();
            let dropped = tokio::time::timeout(wait, request).await;
            sqlx::query("COMMIT").execute(&mut holder).await.unwrap();
            dropped
        }
    }

    /// Make the database refuse `what` (`BEFORE INSERT ON audit_log`, say:
    /// a trigger's event and table) with a trigger named `name`, on
    /// either backend: a fault a test sets, and lifts with [`Harness::allow`].
    pub async fn refuse(&self, name: &str, what: &str) {
        if self.db.is_postgres() {
            self.execute(
                &format!(
                    "CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS \
                     $$ BEGIN RAISE EXCEPTION 'refused by {name}'; END $$"
                ),
                &[],
            )
            .await;
            self.execute(
                &format!("CREATE TRIGGER {name} {what} FOR EACH ROW EXECUTE FUNCTION {name}()"),
                &[],
            )
            .await;
        } else {
            self.execute(
                &format!(
                    "CREATE TRIGGER {name} {what} BEGIN SELECT RAISE(ABORT, 'refused by {name}'); END"
                ),
                &[],
            )
            .await;
        }
    }

    /// Lift the fault [`Harness::refuse`] set as `name` on `table`.
    pub async fn allow(&self, name: &str, table: &str) {
        let sql = if self.db.is_postgres() {
            format!("DROP TRIGGER {name} ON {table}")
        } else {
            format!("DROP TRIGGER {name}")
        };
        self.execute(&sql, &[]).await;
    }

    /// The one number `sql` (with text parameters `binds`) selects.
    pub async fn count(&self, sql: &str, binds: &[&str]) -> i64 {
        match &self.db {
            Db::Sqlite { writer, .. } => {
                let mut query = sqlx::query_scalar::<_, i64>(sql);
                for b in binds {
                    query = query.bind(*b);
                }
                query.fetch_one(writer).await.unwrap()
            }
            Db::Postgres(pool) => {
                let mut query = sqlx::query_scalar::<_, i64>(sql);
                for b in binds {
                    query = query.bind(*b);
                }
                query.fetch_one(pool).await.unwrap()
            }
        }
    }

    /// Sleep into the next second of `store::now`: a login begun in the
    /// very second its account changed is refused (it may have been
    /// under way), and asked to try again.
    pub async fn next_second(&self) {
        let now = tessera_server::store::now();
        while tessera_server::store::now() <= now {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    /// A session of the user `user_id`, as a login starts it.
    pub async fn start_session(
        &self,
        user_id: &str,
        policy: tessera_server::store::sessions::SessionPolicy,
    ) -> (
        zeroize::Zeroizing<String>,
        tessera_server::store::sessions::Session,
    ) {
        let user = users::find_by_id(&self.db, user_id).await.unwrap().unwrap();
        let checked = tessera_server::store::sessions::LoggedIn {
            user_id,
            password_hash: &user.password_hash,
        };
        tessera_server::store::sessions::start(&self.db, checked, policy, "test-browser")
            .await
            .unwrap()
            .expect("the user can log in")
    }

    /// POST a refresh through the public client `client`, asking for
    /// `scope` when given.
    pub async fn refresh(&self, client: &str, token: &str, scope: Option<&str>) -> Reply {
        let mut form = vec![
            ("grant_type", "refresh_token"),
            ("client_id", client),
            ("refresh_token", token),
        ];
        if let Some(scope) = scope {
            form.push(("scope", scope));
        }
        self.post("/oauth2/token", &form, None).await
    }

    /// A password login through a public client; returns the token response.
    pub async fn login(&self, client_id: &str, username: &str, password: &str) -> Reply {
        self.post(
            "/oauth2/token",
            &[
                ("grant_type", "password"),
                ("client_id", client_id),
                ("username", username),
                ("password", password),
            ],
            None,
        )
        .await
    }
}

/// Verify an access token the way a resource server would: the JWKS only.
pub fn verify_with_jwks(
    h: &Harness,
    token: &str,
    audience: &str,
) -> Result<tessera_jose::Token<Value>, tessera_jose::Error> {
    let jwks = tessera_jose::JwkSet::from_json(&h.app.keys.jwks_json()).unwrap();
    let keys = tessera_jose::KeySet::from_jwks(&jwks).unwrap();
    let validation = tessera_jose::Validation::new()
        .issuer(ISSUER)
        .audience(audience)
        .typ("at+jwt");
    tessera_jose::jwt::verify::<Value>(token, &keys, &validation)
}

/// The `n` newest audit events of kind `event`, waiting for the batched
/// writer (up to two seconds).
pub async fn wait_for_audit(
    h: &Harness,
    event: &str,
    n: usize,
) -> Vec<tessera_server::store::audit::Record> {
    let mut found = Vec::new();
    for _ in 0..100 {
        found = tessera_server::store::audit::recent(&h.db, Some(event), 100)
            .await
            .unwrap();
        if found.len() >= n {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(found.len(), n, "{event} events");
    found
}

/// What the log says, for one test (a `tracing_subscriber` writer).
#[derive(Clone, Default)]
pub struct Logged(pub std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl Logged {
    /// Capture this thread's log (info and above, no colours) until the
    /// guard is dropped.
    pub fn capture() -> (Logged, tracing::subscriber::DefaultGuard) {
        // tracing caches, per log statement and for every thread, whether
        // anyone listens. While only one dispatcher is alive, it asks only
        // the thread at hand: another test's thread, with no subscriber,
        // reaching a statement first (or rebuilding the cache) made it
        // silent for this test's thread too, and a message said once (the
        // audit writer's held events) was lost. A second dispatcher kept
        // alive for the whole run makes it ask every live one.
        static ALWAYS_TWO: std::sync::OnceLock<tracing::Dispatch> = std::sync::OnceLock::new();
        ALWAYS_TWO
            .get_or_init(|| tracing::Dispatch::new(tracing::subscriber::NoSubscriber::default()));
        let logged = Logged::default();
        let writer = logged.clone();
        let guard = tracing::subscriber::set_default(
            tracing_subscriber::fmt()
                .with_writer(move || writer.clone())
                .with_ansi(false)
                .with_max_level(tracing::Level::INFO)
                .finish(),
        );
        (logged, guard)
    }
}

impl std::io::Write for Logged {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A capture hears what its thread says, whatever another thread without
/// a subscriber does meanwhile (here: rebuild tracing's cache of who
/// listens, which, with this capture the only dispatcher alive, once
/// silenced every log statement for every thread).
#[test]
fn a_capture_hears_its_thread_whatever_other_threads_do() {
    let (logged, _guard) = Logged::capture();
    for round in 0..2 {
        if round == 1 {
            std::thread::spawn(tracing::callsite::rebuild_interest_cache)
                .join()
                .unwrap();
        }
        tracing::error!(round, "heard");
    }
    let text = String::from_utf8(logged.0.lock().unwrap().clone()).unwrap();
    assert!(text.contains("round=0"), "{text}");
    assert!(text.contains("round=1"), "{text}");
}
