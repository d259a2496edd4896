//! `tessera serve` end to end: the real binary on a loopback port, the
//! admin commands beside it, two instances on one PostgreSQL database, and
//! a kill -9 in the middle of work.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command as Process, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

mod feed;

/// A running `tessera serve`.
struct Server {
    child: Child,
    base: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn binary() -> std::path::PathBuf {
    assert_cmd::cargo::cargo_bin("tessera")
}

/// Start `tessera serve --listen 127.0.0.1:0 ARGS` in `dir` and wait for
/// its address.
fn start(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Server {
    let child = Process::new(binary())
        .current_dir(dir)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .args(args)
        .envs(env.iter().copied())
        .env("TESSERA_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    listening(child, "tessera: listening ")
}

/// Wait for the line `PREFIX ADDR …` on `child`'s standard output; the
/// server at `http://ADDR`.
fn listening(mut child: Child, prefix: &str) -> Server {
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let base = lines
        .by_ref()
        .map_while(Result::ok)
        .find_map(|line| {
            let rest = line.strip_prefix(prefix)?;
            Some(format!("http://{}", rest.split_whitespace().next()?))
        })
        .expect("the server printed its address");
    // Keep draining stdout so the server never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    Server { child, base }
}

fn admin(dir: &Path, args: &[&str], stdin: Option<&str>, env: &[(&str, &str)]) -> String {
    let mut cmd = assert_cmd::Command::new(binary());
    cmd.current_dir(dir).args(args).envs(env.iter().copied());
    if let Some(input) = stdin {
        cmd.write_stdin(input.to_owned());
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "tessera {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Add the user alice (password "correct horse", scope read).
fn add_alice(dir: &Path, env: &[(&str, &str)]) {
    admin(
        dir,
        &[
            "user",
            "add",
            "alice",
            "--password-stdin",
            "--scope",
            "read",
        ],
        Some("correct horse\n"),
        env,
    );
}

/// Add a public client for the password and refresh grants; its id.
fn add_web_client(dir: &Path, env: &[(&str, &str)]) -> String {
    let args = [
        "client",
        "add",
        "web",
        "--grant",
        "password",
        "--grant",
        "refresh_token",
        "--public",
        "--scope",
        "read",
        "--json",
    ];
    let web: Value = serde_json::from_str(&admin(dir, &args, None, env)).unwrap();
    assert!(
        web["client_secret"].is_null(),
        "public clients get no secret"
    );
    field(&web, "client_id")
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into()
}

fn get(base: &str, path: &str) -> (u16, String) {
    let mut response = agent().get(format!("{base}{path}")).call().unwrap();
    (
        response.status().as_u16(),
        response.body_mut().read_to_string().unwrap(),
    )
}

fn post(base: &str, path: &str, form: &[(&str, &str)]) -> (u16, Value) {
    let mut response = agent()
        .post(format!("{base}{path}"))
        .send_form(form.iter().copied())
        .unwrap();
    let status = response.status().as_u16();
    let text = response.body_mut().read_to_string().unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

fn field(v: &Value, name: &str) -> String {
    v[name]
        .as_str()
        .unwrap_or_else(|| panic!("no {name} in {v}"))
        .to_owned()
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn jwks_kids(base: &str) -> Vec<String> {
    let (_, body) = get(base, "/.well-known/jwks.json");
    let v: Value = serde_json::from_str(&body).unwrap();
    let mut kids: Vec<String> = v["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| field(k, "kid"))
        .collect();
    kids.sort();
    kids
}

const FAST_KEYS: &str = "[keys]\nannounce = \"4s\"\n";

/// Standard input is read for a password only with `--password-stdin`: a
/// loop of `user add` over a file of usernames took each next line for a
/// password, silently. The line read is bounded.
#[test]
fn a_password_is_read_from_standard_input_only_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let run = |args: &[&str], input: Vec<u8>| {
        assert_cmd::Command::new(binary())
            .current_dir(d)
            .args(args)
            .write_stdin(input)
            .output()
            .unwrap()
    };
    let unasked = run(&["user", "add", "bob"], b"carol-the-next-user\n".to_vec());
    assert!(!unasked.status.success());
    let said = String::from_utf8_lossy(&unasked.stderr);
    assert!(said.contains("--password-stdin"), "{said}");
    let endless = run(
        &["user", "add", "bob", "--password-stdin"],
        vec![b'x'; 10_000],
    );
    assert!(!endless.status.success());
    let said = String::from_utf8_lossy(&endless.stderr);
    assert!(said.contains("longer than"), "{said}");
    let users = admin(d, &["user", "list"], None, &[]);
    assert!(!users.contains("bob"), "{users}");
    admin(
        d,
        &["user", "add", "bob", "--password-stdin"],
        Some("carol-the-next-user\n"),
        &[],
    );
    assert!(admin(d, &["user", "list"], None, &[]).contains("bob"));
}

/// A user named that does not exist is exit code 3, said before anything
/// is asked for: `session list --user` used to print an empty list (as if
/// the user were signed in nowhere), `user passwd` to ask for the new
/// password first.
#[test]
fn an_unknown_user_is_said_before_anything_is_asked() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    add_alice(d, &[]);
    let run = |args: &[&str]| {
        assert_cmd::Command::new(binary())
            .current_dir(d)
            .args(args)
            .write_stdin("")
            .output()
            .unwrap()
    };
    for args in [
        &["session", "list", "--user", "nobody"][..],
        // Standard input is not a terminal and the flag is not given: the
        // password would be refused, but the unknown user is said first.
        &["user", "passwd", "nobody"],
    ] {
        let out = run(args);
        let said = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(3), "{args:?}: {said}");
        assert!(said.contains("nobody"), "{args:?}: {said}");
        assert!(out.stdout.is_empty(), "{args:?}");
    }
    // Alice, who has no session, has an empty list.
    let out = run(&["session", "list", "--user", "alice"]);
    assert!(out.status.success());
    assert!(out.stdout.is_empty());
}

/// `session list` shows the newest `--limit` sessions and, when there are
/// more, says so apart from the list (on stderr): before, the rest were
/// left out without a word.
/// A session past its end that a refresh family keeps (offline access)
/// is listed only with `--offline`, marked so.
#[test]
fn a_session_list_cut_at_its_limit_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    add_alice(d, &[]);
    let web = add_web_client(d, &[]);
    let db = format!("sqlite://{}", d.join("tessera-data/tessera.db").display());
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let pool = sqlx::SqlitePool::connect(&db).await.unwrap();
        for i in 0..3_i64 {
            sqlx::query(
                "INSERT INTO sessions (id_hash, sid, user_id, auth_time, created_at, last_seen, \
                 expires_at) SELECT ?, ?, id, ?, ?, ?, ? FROM users WHERE username = 'alice'",
            )
            .bind(vec![u8::try_from(i).unwrap(); 32])
            .bind(format!("sid-{i}"))
            .bind(now - i)
            .bind(now - i)
            .bind(now - i)
            .bind(now + 3600)
            .execute(&pool)
            .await
            .unwrap();
        }
        sqlx::query(
            "INSERT INTO sessions (id_hash, sid, user_id, auth_time, created_at, last_seen, \
             expires_at) SELECT ?, 'sid-offline', id, ?, ?, ?, ? FROM users WHERE username = 'alice'",
        )
        .bind(vec![9_u8; 32])
        .bind(now - 100)
        .bind(now - 100)
        .bind(now - 60)
        .bind(now - 60)
        .execute(&pool)
        .await
        .unwrap();
        sqlx::query(
            "INSERT INTO refresh_families (id, client_id, subject, username, scope, auth_time, \
             created_at, expires_at, sid) SELECT 'kept', ?, id, 'alice', 'read', ?, ?, ?, \
             'sid-offline' FROM users WHERE username = 'alice'",
        )
        .bind(&web)
        .bind(now - 100)
        .bind(now - 100)
        .bind(now + 3600)
        .execute(&pool)
        .await
        .unwrap();
        pool.close().await;
    });
    let list = |limit: &str| {
        let out = assert_cmd::Command::new(binary())
            .current_dir(d)
            .args(["session", "list", "--limit", limit])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        (
            String::from_utf8(out.stdout).unwrap(),
            String::from_utf8(out.stderr).unwrap(),
        )
    };
    let (cut, said) = list("2");
    assert_eq!(cut.lines().count(), 2, "{cut}");
    assert!(cut.starts_with("sid-0\t"), "newest first: {cut}");
    assert!(said.contains("there are more"), "{said}");
    let (all, said) = list("3");
    assert_eq!(all.lines().count(), 3, "{all}");
    assert!(!said.contains("there are more"), "{said}");
    assert!(!all.contains("offline"), "{all}");
    let with_offline = admin(d, &["session", "list", "--offline"], None, &[]);
    let lines: Vec<&str> = with_offline.lines().collect();
    assert_eq!(lines.len(), 4, "{with_offline}");
    assert!(
        lines[3].starts_with("sid-offline\t") && lines[3].ends_with("\toffline"),
        "{with_offline}"
    );
    assert!(
        lines[..3].iter().all(|l| !l.contains("offline")),
        "{with_offline}"
    );
}

/// An admin command run without the server's configuration checks what
/// it registers by the issuer the server last started as: before, it took
/// the default issuer (plain http on loopback) and registered a
/// confidential client's plain-http redirect URI, which the https server's
/// own `/admin` refuses.
#[test]
fn admin_commands_check_by_the_issuer_the_server_started_as() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let issuer = "https://auth.example.com";
    let server = start(d, &["--issuer", issuer], &[]);
    wait_until("the server answers", || {
        get(&server.base, "/healthz").0 == 200
    });
    drop(server);
    let add = |extra: &[&str]| {
        assert_cmd::Command::new(binary())
            .current_dir(d)
            .args(["client", "add", "web", "--grant", "authorization_code"])
            .args(["--redirect-uri", "http://127.0.0.1:9000/cb"])
            .args(extra)
            .env_remove("TESSERA_ISSUER")
            .output()
            .unwrap()
    };
    let refused = add(&[]);
    assert!(!refused.status.success(), "registered for an https server");
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(said.contains("plain http"), "{said}");
    // An issuer set here is taken as said, with a warning.
    let told = add(&["--issuer", "http://127.0.0.1:8080"]);
    assert!(
        told.status.success(),
        "{}",
        String::from_utf8_lossy(&told.stderr)
    );
    let said = String::from_utf8_lossy(&told.stderr);
    assert!(
        said.contains(&format!("last started as {issuer}")),
        "{said}"
    );
}

/// The key commands act on the server's keys as the server does, run
/// with whatever configuration: a shell without the server's (defaults:
/// ES256 access tokens, RS256 ID tokens, keys announced 1h ahead) lists
/// the server's EdDSA and ES384 keys as active, registers a client for
/// ES384 ID tokens, and rotates announcing the new keys 7m ahead, as the
/// server would, saying that its configuration differs. Before, it
/// listed them as retired, refused ES384, and announced by its own 1h.
#[test]
fn key_commands_follow_the_key_settings_the_server_started_with() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(
        d.join("server.toml"),
        "[tokens]\nmax_access_ttl = \"2h\"\n[keys]\nalgorithm = \"EdDSA\"\n\
         id_token_algorithms = [\"RS256\", \"ES384\"]\nannounce = \"7m\"\n",
    )
    .unwrap();
    let server = start(d, &["--config", "server.toml"], &[]);
    wait_until("the server answers", || {
        get(&server.base, "/healthz").0 == 200
    });
    drop(server);

