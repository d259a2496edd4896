//! `tessera token sign | verify | decode`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, Context};
use clap::{ArgGroup, Args, Subcommand};
use serde::Deserialize;
use serde_json::{Map, Value};
use tessera_jose::jws::Header;
use tessera_jose::{
    dangerous, describe_span, jwt, Algorithm, Audience, Claims, JwkSet, KeySet, NumericDate,
    SigningKey, Validation, VerifyingKey,
};

use crate::input::{self, name_value, parse_alg, parse_duration};
use crate::Failure;

#[derive(Subcommand)]
pub enum TokenCommand {
    /// Sign a token; prints it and a newline (and a warning on standard
    /// error if tessera's verifiers would refuse its size).
    #[command(after_help = "Examples:\n  \
        tessera token sign --key signing.jwk --iss https://auth.example.com --sub alice --aud api --exp 15m\n  \
        tessera token sign --secret-env JWT_SECRET --alg HS256 --claim scope=\"items:read\" --exp 1h\n  \
        echo '{\"role\":\"admin\"}' | tessera token sign --key rsa.pem --alg RS256 --claims - --jti --exp 10m")]
    Sign(SignArgs),
    /// Verify a token; prints its claims as JSON, or why it is invalid (exit 1).
    #[command(after_help = "Examples:\n  \
        tessera token verify --key public.jwk --iss https://auth.example.com --aud api < token.txt\n  \
        echo \"$TOKEN\" | tessera token verify --jwks jwks.json --iss https://auth.example.com --any-aud --typ at+jwt --require scope")]
    Verify(VerifyArgs),
    /// Show a token's header and claims WITHOUT verifying anything.
    #[command(
        after_help = "Example (the token on standard input, not in the process list):\n  echo \"$TOKEN\" | tessera token decode"
    )]
    Decode(DecodeArgs),
}

#[derive(Args)]
#[command(group(ArgGroup::new("signer").required(true).args(["key", "secret_file", "secret_env"])))]
pub struct SignArgs {
    /// Private key: a JWK (private, or oct), or PEM (an RSA one needs
    /// --alg; an EC or Ed25519 one implies its algorithm).
    #[arg(long, value_name = "FILE")]
    key: Option<PathBuf>,
    /// HMAC secret, read from this file or `-` for standard input (text
    /// loses one trailing newline; other bytes are taken as they are).
    #[arg(long, value_name = "FILE|-")]
    secret_file: Option<PathBuf>,
    /// HMAC secret, read from this environment variable (text loses one
    /// trailing newline; other bytes are taken as they are).
    #[arg(long, value_name = "VAR")]
    secret_env: Option<String>,
    /// Algorithm (default: the JWK's; HS256 for a raw secret).
    #[arg(long, value_parser = parse_alg)]
    alg: Option<Algorithm>,
    /// Claims to start from: a JSON object in a file, or `-` for standard
    /// input (an object naming a member twice is refused).
    #[arg(long, value_name = "FILE|-")]
    claims: Option<String>,
    /// A claim; VALUE is JSON if it parses as JSON (an object naming a
    /// member twice is refused), else a string. Repeatable. From data a
    /// script does not control, use --claim-str.
    #[arg(long = "claim", value_name = "NAME=VALUE", value_parser = name_value)]
    claim: Vec<(String, Value)>,
    /// A claim whose VALUE is a string, whatever it looks like (`123`,
    /// `true` and `["admin"]` stay text). Repeatable.
    #[arg(long = "claim-str", value_name = "NAME=VALUE", value_parser = input::name_string)]
    claim_str: Vec<(String, Value)>,
    /// Subject (`sub`).
    #[arg(long)]
    sub: Option<String>,
    /// Issuer (`iss`).
    #[arg(long)]
    iss: Option<String>,
    /// Audience (`aud`); repeat for several.
    #[arg(long)]
    aud: Vec<String>,
    /// Expire this long from now (`exp`), e.g. 15m, 1h, 2d. Required,
    /// unless the claims hold `exp` or --no-exp is given.
    #[arg(long, value_parser = parse_duration)]
    exp: Option<Duration>,
    /// Make a token that never expires (no `exp`), which verifiers
    /// refuse by default.
    #[arg(long, conflicts_with = "exp")]
    no_exp: bool,
    /// Not valid until this long from now (`nbf`).
    #[arg(long, value_parser = parse_duration)]
    nbf: Option<Duration>,
    /// Leave out `iat` (issued-at), which is set to now by default.
    #[arg(long)]
    no_iat: bool,
    /// Add a random `jti` (token id).
    #[arg(long)]
    jti: bool,
    /// Header `typ` (default JWT), e.g. at+jwt.
    #[arg(long)]
    typ: Option<String>,
    /// Header `kid` (default: the key's).
    #[arg(long)]
    kid: Option<String>,
    /// Header `cty`: `JWT` for a token whose payload is another JWT
    /// (RFC 7519 §5.2).
    #[arg(long)]
    cty: Option<String>,
    /// An extra header member, NAME=VALUE, each NAME once (not typ, kid,
    /// cty or alg: they have their own options). Repeatable.
    #[arg(long = "header", value_name = "NAME=VALUE", value_parser = name_value)]
    header: Vec<(String, Value)>,
}

