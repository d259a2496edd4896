//! `tessera token sign | verify | decode`.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{anyhow, Context};
use clap::{ArgGroup, Args, Subcommand};
use serde_json::{Map, Value};
use tessera_jose::jws::{self, Header};
use tessera_jose::{
    dangerous, describe_span, jwt, Algorithm, JwkSet, KeySet, NumericDate, SigningKey, Validation,
    VerifyingKey,
};

use crate::input::{self, name_value, parse_alg, parse_duration};
use crate::Failure;

#[derive(Subcommand)]
pub enum TokenCommand {
    /// Sign a token; prints it and a newline.
    #[command(after_help = "Examples:\n  \
        tessera token sign --key signing.jwk --iss https://auth.example.com --sub alice --aud api --exp 15m\n  \
        tessera token sign --secret-env JWT_SECRET --alg HS256 --claim scope=\"items:read\" --exp 1h\n  \
        echo '{\"role\":\"admin\"}' | tessera token sign --key rsa.pem --alg RS256 --claims - --jti")]
    Sign(SignArgs),
    /// Verify a token; prints its claims as JSON, or why it is invalid (exit 1).
    #[command(after_help = "Examples:\n  \
        tessera token verify --key public.jwk --iss https://auth.example.com --aud api < token.txt\n  \
        echo \"$TOKEN\" | tessera token verify --jwks jwks.json --typ at+jwt --require scope")]
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
    /// Private key: a JWK (private, or oct), or PEM (then --alg is required).
    #[arg(long, value_name = "FILE")]
    key: Option<PathBuf>,
    /// HMAC secret, read from this file.
    #[arg(long, value_name = "FILE")]
    secret_file: Option<PathBuf>,
    /// HMAC secret, read from this environment variable.
    #[arg(long, value_name = "VAR")]
    secret_env: Option<String>,
    /// Algorithm (default: the JWK's; HS256 for a raw secret).
    #[arg(long, value_parser = parse_alg)]
    alg: Option<Algorithm>,
    /// Claims to start from: a JSON object in a file, or `-` for standard input.
    #[arg(long, value_name = "FILE|-")]
    claims: Option<String>,
    /// A claim; VALUE is JSON if it parses as JSON, else a string. Repeatable.
    #[arg(long = "claim", value_name = "NAME=VALUE", value_parser = name_value)]
    claim: Vec<(String, Value)>,
    /// Subject (`sub`).
    #[arg(long)]
    sub: Option<String>,
    /// Issuer (`iss`).
    #[arg(long)]
    iss: Option<String>,
    /// Audience (`aud`); repeat for several.
    #[arg(long)]
    aud: Vec<String>,
    /// Expire this long from now (`exp`), e.g. 15m, 1h, 2d.
    #[arg(long, value_parser = parse_duration)]
    exp: Option<Duration>,
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
    /// An extra header member, NAME=VALUE. Repeatable.
    #[arg(long = "header", value_name = "NAME=VALUE", value_parser = name_value)]
    header: Vec<(String, Value)>,
}

#[derive(Args)]
#[command(group(ArgGroup::new("verifier").required(true).args(["key", "jwks", "jwks_url", "secret_file", "secret_env"])))]
pub struct VerifyArgs {
    /// The token; `-` or nothing for standard input (better: an argument
    /// shows in the process list).
    #[arg(value_name = "TOKEN|-")]
    token: Option<String>,
    /// Verification key: a JWK (public, private or oct) or PEM (then one --alg).
    #[arg(long, value_name = "FILE")]
    key: Option<PathBuf>,
    /// A JWK set; the key is chosen by the token's `kid` and algorithm.
    #[arg(long, value_name = "FILE")]
    jwks: Option<PathBuf>,
    /// A JWK set fetched from this URL (10 s timeout, 1 MiB at most).
    #[arg(long, value_name = "URL")]
    jwks_url: Option<String>,
    /// HMAC secret, read from this file.
    #[arg(long, value_name = "FILE")]
    secret_file: Option<PathBuf>,
    /// HMAC secret, read from this environment variable.
    #[arg(long, value_name = "VAR")]
    secret_env: Option<String>,
    /// Accept only these algorithms. Repeatable.
    #[arg(long, value_parser = parse_alg)]
    alg: Vec<Algorithm>,
    /// Required issuer (`iss`); repeat to accept several.
    #[arg(long)]
    iss: Vec<String>,
    /// Required audience (`aud` must contain one of these); repeatable.
    #[arg(long)]
    aud: Vec<String>,
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
    Ok(text.trim().to_owned())
}