    let list = || -> Vec<Value> {
        let listed = admin(d, &["keys", "list", "--json"], None, &[]);
        serde_json::from_str::<Value>(&listed)
            .unwrap()
            .as_array()
            .unwrap()
            .clone()
    };
    let keys = list();
    let mut algs: Vec<&str> = keys.iter().map(|k| k["alg"].as_str().unwrap()).collect();
    algs.sort_unstable();
    assert_eq!(algs, ["ES384", "EdDSA", "RS256"], "{keys:?}");
    assert!(keys.iter().all(|k| k["state"] == "active"), "{keys:?}");

    admin(
        d,
        &[
            "client",
            "add",
            "web",
            "--grant",
            "authorization_code",
            "--redirect-uri",
            "https://app.example.com/cb",
            "--id-token-alg",
            "ES384",
            "--access-ttl",
            "90m",
        ],
        None,
        &[],
    );

    let before = tessera_jose::NumericDate::now().seconds();
    let rotated = assert_cmd::Command::new(binary())
        .current_dir(d)
        .args(["keys", "rotate"])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&rotated.stderr);
    assert!(rotated.status.success(), "{said}");
    assert!(said.contains("keys.announce = \"1h\""), "{said}");
    assert!(said.contains("they sign in 7m"), "{said}");
    let kids: Vec<String> = String::from_utf8(rotated.stdout)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(kids.len(), 3, "{kids:?}");
    let after = tessera_jose::NumericDate::now().seconds();
    for key in list()
        .iter()
        .filter(|k| kids.iter().any(|kid| k["kid"] == kid.as_str()))
    {
        let at = key["activate_at"].as_i64().unwrap();
        assert!(
            (before + 420 - 2..=after + 420 + 2).contains(&at),
            "announced by the server's 7m: {key}"
        );
        assert_eq!(key["state"], "announced");
    }

    // The EdDSA key that signs leaks: revoked, it is replaced by a new
    // EdDSA key that signs at once (the server's algorithm, not one the
    // default configuration would take for dropped).
    let signing = list()
        .into_iter()
        .find(|k| k["alg"] == "EdDSA" && k["state"] == "active")
        .unwrap();
    let kid = signing["kid"].as_str().unwrap();
    let replaced = admin(d, &["keys", "revoke", kid], None, &[]);
    let new_kid = replaced.trim();
    assert!(!new_kid.is_empty() && new_kid != kid, "{replaced:?}");
    let new = list().into_iter().find(|k| k["kid"] == new_kid).unwrap();
    assert_eq!(
        (&new["alg"], &new["state"]),
        (&json!("EdDSA"), &json!("active"))
    );
}

/// What a provisioning script must tell apart has an exit code of its
/// own: 3 for a name that does not exist, 4 for one that already does
/// (before, every failure was 2).
#[test]
fn admin_failures_a_script_must_tell_apart_have_their_own_exit_codes() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    add_alice(d, &[]);
    let code = |args: &[&str], input: &str| {
        assert_cmd::Command::new(binary())
            .current_dir(d)
            .args(args)
            .write_stdin(input.to_owned())
            .output()
            .unwrap()
            .status
            .code()
    };
    let again = ["user", "add", "alice", "--password-stdin"];
    assert_eq!(code(&again, "correct horse\n"), Some(4));
    assert_eq!(code(&["user", "delete", "nobody"], ""), Some(3));
    assert_eq!(code(&["session", "end", "no-such-sid"], ""), Some(3));
    let refused = ["user", "add", " alice", "--password-stdin"];
    assert_eq!(code(&refused, "correct horse\n"), Some(2), "a name refused");
    // Before the password is asked for: without --password-stdin and
    // without a terminal, the name's refusal is what is said, not that
    // the password cannot be read.
    assert_eq!(code(&["user", "add", "alice"], ""), Some(4), "taken");
    for (args, said) in [
        (&["user", "add", " bob"][..], "white space"),
        (&["user", "add", "bob", "--scope", "a\"b"], "scope"),
    ] {
        let run = assert_cmd::Command::new(binary())
            .current_dir(d)
            .args(args)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&run.stderr);
        assert_eq!(run.status.code(), Some(2), "{stderr}");
        assert!(
            stderr.contains(said) && !stderr.contains("password"),
            "{args:?}: {stderr}"
        );
    }
}

/// A start that waits for its database (here one nothing answers for: it
/// waits up to 15 s) takes no connections meanwhile: they are refused at
/// once. Before, the port was listening from the first moment, and
/// connections waited in the kernel's queue through a start's wait or a
/// long migration, the port looking up to a load balancer.
#[test]
fn connections_are_refused_until_the_server_is_open() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Process::new(binary())
        .current_dir(dir.path())
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .args(["--database-url", "postgres://postgres@127.0.0.1:1/test"])
        .env("TESSERA_LOG", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut server = Server {
        child,
        base: String::new(),
    };
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        server.child.try_wait().unwrap().is_none(),
        "still waiting for its database"
    );
    let refused = std::net::TcpStream::connect(("127.0.0.1", port))
        .expect_err("a connection taken before the server is open");
    assert_eq!(refused.kind(), std::io::ErrorKind::ConnectionRefused);
}

