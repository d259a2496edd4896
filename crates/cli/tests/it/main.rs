//! End-to-end tests of the `tessera` binary.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};

use assert_cmd::Command;
use serde_json::Value;
use tempfile::TempDir;

mod serve;

const ALGS: [&str; 13] = [
    "HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256",
    "ES384", "ES512", "EdDSA",
];

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

fn tessera(dir: &Path, args: &[&str], stdin: Option<&str>) -> Run {
    tessera_with(dir, args, stdin, &[])
}

/// [`tessera`] with these environment variables set.
fn tessera_with(dir: &Path, args: &[&str], stdin: Option<&str>, env: &[(&str, &str)]) -> Run {
    let mut cmd = Command::cargo_bin("tessera").unwrap();
    cmd.current_dir(dir).args(args).env_remove("JWT_SECRET");
    cmd.envs(env.iter().copied());
    if let Some(input) = stdin {
        cmd.write_stdin(input.to_owned());
    }
    let out = cmd.output().unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8(out.stdout).unwrap(),
        stderr: String::from_utf8(out.stderr).unwrap(),
    }
}

fn ok(dir: &Path, args: &[&str], stdin: Option<&str>) -> String {
    let run = tessera(dir, args, stdin);
    assert_eq!(run.code, 0, "tessera {args:?} failed: {}", run.stderr);
    run.stdout
}

/// Expect exit `code` with `reason` in the one-line error.
fn fails(dir: &Path, args: &[&str], stdin: Option<&str>, code: i32, reason: &str) {
    let run = tessera(dir, args, stdin);
    assert_eq!(
        run.code, code,
        "tessera {args:?}: {}{}",
        run.stdout, run.stderr
    );
    assert!(
        run.stderr.contains(reason),
        "tessera {args:?}: stderr {:?} lacks {reason:?}",
        run.stderr
    );
    assert_eq!(
        run.stderr.trim_end().lines().count(),
        1,
        "not one line: {:?}",
        run.stderr
    );
    assert!(!run.stderr.contains("panicked"), "{}", run.stderr);
}

fn generate(dir: &Path, alg: &str, name: &str, kid: Option<&str>) -> PathBuf {
    let mut args = vec!["key", "generate", "--alg", alg, "-o", name];
    if let Some(kid) = kid {
        args.extend(["--kid", kid]);
    }
    ok(dir, &args, None);
    dir.join(name)
}

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

#[test]
fn every_algorithm_generates_signs_and_verifies() {
    let dir = TempDir::new().unwrap();
    let d = dir.path();
    for alg in ALGS {
        let key = format!("{alg}.jwk");
        generate(d, alg, &key, None);
        let jwk = json(&std::fs::read_to_string(d.join(&key)).unwrap());
        assert_eq!(jwk["alg"], alg);
        assert_eq!(jwk["kid"], ok(d, &["key", "thumbprint", &key], None).trim());
        let token = ok(
            d,
            &[
                "token", "sign", "--key", &key, "--sub", "alice", "--exp", "5m",
            ],
            None,
        );
        assert_eq!(token.matches('.').count(), 2);
        let claims = json(&ok(
            d,
            &["token", "verify", "--any-iss", "--any-aud", "--key", &key],
            Some(&token),
        ));
        assert_eq!(claims["sub"], "alice", "{alg}");
        if !alg.starts_with("HS") {
            let public = ok(d, &["key", "public", &key], None);
            assert!(
                !public.contains("\"d\""),
                "{alg}: private part in public key"
            );
            std::fs::write(d.join("public.jwk"), &public).unwrap();
            let claims = json(&ok(
                d,
                &[
                    "token",
                    "verify",
                    "--any-iss",
                    "--any-aud",
                    "--key",
                    "public.jwk",
                    token.trim(),
                ],
                None,
            ));
            assert_eq!(claims["sub"], "alice");
            // Through PEM too.
            let pem = ok(d, &["key", "convert", "--to", "pem", "public.jwk"], None);
            assert!(pem.starts_with("-----BEGIN PUBLIC KEY-----"));
            std::fs::write(d.join("public.pem"), &pem).unwrap();
            ok(
                d,
                &[
                    "token",
                    "verify",
                    "--any-iss",
                    "--any-aud",
                    "--key",
                    "public.pem",
                    "--alg",
                    alg,
                ],
                Some(&token),
            );
        } else {
            fails(d, &["key", "public", &key], None, 2, "shared secret");
        }
    }
}

#[cfg(unix)]
#[test]
fn private_keys_are_written_0600_and_never_over_an_existing_file() {
    use std::os::unix::fs::PermissionsExt;
    let dir = TempDir::new().unwrap();
    let path = generate(dir.path(), "ES256", "k.jwk", Some("k1"));
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    fails(
        dir.path(),
        &["key", "generate", "--alg", "ES256", "-o", "k.jwk"],
        None,
        2,
        "exists already: a key file is never written over",
    );
}

/// `tessera key master FILE`: a master key for a path the server's
/// configuration names (the server makes one only in its data
/// directory), owner only, never printed, never over an existing file.
#[cfg(unix)]
#[test]
fn master_keys_are_made_in_a_new_private_file() {
    use std::os::unix::fs::PermissionsExt;
    let dir = TempDir::new().unwrap();
    let d = dir.path();
    let printed = ok(d, &["key", "master", "master.key"], None);
    assert_eq!(printed, "", "the key was printed");
    let path = d.join("master.key");
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let text = std::fs::read_to_string(&path).unwrap();
    let bytes = base64_simd::URL_SAFE_NO_PAD
        .decode_to_vec(text.trim())
        .unwrap();
    assert_eq!(bytes.len(), 32);
    fails(
        d,
        &["key", "master", "master.key"],
        None,
        2,
        "exists already",
    );
    assert_eq!(std::fs::read_to_string(&path).unwrap(), text);
}