#[derive(Args)]
#[command(group(ArgGroup::new("verifier").required(true).args(["key", "jwks", "jwks_url", "secret_file", "secret_env"])))]
#[command(group(ArgGroup::new("issuer").required(true).args(["iss", "any_iss"])))]
#[command(group(ArgGroup::new("audience").required(true).args(["aud", "any_aud"])))]
pub struct VerifyArgs {
    /// The token; `-` or nothing for standard input (better: an argument
    /// shows in the process list).
    #[arg(value_name = "TOKEN|-")]
    token: Option<String>,
    /// Verification key: a JWK (public, private or oct) or PEM (an RSA
    /// one needs one --alg; an EC or Ed25519 one implies its algorithm).
    #[arg(long, value_name = "FILE")]
    key: Option<PathBuf>,
    /// A JWK set; the key is chosen by the token's `kid` and algorithm.
    #[arg(long, value_name = "FILE")]
    jwks: Option<PathBuf>,
    /// A JWK set fetched from this URL (10 s timeout, 1 MiB at most;
    /// https, or http to this machine, reached directly, never through a
    /// proxy).
    #[arg(long, value_name = "URL")]
    jwks_url: Option<String>,
    /// Trust the certificate authorities in this PEM file for --jwks-url,
    /// in place of the built-in ones (Mozilla's), as curl's --cacert: an
    /// issuer whose certificate a private CA signed.
    #[arg(long, value_name = "FILE", requires = "jwks_url")]
    cacert: Option<PathBuf>,
    /// HMAC secret, read from this file or `-` for standard input (text
    /// loses one trailing newline; other bytes are taken as they are).
    #[arg(long, value_name = "FILE|-")]
    secret_file: Option<PathBuf>,
    /// HMAC secret, read from this environment variable (text loses one
    /// trailing newline; other bytes are taken as they are).
    #[arg(long, value_name = "VAR")]
    secret_env: Option<String>,
    /// Accept only these algorithms. Repeatable.
    #[arg(long, value_parser = parse_alg)]
    alg: Vec<Algorithm>,
    /// Required issuer (`iss`); repeat to accept several. This or
    /// --any-iss: a token from the same keys' issuer for another purpose
    /// must not pass unnoticed.
    #[arg(long)]
    iss: Vec<String>,
    /// Accept any issuer (say so: there is no default).
    #[arg(long)]
    any_iss: bool,
    /// Required audience (`aud` must contain one of these); repeatable.
    /// This or --any-aud: a token for another API must not pass unnoticed.
    #[arg(long)]
    aud: Vec<String>,
    /// Accept any audience (say so: there is no default).
    #[arg(long)]
    any_aud: bool,
    /// Required subject (`sub`).
    #[arg(long)]
    sub: Option<String>,
    /// Required header `typ`, e.g. at+jwt.
    #[arg(long)]
    typ: Option<String>,
    /// Clock-skew allowance (default 60s, at most 5m).
    #[arg(long, value_parser = parse_duration)]
    leeway: Option<Duration>,
    /// A claim that must be present. Repeatable.
    #[arg(long, value_name = "CLAIM")]
    require: Vec<String>,
    /// Refuse tokens issued longer ago than this (needs `iat`).
    #[arg(long, value_parser = parse_duration)]
    max_age: Option<Duration>,
    /// Accept a token without `exp` (one `token sign --no-exp` made); by
    /// default a token that never expires is refused.
    #[arg(long)]
    allow_no_exp: bool,
}