#[test]
fn serve_starts_with_zero_configuration_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("tessera.toml"), FAST_KEYS).unwrap();
    let started = Instant::now();
    let mut server = start(d, &["--config", "tessera.toml"], &[]);
    eprintln!("first start to listening: {:?}", started.elapsed());
    let base = server.base.clone();

    // The first start made the data directory, the database and a master
    // key only its owner can read.
    let data = d.join("tessera-data");
    assert!(data.join("tessera.db").is_file());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&data.join("master.key")), 0o600);
        assert_eq!(mode(&data), 0o700);
    }
    assert_eq!(get(&base, "/healthz").0, 200);
    assert_eq!(get(&base, "/readyz").0, 200);
    let (_, metadata) = get(&base, "/.well-known/oauth-authorization-server");
    let metadata: Value = serde_json::from_str(&metadata).unwrap();
    assert_eq!(
        metadata["issuer"],
        base.as_str(),
        "the default issuer follows the bound address"
    );

    // Admin commands work beside the running server.
    let creds: Value = serde_json::from_str(&admin(
        d,
        &[
            "client",
            "add",
            "worker",
            "--scope",
            "orders:read",
            "--audience",
            "orders-api",
            "--json",
            "--config",
            "tessera.toml",
        ],
        None,
        &[],
    ))
    .unwrap();
    let (id, secret) = (field(&creds, "client_id"), field(&creds, "client_secret"));
    let (status, token) = post(
        &base,
        "/oauth2/token",
        &[
            ("grant_type", "client_credentials"),
            ("client_id", &id),
            ("client_secret", &secret),
        ],
    );
    assert_eq!(status, 200, "{token}");
    let access = field(&token, "access_token");
    let jwks_url = format!("{base}/.well-known/jwks.json");
    let verified = admin(
        d,
        &[
            "token",
            "verify",
            "--jwks-url",
            &jwks_url,
            "--iss",
            &base,
            "--aud",
            "orders-api",
            "--typ",
            "at+jwt",
        ],
        Some(&access),
        &[],
    );
    assert!(verified.contains("orders:read"), "{verified}");

    // A rotation started from the command line reaches the server.
    // Keys for access tokens (ES256) and ID tokens (RS256); a rotation
    // prints one new key per algorithm, access tokens' first.
    let before = jwks_kids(&base);
    assert_eq!(before.len(), 2);
    let new_kids: Vec<String> = admin(
        d,
        &["keys", "rotate", "--config", "tessera.toml"],
        None,
        &[],
    )
    .lines()
    .map(str::to_owned)
    .collect();
    assert_eq!(new_kids.len(), 2);
    wait_until("the new keys are published", || {
        let published = jwks_kids(&base);
        new_kids.iter().all(|k| published.contains(k))
    });
    let listed = admin(d, &["keys", "list", "--config", "tessera.toml"], None, &[]);
    assert!(
        listed.contains("announced") && listed.contains("active"),
        "{listed}"
    );

    // SIGTERM: a clean stop.
    let pid = server.child.id().to_string();
    assert!(Process::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let status = server.child.wait().unwrap();
    assert!(status.success(), "exit status {status:?}");

    // The same data directory again: same keys, and the old token still
    // verifies against the new process's JWKS.
    let started = Instant::now();
    let server = start(d, &["--config", "tessera.toml"], &[]);
    eprintln!("restart to listening: {:?}", started.elapsed());
    let mut kids = before.clone();
    kids.extend(new_kids);
    kids.sort();
    assert_eq!(jwks_kids(&server.base), kids);
    let jwks_url = format!("{}/.well-known/jwks.json", server.base);
    admin(
        d,
        &[
            "token",
            "verify",
            "--jwks-url",
            &jwks_url,
            "--iss",
            &base,
            "--aud",
            "orders-api",
        ],
        Some(&access),
        &[],
    );
}

#[test]
fn password_logins_refresh_and_reuse_over_http() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    add_alice(d, &[]);
    let web = add_web_client(d, &[]);
    let users = admin(d, &["user", "list"], None, &[]);
    assert!(
        users.starts_with("alice\t") && users.contains("enabled"),
        "{users}"
    );
    let server = start(d, &[], &[]);
    let (status, login) = post(
        &server.base,
        "/oauth2/token",
        &[
            ("grant_type", "password"),
            ("client_id", &web),
            ("username", "alice"),
            ("password", "correct horse"),
        ],
    );
    assert_eq!(status, 200, "{login}");
    let first = field(&login, "refresh_token");
    let refresh = |token: &str| {
        post(
            &server.base,
            "/oauth2/token",
            &[
                ("grant_type", "refresh_token"),
                ("client_id", &web),
                ("refresh_token", token),
            ],
        )
    };
    let (status, second) = refresh(&first);
    assert_eq!(status, 200, "{second}");
    let (status, reuse) = refresh(&first);
    assert_eq!(
        (status, reuse["error"].as_str()),
        (400, Some("invalid_grant"))
    );
    let (_, after) = refresh(&field(&second, "refresh_token"));
    assert_eq!(after["error"], "invalid_grant", "reuse revoked the family");

    // Disabling the user from the command line ends new logins.
    admin(d, &["user", "disable", "alice"], None, &[]);
    let (status, _) = post(
        &server.base,
        "/oauth2/token",
        &[
            ("grant_type", "password"),
            ("client_id", &web),
            ("username", "alice"),
            ("password", "correct horse"),
        ],
    );
    assert_eq!(status, 400);
}

#[test]
fn two_instances_share_one_postgres_database() {
    let Some(pg) = PgSchema::new("multi", "two instances on PostgreSQL") else {
        return;
    };
    let url = pg.url.clone();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("tessera.toml"), FAST_KEYS).unwrap();
    // One master key and one issuer for the whole deployment.
    let master = "q6sFQ0y1mJmQ4f3xk0PEXW0ZCb8oN3b0nq7yWg1M0aQ";
    let env = [
        ("TESSERA_MASTER_KEY", master),
        ("TESSERA_DATABASE_URL", url.as_str()),
        ("TESSERA_CONFIG", "tessera.toml"),
    ];
    let issuer = ["--issuer", "https://auth.tessera.test"];
    let a = start(d, &issuer, &env);
    let b = start(d, &issuer, &env);
    assert_eq!(
        jwks_kids(&a.base),
        jwks_kids(&b.base),
        "both publish the same keys"
    );

    add_alice(d, &env);
    let web = add_web_client(d, &env);
    let rs: Value =
        serde_json::from_str(&admin(d, &["client", "add", "api", "--json"], None, &env)).unwrap();
    let (rs_id, rs_secret) = (field(&rs, "client_id"), field(&rs, "client_secret"));

    // Issued at A, rotated at B.
    let (_, login) = post(
        &a.base,
        "/oauth2/token",
        &[
            ("grant_type", "password"),
            ("client_id", &web),
            ("username", "alice"),
            ("password", "correct horse"),
        ],
    );
    let (status, rotated) = post(
        &b.base,
        "/oauth2/token",
        &[
            ("grant_type", "refresh_token"),
            ("client_id", &web),
            ("refresh_token", &field(&login, "refresh_token")),
        ],
    );
    assert_eq!(status, 200, "{rotated}");

    // Revoked at A, seen at B.
    let access = field(&rotated, "access_token");
    let introspect = |base: &str, token: &str| {
        post(
            base,
            "/oauth2/introspect",
            &[
                ("token", token),
                ("client_id", &rs_id),
                ("client_secret", &rs_secret),
            ],
        )
        .1
    };
    assert_eq!(introspect(&b.base, &access)["active"], true);
    let (status, _) = post(
        &a.base,
        "/oauth2/revoke",
        &[("token", &access), ("client_id", &web)],
    );
    assert_eq!(status, 200);
    assert_eq!(
        introspect(&a.base, &access)["active"],
        false,
        "at once where it was revoked"
    );
    // The other instance reloads revoked access tokens every second.
    wait_until("B sees the revocation", || {
        introspect(&b.base, &access)["active"] == false
    });
    // Refresh tokens are checked in the database: at once everywhere.
    let refresh = field(&rotated, "refresh_token");
    post(
        &a.base,
        "/oauth2/revoke",
        &[("token", &refresh), ("client_id", &web)],
    );
    let (status, refused) = post(
        &b.base,
        "/oauth2/token",
        &[
            ("grant_type", "refresh_token"),
            ("client_id", &web),
            ("refresh_token", &refresh),
        ],
    );
    assert_eq!(
        (status, field(&refused, "error")),
        (400, "invalid_grant".to_owned())
    );

    // A rotation reaches both: every new key (one per algorithm), and
    // then both publish the same set. (Waiting for the first new key
    // alone raced: an instance could reload between two keys' inserts.)
    let new_kids: Vec<String> = admin(d, &["keys", "rotate"], None, &env)
        .lines()
        .map(str::to_owned)
        .collect();
    assert!(!new_kids.is_empty());
    wait_until("both instances publish the new keys", || {
        let (in_a, in_b) = (jwks_kids(&a.base), jwks_kids(&b.base));
        new_kids
            .iter()
            .all(|kid| in_a.contains(kid) && in_b.contains(kid))
    });
    assert_eq!(jwks_kids(&a.base), jwks_kids(&b.base));

    // The signing key leaked: revoked from the command line, it leaves
    // both instances' key sets, and the key that replaces it is in both.
    let listed: serde_json::Value =
        serde_json::from_str(&admin(d, &["keys", "list", "--json"], None, &env)).unwrap();
    let leaked = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["state"] == "active" && k["alg"] == "ES256")
        .and_then(|k| k["kid"].as_str())
        .unwrap()
        .to_owned();
    let replaced_by = admin(d, &["keys", "revoke", &leaked], None, &env)
        .trim()
        .to_owned();
    assert!(!replaced_by.is_empty() && replaced_by != leaked);
    wait_until("neither instance publishes the revoked key", || {
        let (in_a, in_b) = (jwks_kids(&a.base), jwks_kids(&b.base));
        !in_a.contains(&leaked)
            && !in_b.contains(&leaked)
            && in_a.contains(&replaced_by)
            && in_b.contains(&replaced_by)
    });
    drop((a, b));
}