#[test]
fn jwks_chooses_the_key_by_kid() {
    let dir = TempDir::new().unwrap();
    let d = dir.path();
    generate(d, "ES256", "a.jwk", Some("a"));
    generate(d, "ES256", "b.jwk", Some("b"));
    generate(d, "RS256", "r.jwk", Some("r"));
    let jwks = ok(d, &["jwks", "a.jwk", "b.jwk", "r.jwk"], None);
    assert_eq!(json(&jwks)["keys"].as_array().unwrap().len(), 3);
    assert!(!jwks.contains("\"d\""));
    std::fs::write(d.join("jwks.json"), &jwks).unwrap();
    for key in ["a.jwk", "b.jwk", "r.jwk"] {
        let token = ok(d, &["token", "sign", "--key", key, "--exp", "5m"], None);
        ok(
            d,
            &[
                "token",
                "verify",
                "--any-iss",
                "--any-aud",
                "--jwks",
                "jwks.json",
            ],
            Some(&token),
        );
    }
    // A stranger's key claiming kid "b" does not get in.
    generate(d, "ES256", "evil.jwk", Some("b"));
    let forged = ok(
        d,
        &["token", "sign", "--key", "evil.jwk", "--exp", "5m"],
        None,
    );
    fails(
        d,
        &[
            "token",
            "verify",
            "--any-iss",
            "--any-aud",
            "--jwks",
            "jwks.json",
        ],
        Some(&forged),
        1,
        "invalid signature",
    );
    let unknown = ok(
        d,
        &[
            "token", "sign", "--key", "evil.jwk", "--kid", "zzz", "--exp", "5m",
        ],
        None,
    );
    fails(
        d,
        &[
            "token",
            "verify",
            "--any-iss",
            "--any-aud",
            "--jwks",
            "jwks.json",
        ],
        Some(&unknown),
        1,
        "no key matches kid \"zzz\"",
    );
    // Two keys a verifier could not tell apart make no set.
    fails(
        d,
        &["jwks", "a.jwk", "evil.jwk", "b.jwk"],
        None,
        2,
        "both EC keys have kid \"b\"",
    );
    fails(d, &["jwks", "a.jwk", "a.jwk"], None, 2, "kid \"a\"");
    for (from, to) in [("a.jwk", "n1.jwk"), ("b.jwk", "n2.jwk")] {
        let mut jwk = json(&std::fs::read_to_string(d.join(from)).unwrap());
        jwk.as_object_mut().unwrap().remove("kid");
        std::fs::write(d.join(to), jwk.to_string()).unwrap();
    }
    fails(d, &["jwks", "n1.jwk", "n2.jwk"], None, 2, "without a kid");
    // Keys of different types may share a kid: a verifier tells them apart.
    generate(d, "RS256", "r-as-a.jwk", Some("a"));
    ok(d, &["jwks", "a.jwk", "r-as-a.jwk"], None);
    generate(d, "HS256", "secret.jwk", None);
    fails(
        d,
        &["jwks", "a.jwk", "secret.jwk"],
        None,
        2,
        "shared secret",
    );
}

/// Serve `body` as JSON to one HTTP request on a loopback port.
fn serve_once(body: String, status: &'static str) -> String {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!(
        "http://{}/.well-known/jwks.json",
        listener.local_addr().unwrap()
    );
    std::thread::spawn(move || {
        if let Ok((mut stream, _)) = listener.accept() {
            let mut request = [0u8; 4096];
            let _ = stream.read(&mut request);
            let head = format!(
                "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                body.len()
            );
            let _ = stream.write_all(head.as_bytes());
            let _ = stream.write_all(body.as_bytes());
        }
    });
    url
}