#[derive(Args)]
pub struct DecodeArgs {
    /// The token; `-` or nothing for standard input (better: an argument
    /// shows in the process list).
    #[arg(value_name = "TOKEN|-")]
    token: Option<String>,
    /// Print one JSON document instead of text.
    #[arg(long)]
    json: bool,
}

pub fn run(command: TokenCommand) -> Result<(), Failure> {
    match command {
        TokenCommand::Sign(args) => sign(args),
        TokenCommand::Verify(args) => verify(&args),
        TokenCommand::Decode(args) => decode(&args),
    }
}

fn read_token(token: Option<&str>) -> anyhow::Result<String> {
    let text = match token {
        None | Some("-") => input::read_source(None)?,
        Some(token) => token.to_owned(),
    };
    let token = text.trim();
    // Nothing to check is the input's trouble (exit 2), not a token that
    // failed (exit 1): a script that lost its token must not read it as
    // "refused".
    if token.is_empty() {
        anyhow::bail!("no token given (the argument or standard input is empty)");
    }
    Ok(token.to_owned())
}

/// Whether `path` is `-`, standard input.
fn is_stdin(path: Option<&Path>) -> bool {
    path == Some(Path::new("-"))
}

fn sign(args: SignArgs) -> Result<(), Failure> {
    if is_stdin(args.secret_file.as_deref()) && args.claims.as_deref() == Some("-") {
        return Err(anyhow!(
            "--secret-file - and --claims - both read standard input: give one of them a file"
        )
        .into());
    }
    let key = match &args.key {
        Some(path) => input::signing_key(path, args.alg)?,
        None => {
            let secret = input::secret(args.secret_file.as_deref(), args.secret_env.as_deref())?
                .context("no key given")?;
            SigningKey::hmac(args.alg.unwrap_or(Algorithm::HS256), secret.expose())?
        }
    };
    let mut claims = match &args.claims {
        Some(source) => match input::json_without_repeats(&input::read_source(Some(source))?)
            .context("--claims must be a JSON object")?
        {
            Value::Object(map) => map,
            _ => return Err(anyhow!("--claims must be a JSON object").into()),
        },
        None => Map::new(),
    };
    // The options' claims, then --claim's: a name given twice is an
    // error, not a silent choice (`--exp 5m --claim exp=…`).
    let now = NumericDate::now();
    let mut options = Map::new();
    if !args.no_iat {
        options.insert("iat".into(), now.seconds().into());
    }
    if let Some(exp) = args.exp {
        options.insert("exp".into(), now.plus(exp).seconds().into());
    }
    if let Some(nbf) = args.nbf {
        options.insert("nbf".into(), now.plus(nbf).seconds().into());
    }
    if let Some(iss) = args.iss {
        options.insert("iss".into(), iss.into());
    }
    if let Some(sub) = args.sub {
        options.insert("sub".into(), sub.into());
    }
    let aud: Option<Value> = match args.aud.as_slice() {
        [] => None,
        [one] => Some(one.clone().into()),
        many => Some(many.to_vec().into()),
    };
    if let Some(aud) = aud {
        options.insert("aud".into(), aud);
    }
    if args.jti {
        options.insert("jti".into(), jwt::random_id()?.into());
    }
    // `iat` is now unless --no-iat: a token's own `iat` needs that said.
    let twice = |name: &str, how: &str| -> Failure {
        if name == "iat" && !args.no_iat {
            anyhow!("iat is set to now unless --no-iat is given: add --no-iat to set your own")
                .into()
        } else {
            anyhow!("{name} is {how}; give it once").into()
        }
    };
    for (name, value) in options {
        if claims.contains_key(&name) {
            return Err(twice(&name, "set by its option and by --claims"));
        }
        claims.insert(name, value);
    }
    for (name, value) in args.claim.into_iter().chain(args.claim_str) {
        if claims.insert(name.clone(), value).is_some() {
            return Err(twice(&name, "given more than once"));
        }
    }
    // The registered claims with the types verifiers read them as: a
    // token no verifier can read is refused here, not signed. The times
    // first, by name: `exp=15m` or a date is a common slip.
    for (name, option) in [
        ("exp", Some("--exp")),
        ("nbf", Some("--nbf")),
        ("iat", None),
    ] {
        if claims.get(name).is_some_and(|v| !v.is_i64() && !v.is_u64()) {
            let hint = option
                .map(|o| format!("; for a time from now, use {o} 15m"))
                .unwrap_or_default();
            return Err(anyhow!("{name} must be whole seconds since 1970 (a number){hint}").into());
        }
    }
    let claims = typed(claims).map_err(|e| anyhow!("the claims cannot be signed: {e}"))?;
    for (name, at) in [
        ("exp", claims.exp),
        ("nbf", claims.nbf),
        ("iat", claims.iat),
    ] {
        if at.is_some_and(|at| at.seconds() > LAST_DATE) {
            return Err(anyhow!("{name} is after the year 9999").into());
        }
    }
    if claims.exp.is_none() && !args.no_exp {
        return Err(anyhow!(
            "the token would never expire: give --exp (for example --exp 15m), \
             or --no-exp if that is what you want"
        )
        .into());
    }
    if claims.exp.is_some() && args.no_exp {
        return Err(anyhow!("--no-exp, yet the claims hold exp").into());
    }
    let mut header = Header::for_key(&key).typ(args.typ.unwrap_or_else(|| "JWT".to_owned()));
    if let Some(kid) = args.kid {
        header = header.kid(kid);
    }
    if let Some(cty) = args.cty {
        header = header.cty(cty);
    }
    let mut named = std::collections::HashSet::new();
    for (name, value) in args.header {
        if !named.insert(name.clone()) {
            return Err(anyhow!("header {name} is given more than once; give it once").into());
        }
        header = match name.as_str() {
            "typ" | "kid" | "cty" => {
                return Err(
                    anyhow!("set {name} with its own option (--{name}), not --header").into(),
                )
            }
            "alg" => {
                return Err(anyhow!("the key decides the algorithm; use --alg with the key").into())
            }
            _ => header.member(name, value),
        };
    }
    let token = jwt::sign_with_header(&header, &claims, &key)?;
    // Past what tessera's verifiers take by default (16 KiB, a 12 KiB
    // payload): signed as asked, another verifier may take it, but said,
    // since `token verify` and tessera-guard would refuse it.
    if let Err(e) = tessera_jose::dangerous::decode_unverified_claims(&token) {
        eprintln!(
            "warning: tessera's verifiers refuse this token by default ({e}); \
             `tessera token verify` cannot check it"
        );
    }
    out!("{token}");
    Ok(())
}