/// A schema of its own on the PostgreSQL test server, dropped at the end;
/// `None` (the test skipped, with a notice) without
/// `TESSERA_TEST_DATABASE_URL`.
struct PgSchema {
    base_url: String,
    schema: String,
    /// The URL whose connections use the schema.
    url: String,
}

impl PgSchema {
    fn new(prefix: &str, what: &str) -> Option<PgSchema> {
        let Ok(base_url) = std::env::var("TESSERA_TEST_DATABASE_URL") else {
            eprintln!("skipped: {what} (set TESSERA_TEST_DATABASE_URL to run it)");
            return None;
        };
        let schema = format!("{prefix}_{}", std::process::id());
        psql(
            &base_url,
            &format!("DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}"),
        );
        let sep = if base_url.contains('?') { '&' } else { '?' };
        let url = format!("{base_url}{sep}options=-c%20search_path%3D{schema}");
        Some(PgSchema {
            base_url,
            schema,
            url,
        })
    }
}

impl Drop for PgSchema {
    fn drop(&mut self) {
        psql(
            &self.base_url,
            &format!("DROP SCHEMA {} CASCADE", self.schema),
        );
    }
}

/// Run SQL statements on the PostgreSQL test server.
fn psql(url: &str, sql: &str) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let pool = sqlx::PgPool::connect(url).await.unwrap();
        for statement in sql.split(';') {
            sqlx::query(statement).execute(&pool).await.unwrap();
        }
        pool.close().await;
    });
}