#[test]
fn jwks_url_is_fetched_and_failures_exit_2() {
    let dir = TempDir::new().unwrap();
    let d = dir.path();
    generate(d, "ES384", "k.jwk", Some("remote"));
    let jwks = ok(d, &["jwks", "k.jwk"], None);
    let token = ok(
        d,
        &[
            "token", "sign", "--key", "k.jwk", "--sub", "carol", "--exp", "5m",
        ],
        None,
    );
    let url = serve_once(jwks.clone(), "200 OK");
    let claims = json(&ok(
        d,
        &[
            "token",
            "verify",
            "--any-iss",
            "--any-aud",
            "--jwks-url",
            &url,
        ],
        Some(&token),
    ));
    assert_eq!(claims["sub"], "carol");
    // A proxy in the environment is not used for this machine: a plain
    // request through it would leave the machine, and the proxy could
    // answer with its own keys (this one refuses connections).
    let url = serve_once(jwks, "200 OK");
    let proxy = "http://127.0.0.1:9";
    let proxied = tessera_with(
        d,
        &[
            "token",
            "verify",
            "--any-iss",
            "--any-aud",
            "--jwks-url",
            &url,
        ],
        Some(&token),
        &[
            ("ALL_PROXY", proxy),
            ("HTTPS_PROXY", proxy),
            ("HTTP_PROXY", proxy),
            ("NO_PROXY", ""),
            ("no_proxy", ""),
        ],
    );
    assert_eq!(proxied.code, 0, "{}", proxied.stderr);
    // A published set with a secret in it: anyone could have signed. An
    // HMAC key (the token is signed with it), then the private key itself.
    generate(d, "HS256", "hs.jwk", Some("remote"));
    let hs_token = ok(
        d,
        &[
            "token", "sign", "--key", "hs.jwk", "--sub", "mallory", "--exp", "5m",
        ],
        None,
    );
    let secret_set = format!(
        "{{\"keys\":[{}]}}",
        std::fs::read_to_string(d.join("hs.jwk")).unwrap().trim()
    );
    let private_set = format!(
        "{{\"keys\":[{}]}}",
        std::fs::read_to_string(d.join("k.jwk")).unwrap().trim()
    );
    for (set, signed, why) in [
        (secret_set, &hs_token, "symmetric (oct) key"),
        (private_set, &token, "private key"),
    ] {
        let url = serve_once(set, "200 OK");
        fails(
            d,
            &[
                "token",
                "verify",
                "--any-iss",
                "--any-aud",
                "--jwks-url",
                &url,
            ],
            Some(signed),
            2,
            why,
        );
    }
    // An RSA key published without `alg` (as Entra ID does) is not used
    // unless --alg says which: no key for the token is the set's or the
    // arguments' trouble (exit 2, saying why), not the token's.
    generate(d, "RS256", "rsa.jwk", Some("no-alg"));
    let rsa_token = ok(
        d,
        &[
            "token", "sign", "--key", "rsa.jwk", "--sub", "dave", "--exp", "5m",
        ],
        None,
    );
    let mut public = json(&ok(d, &["jwks", "rsa.jwk"], None));
    public["keys"][0].as_object_mut().unwrap().remove("alg");
    let verify = |url: &str, alg: Option<&str>| {
        let mut args = vec![
            "token",
            "verify",
            "--any-iss",
            "--any-aud",
            "--jwks-url",
            url,
        ];
        if let Some(alg) = alg {
            args.extend(["--alg", alg]);
        }
        tessera(d, &args, Some(&rsa_token))
    };
    let run = verify(&serve_once(public.to_string(), "200 OK"), None);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(
        run.stderr.contains("not used: kid \"no-alg\" (RSA)"),
        "{}",
        run.stderr
    );
    let run = verify(&serve_once(public.to_string(), "200 OK"), Some("RS256"));
    assert_eq!(run.code, 0, "{}", run.stderr);
    // A skipped key that could not have signed the token (another kid)
    // says nothing of it: an invalid token, exit 1.
    public["keys"][0]["kid"] = "elsewhere".into();
    let run = verify(&serve_once(public.to_string(), "200 OK"), None);
    assert_eq!(run.code, 1, "{}", run.stderr);
    let url = serve_once("{}".to_owned(), "404 Not Found");
    fails(
        d,
        &[
            "token",
            "verify",
            "--any-iss",
            "--any-aud",
            "--jwks-url",
            &url,
        ],
        Some(&token),
        2,
        "fetching",
    );
    let url = serve_once("not json".to_owned(), "200 OK");
    fails(
        d,
        &[
            "token",
            "verify",
            "--any-iss",
            "--any-aud",
            "--jwks-url",
            &url,
        ],
        Some(&token),
        2,
        "reading the JWK set at",
    );
    fails(
        d,
        &[
            "token",
            "verify",
            "--any-iss",
            "--any-aud",
            "--jwks-url",
            "http://127.0.0.1:1/jwks.json",
        ],
        Some(&token),
        2,
        "fetching",
    );
    // The TLS stack (rustls on aws-lc-rs) starts, and a failed handshake is
    // an input error, not a panic.
    let plain = serve_once("{}".to_owned(), "200 OK").replace("http://", "https://");
    fails(
        d,
        &[
            "token",
            "verify",
            "--any-iss",
            "--any-aud",
            "--jwks-url",
            &plain,
        ],
        Some(&token),
        2,
        "fetching",
    );
}

#[test]
fn invalid_tokens_exit_1_and_say_why() {
    let dir = TempDir::new().unwrap();
    let d = dir.path();
    generate(d, "ES256", "k.jwk", None);
    let sign = |extra: &[&str]| {
        let mut args = vec![
            "token",
            "sign",
            "--key",
            "k.jwk",
            "--iss",
            "https://issuer",
            "--aud",
            "api",
        ];
        args.extend_from_slice(extra);
        ok(d, &args, None)
    };
    let verify = [
        "token",
        "verify",
        "--key",
        "k.jwk",
        "--iss",
        "https://issuer",
        "--aud",
        "api",
    ];
    let past = (std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        - 2 * 86_400)
        .to_string();
    let expired = sign(&["--claim", &format!("exp={past}")]);
    fails(
        d,
        &verify,
        Some(&expired),
        1,
        "invalid token: token expired at",
    );
    fails(d, &verify, Some(&expired), 1, "2 days ago (leeway 60s)");
    fails(
        d,
        &verify,
        Some(&sign(&["--nbf", "1h", "--exp", "2h"])),
        1,
        "not valid before",
    );
    let good = sign(&["--exp", "5m", "--typ", "at+jwt"]);
    ok(d, &verify, Some(&good));
    for (extra, reason) in [
        (&["--iss", "https://other"][..], "issuer"),
        (&["--aud", "other"], "audience"),
        (&["--typ", "JWT"], "token type"),
        (&["--require", "scope"], "\"scope\" is missing"),
        // (An --alg the key is not for is the command's mistake, exit 2:
        // `a_scripts_mistakes_are_said_plainly`.)
    ] {
        let mut args = vec!["token", "verify", "--key", "k.jwk"];
        args.extend_from_slice(extra);
        for (given, any) in [("--iss", "--any-iss"), ("--aud", "--any-aud")] {
            if !extra.contains(&given) {
                args.push(any);
            }
        }
        fails(d, &args, Some(&good), 1, reason);
    }
    // An issuer or audience not named is refused, not taken as any: a
    // token of the same keys for another API passed unnoticed.
    for (missing, named) in [
        ("--iss", ["--aud", "api"]),
        ("--aud", ["--iss", "https://issuer"]),
    ] {
        let mut args = vec!["token", "verify", "--key", "k.jwk"];
        args.extend_from_slice(&named);
        let run = tessera(d, &args, Some(&good));
        assert_eq!(run.code, 2, "{args:?}: {}", run.stderr);
        assert!(run.stderr.contains(missing), "{args:?}: {}", run.stderr);
        assert!(run.stdout.is_empty(), "{}", run.stdout);
    }
    let mut tampered = good.trim().to_owned();
    let mid = tampered.find('.').unwrap() + 5;
    let c = if &tampered[mid..=mid] == "A" {
        "B"
    } else {
        "A"
    };
    tampered.replace_range(mid..=mid, c);
    fails(d, &verify, Some(&tampered), 1, "invalid");
    generate(d, "ES256", "other.jwk", None);
    fails(
        d,
        &[
            "token",
            "verify",
            "--any-iss",
            "--any-aud",
            "--key",
            "other.jwk",
        ],
        Some(&good),
        1,
        "invalid signature",
    );
    // HS256 made with the secret, checked against a public key: refused.
    ok(d, &["key", "public", "k.jwk"], None);
    std::fs::write(d.join("pub.jwk"), ok(d, &["key", "public", "k.jwk"], None)).unwrap();
    std::fs::write(
        d.join("secret.txt"),
        "a shared secret of thirty-two bytes!\n",
    )
    .unwrap();
    let hs = ok(
        d,
        &[
            "token",
            "sign",
            "--secret-file",
            "secret.txt",
            "--exp",
            "5m",
        ],
        None,
    );
    fails(
        d,
        &[
            "token",
            "verify",
            "--any-iss",
            "--any-aud",
            "--key",
            "pub.jwk",
        ],
        Some(&hs),
        1,
        "signed with HS256 but the key is for ES256",
    );
    fails(
        d,
        &[
            "token",
            "verify",
            "--any-iss",
            "--any-aud",
            "--key",
            "k.jwk",
        ],
        Some("not.a.token"),
        1,
        "invalid token",
    );
}