fn verify(args: &VerifyArgs) -> Result<(), Failure> {
    if is_stdin(args.secret_file.as_deref()) && matches!(args.token.as_deref(), None | Some("-")) {
        return Err(anyhow!(
            "--secret-file - reads standard input, where the token would come from: \
             give the secret with --secret-env VAR or --secret-file FILE instead"
        )
        .into());
    }
    let token = read_token(args.token.as_deref())?;
    let mut validation = Validation::new();
    // Any only when told (clap requires one of each pair).
    validation = if args.any_iss {
        validation.any_issuer()
    } else {
        args.iss.iter().fold(validation, |v, iss| v.issuer(iss))
    };
    validation = if args.any_aud {
        validation.any_audience()
    } else {
        args.aud.iter().fold(validation, |v, aud| v.audience(aud))
    };
    if let Some(sub) = &args.sub {
        validation = validation.subject(sub);
    }
    if let Some(typ) = &args.typ {
        validation = validation.typ(typ);
    }
    if let Some(leeway) = args.leeway {
        // Over the maximum (5m) is refused by the validation itself (exit 2).
        validation = validation.leeway(leeway);
    }
    if args.allow_no_exp {
        validation = validation.allow_missing_exp();
    }
    if let Some(age) = args.max_age {
        validation = validation.max_age(age);
    }
    for claim in &args.require {
        validation = validation.require(claim);
    }
    if !args.alg.is_empty() {
        validation = validation.algorithms(args.alg.iter().copied());
    }
    let jwks = match (&args.jwks, &args.jwks_url) {
        (Some(path), _) => Some((
            input::read_file(path)?,
            format!("the JWK set in {}", path.display()),
            false,
        )),
        (None, Some(url)) => Some((
            fetch(url, args.cacert.as_deref())?,
            format!("the JWK set at {url}"),
            true,
        )),
        (None, None) => None,
    };
    let verified = if let Some((text, origin, published)) = jwks {
        let set = JwkSet::from_json(&text).with_context(|| format!("reading {origin}"))?;
        // A published set (an issuer's) with a secret in it: anyone could
        // have signed the token. A file of the operator's own may hold an
        // HMAC key.
        if published {
            set.check_published()
                .with_context(|| format!("refusing {origin}"))?;
        }
        let keys = KeySet::from_jwks_allowing(&set, &args.alg)?;
        match jwt::verify::<Value>(&token, &keys, &validation) {
            // No key for it, but the set had keys it could not use (an
            // RSA key published without `alg`): the set or the arguments
            // are the trouble, not the token (exit 2), and why is said.
            Err(e @ tessera_jose::Error::NoMatchingKey { .. }) => {
                let unused = could_have_signed(&token, keys.skipped());
                if unused.is_empty() {
                    Err(e)
                } else {
                    return Err(
                        anyhow!("{e}; keys of {origin} not used: {}", unused.join("; ")).into(),
                    );
                }
            }
            verified => verified,
        }
    } else {
        let key = match &args.key {
            Some(path) => input::verifying_key(path, &args.alg)?,
            None => {
                let secret =
                    input::secret(args.secret_file.as_deref(), args.secret_env.as_deref())?
                        .context("no key given")?;
                let alg = match args.alg.as_slice() {
                    [] => Algorithm::HS256,
                    [alg] => *alg,
                    _ => return Err(anyhow!("with a raw secret, name one --alg").into()),
                };
                VerifyingKey::hmac(alg, secret.expose())?
            }
        };
        jwt::verify::<Value>(&token, &key, &validation)
    };
    let verified = verified.map_err(|e| match e {
        tessera_jose::Error::InvalidConfig { .. } => Failure::Input(e.into()),
        e => Failure::Invalid(e),
    })?;
    out!("{}", serde_json::to_string_pretty(&verified.claims.custom)?);
    Ok(())
}