#[test]
fn kill_9_loses_no_committed_token() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // A lost response may be retried: the grace period covers the one
    // rotation a crash can interrupt. The sessions are one user's,
    // rotating as fast as they can: past the default allowance of 120 a
    // minute, so none.
    std::fs::write(
        d.join("tessera.toml"),
        "[tokens]\nrefresh_grace = \"60s\"\nrefreshes_per_minute = 0\n",
    )
    .unwrap();
    add_alice(d, &[]);
    let web = add_web_client(d, &[]);
    let mut server = start(d, &["--config", "tessera.toml"], &[]);
    let base = server.base.clone();

    // Four sessions rotate as fast as they can; each remembers the last
    // token the server handed it.
    let workers: Vec<_> = (0..4)
        .map(|_| {
            let (base, web) = (base.clone(), web.clone());
            std::thread::spawn(move || {
                let (_, login) = post(
                    &base,
                    "/oauth2/token",
                    &[
                        ("grant_type", "password"),
                        ("client_id", &web),
                        ("username", "alice"),
                        ("password", "correct horse"),
                    ],
                );
                let mut last = field(&login, "refresh_token");
                let mut rotations = 0;
                loop {
                    let response = agent().post(format!("{base}/oauth2/token")).send_form([
                        ("grant_type", "refresh_token"),
                        ("client_id", web.as_str()),
                        ("refresh_token", last.as_str()),
                    ]);
                    let Ok(mut response) = response else { break };
                    let Ok(text) = response.body_mut().read_to_string() else {
                        break;
                    };
                    let v: Value = serde_json::from_str(&text).unwrap();
                    assert!(v["error"].is_null(), "{v}");
                    last = field(&v, "refresh_token");
                    rotations += 1;
                }
                (last, rotations)
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(1500));
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    let sessions: Vec<(String, u32)> = workers.into_iter().map(|w| w.join().unwrap()).collect();
    assert!(sessions.iter().all(|(_, n)| *n > 0), "{sessions:?}");

    let server = start(d, &["--config", "tessera.toml"], &[]);
    for (last, rotations) in sessions {
        let (status, v) = post(
            &server.base,
            "/oauth2/token",
            &[
                ("grant_type", "refresh_token"),
                ("client_id", &web),
                ("refresh_token", &last),
            ],
        );
        assert_eq!(status, 200, "after {rotations} rotations and a crash: {v}");
    }
}

/// Call the store API with a bearer token.
fn api(base: &str, method: &str, path: &str, token: &str, body: Option<&str>) -> u16 {
    let request = ureq::http::Request::builder()
        .method(method)
        .uri(format!("{base}{path}"))
        .header("Authorization", format!("Bearer {token}"))
        .header("Content-Type", "application/json");
    let response = agent()
        .run(request.body(body.unwrap_or("").to_owned()).unwrap())
        .unwrap();
    response.status().as_u16()
}

#[test]
fn store_api_accepts_the_servers_tokens_and_follows_its_key_rotation() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // Fast keys: a new key signs 2 s after a rotation, and the JWKS may be
    // cached for 1 s.
    std::fs::write(
        d.join("tessera.toml"),
        "[keys]\nannounce = \"2s\"\njwks_max_age = \"1s\"\n",
    )
    .unwrap();
    let config = ["--config", "tessera.toml"];
    let client = |name: &str, extra: &[&str]| {
        let mut args = vec!["client", "add", name, "--json", "--config", "tessera.toml"];
        args.extend_from_slice(extra);
        let v: Value = serde_json::from_str(&admin(d, &args, None, &[])).unwrap();
        (
            field(&v, "client_id"),
            v["client_secret"].as_str().unwrap_or("").to_owned(),
        )
    };
    let all = [
        "--scope",
        "items:read",
        "--scope",
        "items:write",
        "--scope",
        "store:admin",
        "--audience",
        "store-api",
    ];
    let (svc, svc_secret) = client("svc", &all);
    let (short, short_secret) = client(
        "short",
        &[
            "--scope",
            "items:read",
            "--audience",
            "store-api",
            "--access-ttl",
            "3s",
        ],
    );
    let (other, other_secret) = client(
        "other",
        &["--scope", "items:read", "--audience", "other-api"],
    );
    let (web, _) = client(
        "web",
        &[
            "--grant",
            "password",
            "--public",
            "--scope",
            "items:read",
            "--audience",
            "store-api",
        ],
    );
    admin(
        d,
        &[
            "user",
            "add",
            "alice",
            "--password-stdin",
            "--scope",
            "items:read",
            "--config",
            "tessera.toml",
        ],
        Some("correct horse\n"),
        &[],
    );
    let server = start(d, &config, &[]);
    let issuer = server.base.clone();

    // The store API as a process, finding the keys through the issuer's
    // metadata, allowed to refetch them every second.
    let api_process = start_store_api(d, &issuer);
    let api_base = api_process.base.clone();
    let token = |id: &str, secret: &str| {
        let (status, v) = post(
            &issuer,
            "/oauth2/token",
            &[
                ("grant_type", "client_credentials"),
                ("client_id", id),
                ("client_secret", secret),
            ],
        );
        assert_eq!(status, 200, "{v}");
        field(&v, "access_token")
    };

    let service = token(&svc, &svc_secret);
    assert_eq!(
        api(
            &api_base,
            "POST",
            "/stores",
            &service,
            Some(r#"{"name":"Corner shop"}"#)
        ),
        201
    );
    let (status, login) = post(
        &issuer,
        "/oauth2/token",
        &[
            ("grant_type", "password"),
            ("client_id", &web),
            ("username", "alice"),
            ("password", "correct horse"),
        ],
    );
    assert_eq!(status, 200, "{login}");
    let user = field(&login, "access_token");
    assert_eq!(api(&api_base, "GET", "/stores/1", &user, None), 200);
    assert_eq!(
        api(&api_base, "DELETE", "/stores/1", &user, None),
        403,
        "alice has no store:admin"
    );

    // Refused: another audience, tampered, forged with a key of our own.
    assert_eq!(
        api(
            &api_base,
            "GET",
            "/stores",
            &token(&other, &other_secret),
            None
        ),
        401
    );
    let mut tampered = service.clone();
    tampered.insert(
        tampered.len() - 2,
        if tampered.ends_with('A') { 'B' } else { 'A' },
    );
    assert_eq!(api(&api_base, "GET", "/stores", &tampered, None), 401);
    admin(
        d,
        &["key", "generate", "--alg", "ES256", "-o", "forger.jwk"],
        None,
        &[],
    );
    let forged = admin(
        d,
        &[
            "token",
            "sign",
            "--key",
            "forger.jwk",
            "--iss",
            &issuer,
            "--aud",
            "store-api",
            "--sub",
            "x",
            "--typ",
            "at+jwt",
            "--claim",
            "scope=items:read",
            "--exp",
            "5m",
        ],
        None,
        &[],
    );
    assert_eq!(api(&api_base, "GET", "/stores", forged.trim(), None), 401);
    // Expired (3 s lifetime, no leeway at the API; long enough for the
    // first use to land in time on a loaded machine).
    let expiring = token(&short, &short_secret);
    assert_eq!(api(&api_base, "GET", "/stores", &expiring, None), 200);
    std::thread::sleep(Duration::from_millis(4100));
    assert_eq!(api(&api_base, "GET", "/stores", &expiring, None), 401);

    // A key rotation at the server: once the new key signs, the API
    // fetches it for the unknown kid, without a restart.
    let old_kid = jwt_kid(&service);
    let new_kid = admin(
        d,
        &["keys", "rotate", "--config", "tessera.toml"],
        None,
        &[],
    )
    .lines()
    .next()
    .unwrap()
    .to_owned();
    wait_until("the new key signs", || {
        jwt_kid(&token(&svc, &svc_secret)) == new_kid
    });
    assert_ne!(old_kid, new_kid);
    let rotated = token(&svc, &svc_secret);
    assert_eq!(api(&api_base, "GET", "/stores", &rotated, None), 200);
    assert_eq!(
        api(&api_base, "GET", "/stores", &service, None),
        200,
        "tokens of the retired key still verify"
    );

    // A key withdrawn at the server (deleted, as if compromised): once the
    // API's cache expires, tokens it signed are refused.
    let db = format!("sqlite://{}", d.join("tessera-data/tessera.db").display());
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let pool = sqlx::SqlitePool::connect(&db).await.unwrap();
        let deleted = sqlx::query("DELETE FROM signing_keys WHERE kid = ?")
            .bind(&old_kid)
            .execute(&pool)
            .await
            .unwrap();
        assert_eq!(deleted.rows_affected(), 1);
        pool.close().await;
    });
    wait_until("the server stops publishing the withdrawn key", || {
        !jwks_kids(&issuer).contains(&old_kid)
    });
    wait_until("the API refuses the withdrawn key's tokens", || {
        api(&api_base, "GET", "/stores", &service, None) == 401
    });
    assert_eq!(api(&api_base, "GET", "/stores", &rotated, None), 200);
    drop(api_process);
    drop(server);
}

/// Start the `store-api` binary against `issuer` and wait for its address.
/// `cargo test --workspace` builds it beside `tessera`; when this test runs
/// alone (`-p tessera-cli`) it is built into a target directory of its own
/// (the outer cargo holds the lock on the usual one).
fn start_store_api(dir: &Path, issuer: &str) -> Server {
    let bin = store_api_binary();
    let db = format!("sqlite://{}", dir.join("store.db").display());
    let child = Process::new(bin)
        .args([
            "--listen",
            "127.0.0.1:0",
            "--database-url",
            &db,
            "--issuer",
            issuer,
        ])
        .args([
            "--audience",
            "store-api",
            "--jwks-refresh-secs",
            "1",
            "--leeway-secs",
            "0",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    listening(child, "store-api: listening ")
}

/// The `store-api` binary: beside `tessera` under `cargo test
/// --workspace`, else built into a target directory of its own.
fn store_api_binary() -> std::path::PathBuf {
    let bin = assert_cmd::cargo::cargo_bin("store-api");
    if bin.exists() {
        return bin;
    }
    let target = bin.parent().unwrap().join("store-api-e2e");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let built = Process::new(cargo)
        .args(["build", "-q", "-p", "store-api", "--target-dir"])
        .arg(&target)
        .status()
        .unwrap();
    assert!(built.success(), "cannot build store-api");
    target.join("debug").join("store-api")
}

/// The `kid` of a token's header.
fn jwt_kid(token: &str) -> String {
    let header = tessera_jose::jws::decode_header(token).unwrap();
    header.kid.unwrap()
}

/// Silent connections are closed after the header timeout, and while the
/// connection limit is taken by them, a new client is served once they
/// are: no request waits for ever behind clients that send nothing.
#[test]
fn silent_connections_are_closed_and_new_clients_served() {
    use std::io::Read;
    use std::net::TcpStream;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(
        d.join("tessera.toml"),
        "[http]\nheader_timeout = \"1s\"\nmax_connections = 40\n",
    )
    .unwrap();
    let server = start(d, &["--config", "tessera.toml"], &[]);
    let address = server.base.trim_start_matches("http://").to_owned();
    let mut silent: Vec<TcpStream> = (0..60)
        .map(|_| TcpStream::connect(&address).unwrap())
        .collect();
    let started = Instant::now();
    let (status, _) = get(&server.base, "/healthz");
    assert_eq!(status, 200);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    for stream in &mut silent {
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut buf = [0u8; 64];
        // Closed by the server: end of stream (or a reset), not a timeout.
        match stream.read(&mut buf) {
            Ok(0) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
            other => panic!("a silent connection was not closed: {other:?}"),
        }
    }
}

/// A start whose master key file is gone, over a database that holds
/// sealed keys, fails in one line, exits non-zero and makes no new key.
#[test]
fn a_missing_master_key_stops_the_start_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut first = start(d, &[], &[]);
    let _ = first.child.kill();
    let _ = first.child.wait();
    let key = d.join("tessera-data").join("master.key");
    std::fs::remove_file(&key).unwrap();
    let out = Process::new(binary())
        .current_dir(d)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env("TESSERA_LOG", "warn")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("master key"), "{stderr}");
    assert!(stderr.contains("does not exist"), "{stderr}");
    assert!(!key.exists(), "a new master key was written");
}

/// Log alice in through `web` at `base`; the status.
fn alice_logs_in(base: &str, web: &str) -> u16 {
    post(
        base,
        "/oauth2/token",
        &[
            ("grant_type", "password"),
            ("client_id", web),
            ("username", "alice"),
            ("password", "correct horse"),
        ],
    )
    .0
}