#[test]
fn secrets_come_from_files_or_the_environment() {
    let dir = TempDir::new().unwrap();
    let d = dir.path();
    // HS384 needs a secret of at least 48 bytes (RFC 7518 §3.2).
    let secret = "correct horse battery staple, and then some more bytes";
    std::fs::write(d.join("s.txt"), format!("{secret}\n")).unwrap();
    let token = Command::cargo_bin("tessera")
        .unwrap()
        .current_dir(d)
        .env("JWT_SECRET", secret)
        .args([
            "token",
            "sign",
            "--secret-env",
            "JWT_SECRET",
            "--alg",
            "HS384",
            "--sub",
            "bob",
            "--exp",
            "1m",
        ])
        .output()
        .unwrap();
    assert!(token.status.success());
    let token = String::from_utf8(token.stdout).unwrap();
    let claims = json(&ok(
        d,
        &[
            "token",
            "verify",
            "--any-iss",
            "--any-aud",
            "--secret-file",
            "s.txt",
            "--alg",
            "HS384",
        ],
        Some(&token),
    ));
    assert_eq!(claims["sub"], "bob");
    fails(
        d,
        &[
            "token",
            "verify",
            "--any-iss",
            "--any-aud",
            "--secret-file",
            "s.txt",
        ],
        Some(&token),
        1,
        "signed with HS384 but the key is for HS256",
    );
    fails(
        d,
        &[
            "token",
            "verify",
            "--any-iss",
            "--any-aud",
            "--secret-env",
            "JWT_SECRET",
        ],
        Some(&token),
        2,
        "--secret-env names is not set",
    );
    std::fs::write(d.join("short.txt"), "short").unwrap();
    fails(
        d,
        &["token", "sign", "--secret-file", "short.txt"],
        None,
        2,
        "at least 32 bytes",
    );
    // Random bytes that end in a newline keep it: the secret is all 64.
    let mut random = vec![0xA7u8; 63];
    random[0] = 0xFF;
    random.push(b'\n');
    std::fs::write(d.join("random.key"), &random).unwrap();
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, &random);
    let header_and_claims = format!(
        "{}.{}",
        base64_simd::URL_SAFE_NO_PAD.encode_to_string(br#"{"alg":"HS256"}"#),
        base64_simd::URL_SAFE_NO_PAD.encode_to_string(br#"{"sub":"eve","exp":9999999999}"#)
    );
    let tag = aws_lc_rs::hmac::sign(&key, header_and_claims.as_bytes());
    let by_another_tool = format!(
        "{header_and_claims}.{}",
        base64_simd::URL_SAFE_NO_PAD.encode_to_string(tag.as_ref())
    );
    let claims = json(&ok(
        d,
        &[
            "token",
            "verify",
            "--any-iss",
            "--any-aud",
            "--secret-file",
            "random.key",
        ],
        Some(&by_another_tool),
    ));
    assert_eq!(claims["sub"], "eve");

    // `-` reads the secret from standard input, as a secret manager pipes
    // it; the token then comes as an argument, and two inputs never share
    // standard input.
    let piped = ok(
        d,
        &[
            "token",
            "sign",
            "--secret-file",
            "-",
            "--sub",
            "pat",
            "--exp",
            "1m",
        ],
        Some(&format!("{secret}\n")),
    );
    let claims = json(&ok(
        d,
        &[
            "token",
            "verify",
            "--any-iss",
            "--any-aud",
            "--secret-file",
            "s.txt",
            piped.trim(),
        ],
        None,
    ));
    assert_eq!(claims["sub"], "pat");
    let claims = json(&ok(
        d,
        &[
            "token",
            "verify",
            "--any-iss",
            "--any-aud",
            "--secret-file",
            "-",
            piped.trim(),
        ],
        Some(secret),
    ));
    assert_eq!(claims["sub"], "pat");
    fails(
        d,
        &[
            "token",
            "verify",
            "--any-iss",
            "--any-aud",
            "--secret-file",
            "-",
        ],
        Some(&piped),
        2,
        "--secret-env VAR or --secret-file FILE",
    );
    fails(
        d,
        &["token", "sign", "--secret-file", "-", "--claims", "-"],
        Some(secret),
        2,
        "both read standard input",
    );
}

#[test]
fn bad_input_exits_2_with_one_line() {
    let dir = TempDir::new().unwrap();
    let d = dir.path();
    std::fs::write(d.join("junk.jwk"), "{\"kty\":").unwrap();
    std::fs::write(d.join("notakey"), "hello").unwrap();
    generate(d, "RS256", "r.jwk", None);
    let pem = ok(d, &["key", "convert", "--to", "pem", "r.jwk"], None);
    assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----"));
    std::fs::write(d.join("r.pem"), &pem).unwrap();
    let cases: [(&[&str], Option<&str>, &str); 7] = [
        (&["token", "sign", "--key", "junk.jwk"], None, "junk.jwk"),
        (&["token", "sign", "--key", "notakey"], None, "not a JWK"),
        (
            &["token", "sign", "--key", "missing.jwk"],
            None,
            "missing.jwk",
        ),
        (
            &["token", "sign", "--key", "r.pem"],
            None,
            "an RSA key serves several algorithms: name one with --alg",
        ),
        (
            &["token", "sign", "--key", "r.jwk", "--claims", "-"],
            Some("[1,2]"),
            "JSON object",
        ),
        (
            &[
                "token", "sign", "--key", "r.jwk", "--exp", "1m", "--header", "alg=none",
            ],
            None,
            "key decides",
        ),
        (
            &[
                "token",
                "verify",
                "--any-iss",
                "--any-aud",
                "--key",
                "r.jwk",
                "--leeway",
                "1h",
            ],
            Some("x"),
            "over the maximum of 300s",
        ),
    ];
    for (args, stdin, reason) in cases {
        fails(d, args, stdin, 2, reason);
    }
    let run = tessera(
        d,
        &["token", "sign", "--key", "r.jwk", "--alg", "none"],
        None,
    );
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("unknown algorithm"), "{}", run.stderr);
    let run = tessera(
        d,
        &["token", "verify", "--any-iss", "--any-aud"],
        Some("x.y.z"),
    );
    assert_eq!(run.code, 2, "a key source is required");
    // PEM private keys sign with --alg and convert back to the same public key.
    let token = ok(
        d,
        &[
            "token", "sign", "--key", "r.pem", "--alg", "RS256", "--exp", "1m",
        ],
        None,
    );
    ok(
        d,
        &[
            "token",
            "verify",
            "--any-iss",
            "--any-aud",
            "--key",
            "r.jwk",
        ],
        Some(&token),
    );
    let back = json(&ok(
        d,
        &["key", "convert", "--to", "jwk", "--alg", "RS256", "r.pem"],
        None,
    ));
    let original = json(&std::fs::read_to_string(d.join("r.jwk")).unwrap());
    assert_eq!(back["n"], original["n"]);
    assert_eq!(back["kid"], original["kid"]);
}