fn sign(args: SignArgs) -> Result<(), Failure> {
    let key = match &args.key {
        Some(path) => input::signing_key(path, args.alg)?,
        None => {
            let secret = input::secret(args.secret_file.as_deref(), args.secret_env.as_deref())?
                .context("no key given")?;
            SigningKey::hmac(args.alg.unwrap_or(Algorithm::HS256), secret.expose())?
        }
    };
    let mut claims = match &args.claims {
        Some(source) => match serde_json::from_str(&input::read_source(Some(source))?)
            .context("--claims must be a JSON object")?
        {
            Value::Object(map) => map,
            _ => return Err(anyhow!("--claims must be a JSON object").into()),
        },
        None => Map::new(),
    };
    let now = NumericDate::now();
    let mut set = |name: &str, value: Value| {
        claims.insert(name.to_owned(), value);
    };
    if !args.no_iat {
        set("iat", now.seconds().into());
    }
    if let Some(exp) = args.exp {
        set("exp", now.plus(exp).seconds().into());
    }
    if let Some(nbf) = args.nbf {
        set("nbf", now.plus(nbf).seconds().into());
    }
    if let Some(iss) = args.iss {
        set("iss", iss.into());
    }
    if let Some(sub) = args.sub {
        set("sub", sub.into());
    }
    match args.aud.as_slice() {
        [] => {}
        [one] => set("aud", one.clone().into()),
        many => set("aud", many.to_vec().into()),
    }
    if args.jti {
        set("jti", jwt::random_id()?.into());
    }
    for (name, value) in args.claim {
        set(&name, value);
    }
    let mut header = Header::for_key(&key).typ(args.typ.unwrap_or_else(|| "JWT".to_owned()));
    if let Some(kid) = args.kid {
        header = header.kid(kid);
    }
    for (name, value) in args.header {
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
    let payload = serde_json::to_vec(&claims).context("serializing the claims")?;
    println!("{}", jws::sign(&header, &payload, &key)?);
    Ok(())
}

fn verify(args: &VerifyArgs) -> Result<(), Failure> {
    let token = read_token(args.token.as_deref())?;
    let mut validation = Validation::new();
    validation = if args.iss.is_empty() {
        validation.any_issuer()
    } else {
        args.iss.iter().fold(validation, |v, iss| v.issuer(iss))
    };
    validation = if args.aud.is_empty() {
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
        )),
        (None, Some(url)) => Some((fetch(url)?, format!("the JWK set at {url}"))),
        (None, None) => None,
    };
    let verified = if let Some((text, origin)) = jwks {
        let set = JwkSet::from_json(&text).with_context(|| format!("reading {origin}"))?;
        let keys = KeySet::from_jwks_allowing(&set, &args.alg)?;
        jwt::verify::<Value>(&token, &keys, &validation)
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
    println!("{}", serde_json::to_string_pretty(&verified.claims.custom)?);
    Ok(())
}

/// The most a JWKS response may hold.
const MAX_JWKS_BYTES: u64 = 1 << 20;

/// GET a JWK set over HTTP(S), with rustls on aws-lc-rs (the one crypto
/// library of the project), a time limit and a size limit.
fn fetch(url: &str) -> anyhow::Result<String> {
    let tls = ureq::tls::TlsConfig::builder()
        .provider(ureq::tls::TlsProvider::Rustls)
        .unversioned_rustls_crypto_provider(std::sync::Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .build();
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .tls_config(tls)
        .timeout_global(Some(Duration::from_secs(10)))
        .max_redirects(3)
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
        println!("{}", serde_json::to_string_pretty(&doc)?);
        return Ok(());
    }
    println!("UNVERIFIED: the signature and claims were NOT checked.");
    println!("Header:\n{}", serde_json::to_string_pretty(&header_json)?);
    println!("Payload:\n{}", serde_json::to_string_pretty(&claims)?);
    for (name, time) in &times {
        println!(
            "{name}: {} ({})",
            time["utc"].as_str().unwrap_or(""),
            time["relative"].as_str().unwrap_or("")
        );
    }
    Ok(())
}

fn relative(at: NumericDate, now: NumericDate) -> String {
    let delta = at.seconds() - now.seconds();
    if delta == 0 {
        "now".to_owned()
    } else if delta > 0 {
        format!("in {}", describe_span(delta))
    } else {
        format!("{} ago", describe_span(delta))
    }
}