/// `tessera backup` copies the SQLite database while the server runs;
/// the copy and the master key, put in a new data directory, start a
/// server with the same users, clients and keys.
#[test]
fn backup_while_serving_and_restore() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let server = start(d, &[], &[]);
    add_alice(d, &[]);
    let web = add_web_client(d, &[]);
    assert_eq!(alice_logs_in(&server.base, &web), 200);
    let kids = jwks_kids(&server.base);

    // Logins keep writing while the copy is made.
    let base = server.base.clone();
    let web2 = web.clone();
    let writer = std::thread::spawn(move || {
        (0..5)
            .map(|_| alice_logs_in(&base, &web2))
            .collect::<Vec<_>>()
    });
    let out = assert_cmd::Command::new(binary())
        .current_dir(d)
        .args(["backup", "copy.db"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("master.key") && said.contains("checked"),
        "{said}"
    );
    assert!(writer.join().unwrap().iter().all(|s| *s == 200));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(d.join("copy.db"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    // Never over an existing file.
    let before = std::fs::read(d.join("copy.db")).unwrap();
    let again = assert_cmd::Command::new(binary())
        .current_dir(d)
        .args(["backup", "copy.db"])
        .output()
        .unwrap();
    assert!(!again.status.success());
    assert_eq!(std::fs::read(d.join("copy.db")).unwrap(), before);
    // Run without the server's settings, the backup names no key as the
    // one it needs unless it is: another key, or none where it looks.
    for (i, (variable, value, said)) in [
        ("TESSERA_MASTER_KEY", "A".repeat(43), "is not the one"),
        (
            "TESSERA_MASTER_KEY_FILE",
            d.join("no-such.key").display().to_string(),
            "is not at",
        ),
    ]
    .into_iter()
    .enumerate()
    {
        let out = assert_cmd::Command::new(binary())
            .current_dir(d)
            .args(["backup", &format!("elsewhere-{i}.db")])
            .env(variable, value)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{stderr}");
        assert!(stderr.contains(said), "{variable}: {stderr}");
        assert!(!stderr.contains("checked"), "{variable}: {stderr}");
    }
    drop(server);

    // Restore: the copy as the database, the master key beside it.
    let restored = tempfile::tempdir().unwrap();
    let r = restored.path();
    std::fs::create_dir(r.join("tessera-data")).unwrap();
    std::fs::copy(d.join("copy.db"), r.join("tessera-data/tessera.db")).unwrap();
    std::fs::copy(
        d.join("tessera-data/master.key"),
        r.join("tessera-data/master.key"),
    )
    .unwrap();
    let server = start(r, &[], &[]);
    assert_eq!(jwks_kids(&server.base), kids, "the same signing keys");
    assert_eq!(
        alice_logs_in(&server.base, &web),
        200,
        "the same users and clients"
    );
    drop(server);

    // Without its master key, the copy does not start (and is not harmed).
    std::fs::remove_file(r.join("tessera-data/master.key")).unwrap();
    let out = Process::new(binary())
        .current_dir(r)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("master key"));
}

/// PostgreSQL is backed up with pg_dump: `tessera backup` says so, and a
/// dump restored into an empty database starts a working server.
#[test]
fn a_postgres_dump_restores_into_a_working_server() {
    let Ok(base_url) = std::env::var("TESSERA_TEST_DATABASE_URL") else {
        eprintln!("skipped: pg_dump restore (set TESSERA_TEST_DATABASE_URL to run it)");
        return;
    };
    let Some((server_url, _)) = base_url.rsplit_once('/') else {
        panic!("TESSERA_TEST_DATABASE_URL names no database: {base_url}");
    };
    let id = std::process::id();
    let (src, dst) = (
        format!("tessera_dump_src_{id}"),
        format!("tessera_dump_dst_{id}"),
    );
    for db in [&src, &dst] {
        psql(&base_url, &format!("DROP DATABASE IF EXISTS {db}"));
        psql(&base_url, &format!("CREATE DATABASE {db}"));
    }
    let (src_url, dst_url) = (format!("{server_url}/{src}"), format!("{server_url}/{dst}"));
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let master = "q6sFQ0y1mJmQ4f3xk0PEXW0ZCb8oN3b0nq7yWg1M0aQ";
    let env = [
        ("TESSERA_MASTER_KEY", master),
        ("TESSERA_DATABASE_URL", src_url.as_str()),
    ];
    let server = start(d, &[], &env);
    add_alice(d, &env);
    let web = add_web_client(d, &env);
    let kids = jwks_kids(&server.base);
    let out = assert_cmd::Command::new(binary())
        .current_dir(d)
        .args(["backup", "copy.db"])
        .envs(env)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("pg_dump"));

    let dump = d.join("dump.sql");
    let status = Process::new("pg_dump")
        .args(["--no-owner", "-f"])
        .arg(&dump)
        .arg(&src_url)
        .status()
        .unwrap();
    assert!(status.success());
    drop(server);
    let status = Process::new("psql")
        .args(["-q", "-v", "ON_ERROR_STOP=1", "-d", &dst_url, "-f"])
        .arg(&dump)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let env = [
        ("TESSERA_MASTER_KEY", master),
        ("TESSERA_DATABASE_URL", dst_url.as_str()),
    ];
    let server = start(d, &[], &env);
    assert_eq!(jwks_kids(&server.base), kids);
    assert_eq!(alice_logs_in(&server.base, &web), 200);
    drop(server);
    for db in [&src, &dst] {
        psql(
            &base_url,
            &format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"),
        );
    }
}

/// `tessera keys list` only reads: in an empty directory it makes no data
/// directory, database or master key; over a database whose rotation is
/// due it starts none; and it needs no master key.
#[test]
fn keys_list_only_reads() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let out = assert_cmd::Command::new(binary())
        .current_dir(d)
        .args(["keys", "list"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no database"));
    assert!(
        !d.join("tessera-data").exists(),
        "listing made a data directory"
    );

    let mut server = start(d, &[], &[]);
    let _ = server.child.kill();
    let _ = server.child.wait();
    // A rotation is due by this configuration, and the master key is gone:
    // neither matters to a listing.
    std::fs::write(d.join("due.toml"), "[keys]\nrotate_every = \"1s\"\n").unwrap();
    std::fs::remove_file(d.join("tessera-data/master.key")).unwrap();
    let listed = admin(
        d,
        &["keys", "list", "--json", "--config", "due.toml"],
        None,
        &[],
    );
    let keys: Value = serde_json::from_str(&listed).unwrap();
    // One key for access tokens, one for ID tokens, both active.
    assert_eq!(keys.as_array().unwrap().len(), 2, "{listed}");
    assert_eq!(keys[0]["state"], "active");
    assert_eq!(keys[1]["state"], "active");
    assert!(!d.join("tessera-data/master.key").exists());
    let again = admin(
        d,
        &["keys", "list", "--json", "--config", "due.toml"],
        None,
        &[],
    );
    assert_eq!(again, listed, "a listing changed the keys");
}

/// Pointed at a directory without the server's database, a command that
/// reads or changes users or clients says so (before, it made a new empty
/// database there: `list` showed nothing and exited 0); one that adds
/// makes it (the README's first steps), and says so on stderr. A client's
/// token lifetime is whole seconds.
#[test]
fn user_and_client_commands_other_than_add_need_the_database_and_lifetimes_are_whole_seconds() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for args in [
        &["user", "list"][..],
        &["user", "delete", "bob"],
        &["user", "disable", "bob"],
        &["client", "list"],
        &["client", "delete", "c"],
        &["client", "rotate-secret", "c"],
        &["keys", "rotate"],
    ] {
        let out = assert_cmd::Command::new(binary())
            .current_dir(d)
            .args(args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("no database at"),
            "{args:?}"
        );
        assert!(!d.join("tessera-data").exists(), "{args:?} made a database");
    }
    // A URL without the two slashes names a file as well (sqlx takes it).
    for url in ["sqlite:elsewhere.db", "sqlite:elsewhere.db?mode=rwc"] {
        let out = assert_cmd::Command::new(binary())
            .current_dir(d)
            .args(["user", "list", "--database-url", url])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{url}");
        assert!(!d.join("elsewhere.db").exists(), "{url} made a database");
    }
    let out = assert_cmd::Command::new(binary())
        .current_dir(d)
        .args(["client", "add", "demo", "--scope", "read"])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("making a new one"));
    assert!(d.join("tessera-data/tessera.db").is_file());
    let listed = admin(d, &["client", "list"], None, &[]);
    assert!(listed.contains("demo"), "{listed}");
    // Once it is there, adding says nothing of it.
    let out = assert_cmd::Command::new(binary())
        .current_dir(d)
        .args(["client", "add", "other", "--scope", "read"])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(!String::from_utf8_lossy(&out.stderr).contains("making a new one"));
    // Token lifetimes are whole seconds, as `exp` counts them: 500ms made
    // tokens that expired as they were issued.
    for ttl in ["500ms", "1500ms", "0s"] {
        let out = assert_cmd::Command::new(binary())
            .current_dir(d)
            .args(["client", "add", "short", "--access-ttl", ttl])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{ttl}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("whole seconds"),
            "{ttl}"
        );
    }
}