/// The keys of a set that were skipped and could have signed `token`
/// ([`tessera_jose::SkippedKey::could_have_signed`]), each said with why.
fn could_have_signed(token: &str, skipped: &[tessera_jose::SkippedKey]) -> Vec<String> {
    let Ok((header, _)) = tessera_jose::dangerous::decode_unverified(token) else {
        return Vec::new();
    };
    skipped
        .iter()
        .filter(|k| k.could_have_signed(header.kid.as_deref(), header.alg))
        .map(|k| {
            format!(
                "kid {:?} ({}): {}",
                k.kid.as_deref().unwrap_or(""),
                k.kty.as_deref().unwrap_or("?"),
                k.reason
            )
        })
        .collect()
}

/// The registered claims, as verifiers read them.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Registered {
    iss: Option<String>,
    sub: Option<String>,
    aud: Option<Audience>,
    exp: Option<NumericDate>,
    nbf: Option<NumericDate>,
    iat: Option<NumericDate>,
    jti: Option<String>,
}

/// `claims` with its registered members read as their types.
fn typed(mut claims: Map<String, Value>) -> serde_json::Result<Claims<Map<String, Value>>> {
    let registered: Map<String, Value> = ["iss", "sub", "aud", "exp", "nbf", "iat", "jti"]
        .into_iter()
        .filter_map(|name| Some((name.to_owned(), claims.remove(name)?)))
        .collect();
    let r: Registered = serde_json::from_value(Value::Object(registered))?;
    let mut typed = Claims::with_custom(claims);
    typed.iss = r.iss;
    typed.sub = r.sub;
    typed.aud = r.aud;
    typed.exp = r.exp;
    typed.nbf = r.nbf;
    typed.iat = r.iat;
    typed.jti = r.jti;
    Ok(typed)
}

/// 9999-12-31T23:59:59Z, the last time RFC 3339 can write; later dates
/// are also past what JavaScript verifiers read exactly (2^53).
const LAST_DATE: i64 = 253_402_300_799;

/// The most a JWKS response may hold.
const MAX_JWKS_BYTES: u64 = 1 << 20;