#[test]
fn decode_shows_claims_labelled_unverified() {
    let dir = TempDir::new().unwrap();
    let d = dir.path();
    generate(d, "EdDSA", "k.jwk", Some("k1"));
    let token = ok(
        d,
        &[
            "token",
            "sign",
            "--key",
            "k.jwk",
            "--exp",
            "14m",
            "--claim",
            "scope=read write",
            "--header",
            "x-env=\"test\"",
        ],
        None,
    );
    let text = ok(d, &["token", "decode", token.trim()], None);
    assert!(text.starts_with("UNVERIFIED"));
    assert!(text.contains("exp: ") && text.contains("(in 1"), "{text}");
    let doc = json(&ok(d, &["token", "decode", "--json"], Some(&token)));
    assert_eq!(doc["verified"], false);
    assert_eq!(doc["header"]["kid"], "k1");
    assert_eq!(doc["header"]["x-env"], "test");
    assert_eq!(doc["payload"]["scope"], "read write");
    assert!(doc["times"]["exp"]["relative"]
        .as_str()
        .unwrap()
        .starts_with("in "));
    fails(d, &["token", "decode"], Some("garbage"), 1, "malformed");
}

#[test]
fn sign_refuses_tokens_no_verifier_would_take() {
    let dir = TempDir::new().unwrap();
    let d = dir.path();
    generate(d, "ES256", "k.jwk", None);
    let sign = |extra: &[&str]| {
        let mut args = vec!["token", "sign", "--key", "k.jwk"];
        args.extend_from_slice(extra);
        args.iter().map(|a| (*a).to_owned()).collect::<Vec<_>>()
    };
    let run = |args: Vec<String>, stdin: Option<&str>| {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        tessera(d, &args, stdin)
    };
    // No exp: a token that never expires must be asked for.
    let refused = run(sign(&["--sub", "alice"]), None);
    assert_eq!(refused.code, 2, "{}", refused.stderr);
    assert!(refused.stderr.contains("--exp"), "{}", refused.stderr);
    let forever = run(sign(&["--sub", "alice", "--no-exp"]), None);
    assert_eq!(forever.code, 0, "{}", forever.stderr);
    let doc = json(&ok(
        d,
        &["token", "decode", "--json"],
        Some(&forever.stdout),
    ));
    assert!(doc["payload"].get("exp").is_none());
    // And verified only when told so.
    let verify = [
        "token",
        "verify",
        "--key",
        "k.jwk",
        "--any-iss",
        "--any-aud",
    ];
    fails(d, &verify, Some(&forever.stdout), 1, "exp");
    let mut allowing = verify.to_vec();
    allowing.push("--allow-no-exp");
    let claims = json(&ok(d, &allowing, Some(&forever.stdout)));
    assert_eq!(claims["sub"], "alice");
    // exp from the claims counts.
    let in_claims = run(sign(&["--claims", "-"]), Some("{\"exp\":4102444800}"));
    assert_eq!(in_claims.code, 0, "{}", in_claims.stderr);
    let refusals: [(&[&str], Option<&str>, &str); 9] = [
        (
            &["--exp", "5m", "--header", "x5u=1", "--header", "x5u=2"],
            None,
            "header x5u is given more than once",
        ),
        // Given twice: not a silent choice.
        (&["--exp", "5m", "--claim", "exp=99999999999"], None, "exp"),
        (
            &["--exp", "5m", "--claims", "-"],
            Some(r#"{"role":"user","role":"admin"}"#),
            "\"role\" is given more than once",
        ),
        (
            &["--exp", "5m", "--claims", "-"],
            Some("{\"exp\":1}"),
            "exp",
        ),
        (
            &["--exp", "5m", "--claim", "a=1", "--claim", "a=2"],
            None,
            "a is given more",
        ),
        // Registered claims of the wrong type.
        (
            &["--claim", "exp=soon"],
            None,
            "exp must be whole seconds since 1970",
        ),
        (
            &["--exp", "5m", "--claim", "aud=5"],
            None,
            "cannot be signed",
        ),
        // Past what RFC 3339 and JavaScript can read.
        (&["--exp", "400000000000y"], None, "9999"),
        (&["--no-exp", "--claim", "exp=4102444800"], None, "--no-exp"),
    ];
    for (extra, stdin, reason) in refusals {
        let args = sign(extra);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        fails(d, &args, stdin, 2, reason);
    }
    // No token at all is the input's trouble, not an invalid token.
    for verb in [
        &["verify", "--key", "k.jwk", "--any-iss", "--any-aud"][..],
        &["decode"],
    ] {
        let mut args = vec!["token"];
        args.extend_from_slice(verb);
        for stdin in ["", " \n"] {
            fails(d, &args, Some(stdin), 2, "no token given");
        }
    }
    // A token past what tessera's verifiers take by default is signed,
    // with a warning saying so, rather than found out at verification.
    let big = format!(
        "{{\"notes\":\"{}\",\"exp\":4102444800}}",
        "n".repeat(13_000)
    );
    let large = run(sign(&["--claims", "-"]), Some(&big));
    assert_eq!(large.code, 0, "{}", large.stderr);
    assert!(
        large
            .stderr
            .contains("warning: tessera's verifiers refuse this token by default"),
        "{}",
        large.stderr
    );
    fails(
        d,
        &[
            "token",
            "verify",
            "--key",
            "k.jwk",
            "--any-iss",
            "--any-aud",
        ],
        Some(&large.stdout),
        1,
        "limit",
    );
    assert!(
        !in_claims.stderr.contains("warning"),
        "{}",
        in_claims.stderr
    );
    // A nested token says so in its own option.
    let nested = run(sign(&["--exp", "5m", "--cty", "JWT"]), None);
    assert_eq!(nested.code, 0, "{}", nested.stderr);
    let doc = json(&ok(d, &["token", "decode", "--json"], Some(&nested.stdout)));
    assert_eq!(doc["header"]["cty"], "JWT");
    // In a --claim's JSON too (the argument parser's error, with its hint).
    let repeated = run(
        sign(&["--exp", "5m", "--claim", r#"roles={"shop":1,"shop":2}"#]),
        None,
    );
    assert_eq!(repeated.code, 2, "{}", repeated.stderr);
    assert!(
        repeated.stderr.contains("\"shop\" is given more than once"),
        "{}",
        repeated.stderr
    );
}

#[test]
fn decode_survives_dates_at_the_ends_of_time() {
    let dir = TempDir::new().unwrap();
    let d = dir.path();
    generate(d, "ES256", "k.jwk", None);
    for exp in [i64::MIN, i64::MAX] {
        let claims = format!("{{\"exp\":{exp},\"nbf\":{exp}}}");
        // Signed without exp checks (the dates are the point), then decoded.
        let token = ok(
            d,
            &[
                "token", "sign", "--key", "k.jwk", "--no-exp", "--no-iat", "--claim", "x=1",
            ],
            None,
        );
        let (head, _) = token.trim().split_once('.').unwrap();
        let payload = base64_simd::URL_SAFE_NO_PAD.encode_to_string(&claims);
        let forged = format!("{head}.{payload}.AAAA");
        let run = tessera(d, &["token", "decode", "--json"], Some(&forged));
        assert_eq!(run.code, 0, "{exp}: {}", run.stderr);
        assert!(!run.stderr.contains("panicked"), "{}", run.stderr);
    }
}

#[test]
fn a_published_key_verifies_what_its_private_key_signed() {
    // WebCrypto exports a private key with key_ops ["sign"]: its public
    // form must verify, not be a key for nothing.
    let dir = TempDir::new().unwrap();
    let d = dir.path();
    let key = generate(d, "ES256", "k.jwk", Some("k1"));
    let mut jwk = json(&std::fs::read_to_string(&key).unwrap());
    jwk["key_ops"] = serde_json::json!(["sign"]);
    std::fs::write(d.join("ops.jwk"), jwk.to_string()).unwrap();
    let token = ok(
        d,
        &["token", "sign", "--key", "ops.jwk", "--exp", "5m"],
        None,
    );
    std::fs::write(d.join("set.json"), ok(d, &["jwks", "ops.jwk"], None)).unwrap();
    ok(
        d,
        &[
            "token",
            "verify",
            "--any-iss",
            "--any-aud",
            "--jwks",
            "set.json",
        ],
        Some(&token),
    );
    std::fs::write(
        d.join("pub.jwk"),
        ok(d, &["key", "public", "ops.jwk"], None),
    )
    .unwrap();
    ok(
        d,
        &[
            "token",
            "verify",
            "--any-iss",
            "--any-aud",
            "--key",
            "pub.jwk",
        ],
        Some(&token),
    );
}

#[test]
fn jwks_urls_are_https_unless_on_this_machine() {
    let dir = TempDir::new().unwrap();
    let d = dir.path();
    // Refused before any connection (192.0.2.1 is TEST-NET: it would hang).
    for url in [
        "http://192.0.2.1/jwks.json",
        "ftp://example.com/jwks.json",
        "not a url",
    ] {
        fails(
            d,
            &[
                "token",
                "verify",
                "--any-iss",
                "--any-aud",
                "--jwks-url",
                url,
            ],
            Some("x.y.z"),
            2,
            "https",
        );
    }
}

#[test]
fn inputs_are_bounded() {
    let dir = TempDir::new().unwrap();
    let d = dir.path();
    generate(d, "ES256", "k.jwk", None);
    let huge = "a".repeat(2 << 20);
    fails(
        d,
        &[
            "token",
            "verify",
            "--any-iss",
            "--any-aud",
            "--key",
            "k.jwk",
        ],
        Some(&huge),
        2,
        "more than",
    );
    std::fs::write(d.join("big.json"), &huge).unwrap();
    fails(
        d,
        &[
            "token",
            "verify",
            "--any-iss",
            "--any-aud",
            "--jwks",
            "big.json",
        ],
        Some("x.y.z"),
        2,
        "more than",
    );
    fails(
        d,
        &["token", "sign", "--secret-file", "big.json", "--exp", "1m"],
        None,
        2,
        "more than",
    );
}

#[test]
fn converted_private_keys_are_written_0600_and_never_over_a_file() {
    let dir = TempDir::new().unwrap();
    let d = dir.path();
    generate(d, "ES256", "k.jwk", None);
    ok(
        d,
        &["key", "convert", "--to", "pem", "-o", "k.pem", "k.jwk"],
        None,
    );
    let pem = std::fs::read_to_string(d.join("k.pem")).unwrap();
    assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----"), "{pem}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(d.join("k.pem"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    fails(
        d,
        &["key", "convert", "--to", "pem", "-o", "k.pem", "k.jwk"],
        None,
        2,
        "exists already: a key file is never written over",
    );
    assert_eq!(std::fs::read_to_string(d.join("k.pem")).unwrap(), pem);
    // Nothing left beside it.
    let names: Vec<String> = std::fs::read_dir(d)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.iter().all(|n| !n.ends_with(".tmp")), "{names:?}");
    // An encrypted PEM key is named as such, not taken for RSA.
    std::fs::write(
        d.join("enc.pem"),
        "-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIIB\n-----END ENCRYPTED PRIVATE KEY-----\n",
    )
    .unwrap();
    fails(
        d,
        &["key", "convert", "--to", "jwk", "enc.pem"],
        None,
        2,
        "encrypted",
    );
}

#[test]
fn output_that_cannot_be_written_is_an_error_not_a_panic() {
    // Standard output a pipe whose reader is gone (`tessera … | head
    // -c0`): every write fails with EPIPE.
    let dir = TempDir::new().unwrap();
    let d = dir.path();
    generate(d, "ES256", "k.jwk", None);
    for args in [
        &["key", "generate", "--alg", "ES256"][..],
        &["jwks", "k.jwk"],
        &["token", "sign", "--key", "k.jwk", "--exp", "1m"],
    ] {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let out = std::process::Command::new(assert_cmd::cargo::cargo_bin("tessera"))
            .current_dir(d)
            .args(args)
            .stdout(writer)
            .stderr(std::process::Stdio::piped())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains("writing to standard output"), "{stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}

/// A private key written to standard output that is not a terminal (a
/// redirect makes a file with the umask's mode, often readable by all)
/// comes with a warning pointing to `-o`; public output comes without.
#[test]
fn a_private_key_to_standard_output_is_warned_about() {
    let dir = TempDir::new().unwrap();
    let d = dir.path();
    let warned = |run: &Run| {
        run.stderr
            .contains("warning: a private key goes to standard output")
    };
    let run = tessera(d, &["key", "generate", "--alg", "ES256"], None);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(warned(&run), "{}", run.stderr);
    std::fs::write(d.join("k.jwk"), &run.stdout).unwrap();
    let run = tessera(d, &["key", "convert", "--to", "pem", "k.jwk"], None);
    assert!(run.code == 0 && warned(&run), "{}", run.stderr);
    for args in [&["jwks", "k.jwk"][..], &["key", "public", "k.jwk"]] {
        let run = tessera(d, args, None);
        assert_eq!(run.code, 0, "{args:?}: {}", run.stderr);
        assert!(!warned(&run), "{args:?}: {}", run.stderr);
    }
    let run = tessera(
        d,
        &["key", "generate", "--alg", "ES256", "-o", "o.jwk"],
        None,
    );
    assert!(run.code == 0 && !warned(&run), "{}", run.stderr);
}

/// Mistakes a script makes are said as what they are, in one line that
/// repeats nothing and shows no secret: a secret given where the name of
/// its variable goes, an `--alg` the key is not for, an `iat` of one's
/// own without `--no-iat`, a key written where no directory is.
#[test]
fn a_scripts_mistakes_are_said_plainly() {
    let dir = TempDir::new().unwrap();
    let d = dir.path();
    // A value with a space, and a hex one (which looks like a name).
    for (secret, said) in [
        (
            "s3cr3t value that is long enough for HS256 ok",
            "not a value",
        ),
        // Begins with a letter: a name, as far as its characters go.
        (
            "af86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
            "not set",
        ),
    ] {
        let run = tessera(
            d,
            &["token", "sign", "--secret-env", secret, "--exp", "1m"],
            None,
        );
        assert_eq!(run.code, 2, "{}", run.stderr);
        assert!(run.stderr.contains(said), "{}", run.stderr);
        assert!(
            !run.stderr.contains(&secret[..8]),
            "the secret is shown: {}",
            run.stderr
        );
    }

    generate(d, "RS256", "rs.jwk", Some("r1"));
    let token = ok(
        d,
        &["token", "sign", "--key", "rs.jwk", "--exp", "5m"],
        None,
    );
    fails(
        d,
        &[
            "token",
            "verify",
            "--key",
            "rs.jwk",
            "--alg",
            "PS256",
            "--any-iss",
            "--any-aud",
        ],
        Some(&token),
        2,
        "the key is for RS256, and --alg allows only PS256",
    );

    let own_iat = ["--claim", "iat=1700000000"];
    let sign = ["token", "sign", "--key", "rs.jwk", "--exp", "5m"];
    fails(
        d,
        &[&sign[..], &own_iat[..]].concat(),
        None,
        2,
        "add --no-iat to set your own",
    );
    let own = ok(d, &[&sign[..], &["--no-iat"], &own_iat[..]].concat(), None);
    let decoded = json(&ok(d, &["token", "decode", "--json"], Some(&own)));
    assert_eq!(decoded["payload"]["iat"], 1_700_000_000, "{decoded}");

    let run = tessera(
        d,
        &["key", "generate", "--alg", "ES256", "-o", "nodir/k.jwk"],
        None,
    );
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(
        run.stderr.starts_with("error: creating nodir/k.jwk: "),
        "{}",
        run.stderr
    );
    assert_eq!(
        run.stderr.matches("No such file or directory").count(),
        1,
        "{}",
        run.stderr
    );
}

/// Serve `body` once over TLS at 127.0.0.1, under a certificate of a CA
/// of the test's own; returns the URL and the CA's certificate (PEM).
fn serve_once_over_tls(body: String) -> (String, String) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    use std::io::{Read, Write};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_pem = ca.self_signed(&ca_key).unwrap().pem();
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            rustls::pki_types::PrivatePkcs8KeyDer::from(key.serialize_der()).into(),
        )
        .unwrap();
    let config = std::sync::Arc::new(config);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("https://{}/jwks.json", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        // Each connection once: one refused (an unknown CA), one answered.
        for tcp in listener.incoming().take(2) {
            let Ok(tcp) = tcp else { continue };
            let conn = rustls::ServerConnection::new(std::sync::Arc::clone(&config)).unwrap();
            let mut tls = rustls::StreamOwned::new(conn, tcp);
            let mut request = [0u8; 4096];
            if tls.read(&mut request).is_err() {
                continue;
            }
            let head = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                body.len()
            );
            let _ = tls.write_all(head.as_bytes());
            let _ = tls.write_all(body.as_bytes());
            tls.conn.send_close_notify();
            let _ = tls.flush();
        }
    });
    (url, ca_pem)
}

/// `--jwks-url` of an issuer whose certificate a private CA signed: refused
/// with the built-in roots, trusted with `--cacert` naming the CA.
#[test]
fn a_jwks_url_behind_a_private_ca_is_trusted_with_cacert() {
    let dir = TempDir::new().unwrap();
    let d = dir.path();
    generate(d, "ES256", "k.jwk", Some("k1"));
    let jwks = ok(d, &["jwks", "k.jwk"], None);
    let token = ok(d, &["token", "sign", "--key", "k.jwk", "--exp", "5m"], None);
    let (url, ca) = serve_once_over_tls(jwks);
    std::fs::write(d.join("ca.pem"), ca).unwrap();
    let verify = [
        "token",
        "verify",
        "--jwks-url",
        &url,
        "--any-iss",
        "--any-aud",
    ];
    let refused = tessera(d, &verify, Some(&token));
    assert_eq!(refused.code, 2, "{}", refused.stderr);
    assert!(refused.stderr.contains("fetching"), "{}", refused.stderr);
    ok(
        d,
        &[&verify[..], &["--cacert", "ca.pem"]].concat(),
        Some(&token),
    );
    // A file with no certificate in it is said to be one.
    std::fs::write(d.join("empty.pem"), "no certificates here\n").unwrap();
    fails(
        d,
        &[&verify[..], &["--cacert", "empty.pem"]].concat(),
        Some(&token),
        2,
        "holds no certificate",
    );
}

/// An Ed25519 JWK without `alg` verifies under the name `--alg` gives it
/// (`Ed25519`, RFC 9864, as well as `EdDSA`), among other algorithms.
#[test]
fn an_ed25519_key_without_alg_takes_the_name_asked_for() {
    let dir = TempDir::new().unwrap();
    let d = dir.path();
    generate(d, "Ed25519", "k.jwk", Some("k1"));
    let token = ok(d, &["token", "sign", "--key", "k.jwk", "--exp", "5m"], None);
    let public = json(&ok(d, &["key", "public", "k.jwk"], None));
    let mut bare = public.clone();
    bare.as_object_mut().unwrap().remove("alg");
    std::fs::write(d.join("bare.jwk"), bare.to_string()).unwrap();
    let verify = [
        "token",
        "verify",
        "--key",
        "bare.jwk",
        "--any-iss",
        "--any-aud",
        "--alg",
        "Ed25519",
        "--alg",
        "ES256",
    ];
    ok(d, &verify, Some(&token));
}

/// `--claim-str` keeps its value a string whatever it looks like, so a
/// script's data cannot change the token's shape (with `--claim`,
/// `tenant=123` is a number and `roles=["admin"]` an array).
#[test]
fn claim_str_values_stay_strings() {
    let dir = TempDir::new().unwrap();
    let d = dir.path();
    generate(d, "ES256", "k.jwk", Some("k1"));
    let sign = ["token", "sign", "--key", "k.jwk", "--exp", "5m"];
    let token = ok(
        d,
        &[
            &sign[..],
            &[
                "--claim-str",
                "tenant=123",
                "--claim-str",
                "roles=[\"admin\"]",
                "--claim",
                "level=3",
            ],
        ]
        .concat(),
        None,
    );
    let decoded = json(&ok(d, &["token", "decode", "--json"], Some(&token)));
    let payload = &decoded["payload"];
    assert_eq!(payload["tenant"], "123", "{payload}");
    assert_eq!(payload["roles"], "[\"admin\"]", "{payload}");
    assert_eq!(payload["level"], 3, "{payload}");
    fails(
        d,
        &[&sign[..], &["--claim", "n=1", "--claim-str", "n=2"]].concat(),
        None,
        2,
        "n is given more than once",
    );
    // A time as a duration or a date, by name, with the option it meant.
    fails(
        d,
        &[
            "token", "sign", "--key", "k.jwk", "--no-exp", "--claim", "nbf=15m",
        ],
        None,
        2,
        "nbf must be whole seconds since 1970 (a number); for a time from now, use --nbf 15m",
    );
}

/// A PEM EC or Ed25519 key signs and verifies without --alg: its type
/// implies the one algorithm, as `key convert` already knew.
#[test]
fn a_pem_ec_key_needs_no_alg() {
    let dir = TempDir::new().unwrap();
    let d = dir.path();
    generate(d, "ES384", "k.jwk", Some("k1"));
    let pem = ok(d, &["key", "convert", "--to", "pem", "k.jwk"], None);
    std::fs::write(d.join("k.pem"), &pem).unwrap();
    let public = ok(d, &["key", "public", "k.jwk"], None);
    std::fs::write(d.join("pub.jwk"), &public).unwrap();
    let public = ok(d, &["key", "convert", "--to", "pem", "pub.jwk"], None);
    std::fs::write(d.join("pub.pem"), &public).unwrap();
    let token = ok(d, &["token", "sign", "--key", "k.pem", "--exp", "5m"], None);
    let header = json(&ok(d, &["token", "decode", "--json"], Some(&token)));
    assert_eq!(header["header"]["alg"], "ES384", "{header}");
    ok(
        d,
        &[
            "token",
            "verify",
            "--key",
            "pub.pem",
            "--any-iss",
            "--any-aud",
        ],
        Some(&token),
    );
}