#[test]
fn a_database_url_with_a_password_is_refused_on_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for url in [
        "postgres://tessera:hunter2@127.0.0.1:1/tessera",
        "postgres://tessera@127.0.0.1:1/tessera?sslmode=disable&password=hunter2",
        "host=127.0.0.1 port=1 password=hunter2",
    ] {
        for args in [
            &["serve", "--listen", "127.0.0.1:0", "--database-url", url][..],
            &["user", "list", "--database-url", url][..],
        ] {
            let out = assert_cmd::Command::new(binary())
                .current_dir(d)
                .args(args)
                .timeout(std::time::Duration::from_secs(30))
                .output()
                .unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
            assert!(stderr.contains("TESSERA_DATABASE_URL"), "{stderr}");
            assert!(!stderr.contains("hunter2"), "{stderr}");
        }
    }
    assert!(!d.join("tessera-data").exists(), "a refused start wrote");

    // Without a password the flag works, and it wins over the variable.
    let flag = format!("sqlite://{}", d.join("flag.db").display());
    let env = format!("sqlite://{}", d.join("env.db").display());
    admin(
        d,
        &[
            "user",
            "add",
            "alice",
            "--password-stdin",
            "--database-url",
            &flag,
        ],
        Some("correct horse battery staple\n"),
        &[("TESSERA_DATABASE_URL", &env)],
    );
    assert!(d.join("flag.db").exists());
    assert!(!d.join("env.db").exists());
    // The variable alone is read, password or not.
    let listed = admin(
        d,
        &["user", "list"],
        None,
        &[("TESSERA_DATABASE_URL", &flag)],
    );
    assert!(listed.contains("alice"), "{listed}");
    // A master key that is not text is refused, not taken as unset (the
    // start would go on under the key file's key).
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt;
        let out = assert_cmd::Command::new(binary())
            .current_dir(d)
            .args(["user", "list", "--database-url", &flag])
            .env("TESSERA_MASTER_KEY", std::ffi::OsStr::from_bytes(b"\xff"))
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2));
        assert!(String::from_utf8_lossy(&out.stderr).contains("TESSERA_MASTER_KEY"));
    }
}

#[test]
fn ids_that_begin_with_a_hyphen_are_ids_not_options() {
    // Session and client ids are random base64url: one in 32 begins with `-`.
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut server = start(d, &[], &[]);
    let _ = server.child.kill();
    let _ = server.child.wait();
    for args in [
        &["session", "end", "-jfZeN9bJ-FfLHL4FZxW6Q"][..],
        &["client", "delete", "-xYz"],
        &["client", "rotate-secret", "-xYz", "--json"],
    ] {
        let out = assert_cmd::Command::new(binary())
            .current_dir(d)
            .args(args)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "tessera {args:?} succeeded");
        assert!(
            stderr.contains("not found") && stderr.contains(args[2]),
            "tessera {args:?} did not look the id up: {stderr}"
        );
    }
}

#[test]
fn admin_commands_follow_the_issuer_they_are_given() {
    // The server runs on https (TESSERA_ISSUER): a client registered from
    // the shell follows the same rules as one registered over the admin
    // API, so a confidential client cannot register a plain-http loopback
    // redirect URI, nor a back-channel logout URI on this host's ports.
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut server = start(d, &[], &[]);
    let _ = server.child.kill();
    let _ = server.child.wait();
    let add = |extra: &[&str], env: &[(&str, &str)]| {
        let mut args = vec!["client", "add", "shop", "--grant", "authorization_code"];
        args.extend_from_slice(extra);
        assert_cmd::Command::new(binary())
            .current_dir(d)
            .args(&args)
            .env_remove("TESSERA_ISSUER")
            .envs(env.iter().copied())
            .output()
            .unwrap()
    };
    let https = [("TESSERA_ISSUER", "https://auth.example.com")];
    for extra in [
        &["--redirect-uri", "http://127.0.0.1:3000/cb"][..],
        &[
            "--redirect-uri",
            "https://app.example.com/cb",
            "--backchannel-logout-uri",
            "http://127.0.0.1:9000/logout",
        ],
    ] {
        let out = add(extra, &https);
        assert!(
            !out.status.success(),
            "{extra:?} was registered under an https issuer"
        );
        let mut flagged = extra.to_vec();
        flagged.extend(["--issuer", "https://auth.example.com"]);
        assert!(!add(&flagged, &[]).status.success(), "{flagged:?}");
        // On a development server (plain http) both are allowed.
        let out = add(extra, &[]);
        assert!(
            out.status.success(),
            "{extra:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let out = add(&["--redirect-uri", "https://app.example.com/cb"], &https);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Only the server's start migrates. The admin commands of a new
/// version, run before the server was restarted on it, migrated the
/// database under the running server of the version before (which would
/// then refuse to start), and made the backup meant to be from before
/// the upgrade a copy of the upgraded schema. Now a backup copies the
/// schema as it is, and the other commands refuse one older or newer than
/// theirs, saying which.
#[test]
fn admin_commands_leave_the_schema_to_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    add_alice(d, &[]);
    let db = format!("sqlite://{}", d.join("tessera-data/tessera.db").display());
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let migrations = |db: &str| {
        runtime.block_on(async {
            let pool = sqlx::SqlitePool::connect(db).await.unwrap();
            let versions: Vec<(i64,)> =
                sqlx::query_as("SELECT version FROM _sqlx_migrations ORDER BY version")
                    .fetch_all(&pool)
                    .await
                    .unwrap();
            pool.close().await;
            versions
        })
    };
    let run = |db: &str, sql: &str| {
        runtime.block_on(async {
            let pool = sqlx::SqlitePool::connect(db).await.unwrap();
            sqlx::query(sql).execute(&pool).await.unwrap();
            pool.close().await;
        })
    };
    let current = migrations(&db);
    // The schema of the version before: its last migration not applied.
    let last = current.last().unwrap().0;
    run(
        &db,
        &format!("DELETE FROM _sqlx_migrations WHERE version = {last}"),
    );
    let older = migrations(&db);
    assert_eq!(older.len() + 1, current.len());

    let backup = assert_cmd::Command::new(binary())
        .current_dir(d)
        .args(["backup", "before.db"])
        .output()
        .unwrap();
    assert!(
        backup.status.success(),
        "{}",
        String::from_utf8_lossy(&backup.stderr)
    );
    assert_eq!(migrations(&db), older, "the backup migrated the database");
    let copy = format!("sqlite://{}", d.join("before.db").display());
    assert_eq!(
        migrations(&copy),
        older,
        "the copy is not of the schema before"
    );

    let refused = |args: &[&str], why: &str| {
        let before = migrations(&db);
        let out = assert_cmd::Command::new(binary())
            .current_dir(d)
            .args(args)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(why), "{args:?}: {stderr}");
        assert_eq!(migrations(&db), before, "{args:?} migrated");
    };
    for args in [
        &["user", "list"][..],
        &["client", "list"],
        &["keys", "list"],
        &["keys", "rotate"],
    ] {
        refused(args, "older than this tessera's");
    }
    // Newer than this build's: refused too.
    run(
        &db,
        &format!(
            "INSERT INTO _sqlx_migrations (version, description, success, checksum, \
             execution_time) SELECT {last}, 'from this build', 1, X'00', 0 \
             UNION ALL SELECT 99990101000000, 'from a later version', 1, X'00', 0"
        ),
    );
    refused(&["user", "list"], "newer than this tessera's");
}

/// An admin command's audit event says who ran it: the login name the
/// environment gives (anyone can set it), the user id the system gives,
/// and, under sudo, who ran sudo. Before, `$USER` alone: "root" under
/// sudo, and whatever a caller chose.
#[test]
fn an_admin_command_is_audited_with_the_user_id_and_who_ran_sudo() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    admin(
        d,
        &["user", "add", "bob", "--password-stdin", "--scope", "read"],
        Some("correct horse battery\n"),
        &[("USER", "mallory"), ("SUDO_USER", "alice")],
    );
    let url = format!("sqlite://{}", d.join("tessera-data/tessera.db").display());
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let events = runtime.block_on(async {
        let db = tessera_server::Db::open(&url, 1, tessera_server::db::Schema::Current)
            .await
            .unwrap();
        let events = tessera_server::store::audit::page(&db, Some("user_added"), None, 10)
            .await
            .unwrap();
        db.close().await;
        events
    });
    let uid = rustix::process::getuid().as_raw();
    let detail = events[0].detail.as_deref().unwrap();
    let by = format!("by=cli user=\"mallory\" uid={uid} sudo=\"alice\" id=");
    assert!(detail.starts_with(&by), "{detail}");
    assert!(detail.ends_with(" scope=\"read\""), "{detail}");
}