/// GET a JWK set over HTTPS, with rustls on aws-lc-rs (the one crypto
/// library of the project), a time limit and a size limit. Plain HTTP only
/// from this machine (as the guard allows), and then without redirects:
/// anyone on the path could answer a plain request with their own keys.
/// This machine is reached directly, whatever `HTTP_PROXY`, `HTTPS_PROXY`
/// or `ALL_PROXY` say (as the guard does): through a proxy, a plain
/// request would leave it, and the proxy could answer with its keys.
fn fetch(url: &str, cacert: Option<&Path>) -> anyhow::Result<String> {
    let parsed: ureq::http::Uri = url
        .parse()
        .with_context(|| format!("--jwks-url {url:?} is not an https URL"))?;
    let here = parsed.host().is_some_and(is_loopback);
    let plain = match parsed.scheme_str() {
        Some("https") => false,
        Some("http") if here => true,
        _ => anyhow::bail!(
            "--jwks-url must be https (plain http only to this machine: localhost, \
             127.0.0.1 or [::1]), not {url:?}"
        ),
    };
    let roots = match cacert {
        None => ureq::tls::RootCerts::WebPki,
        Some(path) => {
            let pem = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
            let mut certificates = Vec::new();
            for item in ureq::tls::parse_pem(&pem) {
                if let ureq::tls::PemItem::Certificate(certificate) =
                    item.with_context(|| format!("reading the certificates in {}", path.display()))?
                {
                    certificates.push(certificate);
                }
            }
            if certificates.is_empty() {
                anyhow::bail!(
                    "{} holds no certificate (PEM CERTIFICATE blocks)",
                    path.display()
                );
            }
            ureq::tls::RootCerts::from(certificates)
        }
    };
    let tls = ureq::tls::TlsConfig::builder()
        .root_certs(roots)
        .provider(ureq::tls::TlsProvider::Rustls)
        .unversioned_rustls_crypto_provider(std::sync::Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .build();
    let mut config = ureq::Agent::config_builder();
    if here {
        config = config.proxy(None);
    }
    let agent: ureq::Agent = config
        .tls_config(tls)
        .timeout_global(Some(Duration::from_secs(10)))
        .https_only(!plain)
        .max_redirects(if plain { 0 } else { 3 })
        .build()
        .into();
    let mut response = agent
        .get(url)
        .header("Accept", "application/json")
        .call()
        .with_context(|| format!("fetching {url}"))?;
    response
        .body_mut()
        .with_config()
        .limit(MAX_JWKS_BYTES)
        .read_to_string()
        .with_context(|| format!("reading the response from {url}"))
}

/// `localhost` or a loopback address (`127.0.0.0/8`, `[::1]`).
fn is_loopback(host: &str) -> bool {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || bare
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

fn decode(args: &DecodeArgs) -> Result<(), Failure> {
    let token = read_token(args.token.as_deref())?;
    let (header, claims) = dangerous::decode_unverified_claims(&token).map_err(Failure::Invalid)?;
    let header_json = serde_json::to_value(&header)?;
    let now = NumericDate::now();
    let times: Map<String, Value> = ["exp", "nbf", "iat"]
        .iter()
        .filter_map(|name| {
            let secs = claims.get(*name)?.as_i64()?;
            let at = NumericDate::from_seconds(secs);
            Some((
                (*name).to_owned(),
                serde_json::json!({"utc": at.to_rfc3339(), "relative": relative(at, now)}),
            ))
        })
        .collect();
    if args.json {
        let doc = serde_json::json!({
            "verified": false,
            "header": header_json,
            "payload": claims,
            "times": times,
        });
        out!("{}", serde_json::to_string_pretty(&doc)?);
        return Ok(());
    }
    out!("UNVERIFIED: the signature and claims were NOT checked.");
    out!("Header:\n{}", serde_json::to_string_pretty(&header_json)?);
    out!("Payload:\n{}", serde_json::to_string_pretty(&claims)?);
    for (name, time) in &times {
        out!(
            "{name}: {} ({})",
            time["utc"].as_str().unwrap_or(""),
            time["relative"].as_str().unwrap_or("")
        );
    }
    Ok(())
}

fn relative(at: NumericDate, now: NumericDate) -> String {
    let delta = at.seconds().saturating_sub(now.seconds());
    if delta == 0 {
        "now".to_owned()
    } else if delta > 0 {
        format!("in {}", describe_span(delta))
    } else {
        format!("{} ago", describe_span(delta))
    }
}