/// A secret rotated, or a client added, whose output cannot be written
/// (a full disk under `> file`, a closed pipe): the command fails, and
/// says that the change is made, so that nobody adds the client again or
/// believes the old secret still works.
#[test]
fn a_change_whose_output_is_lost_says_that_it_is_made() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let id = admin(
        d,
        &["client", "add", "svc", "--scope", "read", "--json"],
        None,
        &[],
    );
    let id: serde_json::Value = serde_json::from_str(&id).unwrap();
    let id = id["client_id"].as_str().unwrap().to_owned();
    for (args, said) in [
        (vec!["client", "rotate-secret", id.as_str()], "is rotated"),
        (
            vec!["client", "add", "other", "--scope", "read"],
            "is added",
        ),
    ] {
        let out = std::process::Command::new(binary())
            .current_dir(d)
            .args(&args)
            .stdout(std::fs::File::create("/dev/full").unwrap())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(said), "{args:?}: {stderr}");
    }
}

/// `tessera user set NAME --scope …` gives the user those scopes in place
/// of the old, and leaves the profile as it was; `tessera client set ID
/// --scope …` a client's; `--add-scope` and `--remove-scope` keep the
/// others.
#[test]
fn user_set_and_client_set_replace_or_edit_the_scopes() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    admin(
        d,
        &[
            "user",
            "add",
            "bob",
            "--password-stdin",
            "--scope",
            "read",
            "--scope",
            "write",
            "--name",
            "Bob",
        ],
        Some("correct horse battery\n"),
        &[],
    );
    admin(d, &["user", "set", "bob", "--scope", "read"], None, &[]);
    let listed: serde_json::Value =
        serde_json::from_str(&admin(d, &["user", "list", "--json"], None, &[])).unwrap();
    let bob = &listed[0];
    assert_eq!(bob["scopes"], "read", "{bob}");
    assert_eq!(bob["name"], "Bob", "{bob}");
    // And a client's, with `client set`.
    let added: serde_json::Value = serde_json::from_str(&admin(
        d,
        &[
            "client", "add", "svc", "--scope", "read", "--scope", "write", "--json",
        ],
        None,
        &[],
    ))
    .unwrap();
    let id = added["client_id"].as_str().unwrap();
    admin(d, &["client", "set", id, "--scope", "write"], None, &[]);
    let listed: serde_json::Value =
        serde_json::from_str(&admin(d, &["client", "list", "--json"], None, &[])).unwrap();
    assert_eq!(listed[0]["scopes"], "write", "{listed}");
    // Some added and some taken away, the others kept: no need to name
    // (and no risk of forgetting) the ones that stay.
    admin(
        d,
        &[
            "client",
            "set",
            id,
            "--add-scope",
            "read",
            "--add-scope",
            "audit",
        ],
        None,
        &[],
    );
    admin(
        d,
        &["client", "set", id, "--remove-scope", "write"],
        None,
        &[],
    );
    let listed: serde_json::Value =
        serde_json::from_str(&admin(d, &["client", "list", "--json"], None, &[])).unwrap();
    assert_eq!(listed[0]["scopes"], "audit read", "{listed}");
    admin(
        d,
        &["user", "set", "bob", "--add-scope", "audit"],
        None,
        &[],
    );
    let listed: serde_json::Value =
        serde_json::from_str(&admin(d, &["user", "list", "--json"], None, &[])).unwrap();
    assert_eq!(listed[0]["scopes"], "audit read", "{listed}");
    // Both kinds at once, or a scope both given and taken, is refused.
    for args in [
        &["client", "set", id, "--scope", "read", "--add-scope", "x"][..],
        &[
            "client",
            "set",
            id,
            "--add-scope",
            "x",
            "--remove-scope",
            "x",
        ],
        &["client", "set", id],
        // An empty scope is no scope, not "none": --no-scopes says that.
        &["client", "set", id, "--scope", ""],
        &["client", "set", id, "--no-scopes", "--add-scope", "x"],
    ] {
        let out = assert_cmd::Command::new(binary())
            .current_dir(d)
            .args(args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
    }
    admin(d, &["client", "set", id, "--no-scopes"], None, &[]);
    admin(d, &["user", "set", "bob", "--no-scopes"], None, &[]);
    for what in ["client", "user"] {
        let listed: serde_json::Value =
            serde_json::from_str(&admin(d, &[what, "list", "--json"], None, &[])).unwrap();
        assert_eq!(listed[0]["scopes"], "", "{listed}");
    }
}

/// SIGTERM with `http.shutdown_delay`: `/readyz` says 503 at once, while
/// requests are still served for the delay (the load balancer stops
/// sending before the listener closes); then the listener closes and the
/// process exits cleanly. Before, the listener closed at the signal, and
/// connections the balancer was still sending were refused.
#[test]
fn a_stop_is_announced_before_the_listener_closes() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("tessera.toml"), "[http]\nshutdown_delay = \"5s\"\n").unwrap();
    let creds: Value = serde_json::from_str(&admin(
        d,
        &[
            "client",
            "add",
            "worker",
            "--scope",
            "read",
            "--json",
            "--config",
            "tessera.toml",
        ],
        None,
        &[],
    ))
    .unwrap();
    let (id, secret) = (field(&creds, "client_id"), field(&creds, "client_secret"));
    let mut server = start(d, &["--config", "tessera.toml"], &[]);
    let base = server.base.clone();
    let issue = || {
        post(
            &base,
            "/oauth2/token",
            &[
                ("grant_type", "client_credentials"),
                ("client_id", &id),
                ("client_secret", &secret),
            ],
        )
        .0
    };
    assert_eq!(get(&base, "/readyz"), (200, "ready\n".to_owned()));
    assert_eq!(issue(), 200);

    let signalled = Instant::now();
    let pid = server.child.id().to_string();
    assert!(Process::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    wait_until("/readyz says the server is stopping", || {
        get(&base, "/readyz") == (503, "shutting down\n".to_owned())
    });
    // Still served, on new connections too.
    assert_eq!(issue(), 200);
    assert!(
        signalled.elapsed() < Duration::from_secs(5),
        "the checks took the whole delay: {:?}",
        signalled.elapsed()
    );
    let status = server.child.wait().unwrap();
    assert!(status.success(), "exit status {status:?}");
    assert!(
        signalled.elapsed() >= Duration::from_secs(5),
        "stopped before the delay: {:?}",
        signalled.elapsed()
    );
    assert!(
        agent().get(format!("{base}/healthz")).call().is_err(),
        "still listening after the stop"
    );
}
