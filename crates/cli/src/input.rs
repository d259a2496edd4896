//! Reading what the user gives: files, stdin, secrets, keys, and the small
//! value syntaxes of the command line.

use std::fs;
use std::io::Read;
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde_json::Value;
use tessera_jose::{Algorithm, Jwk, Secret, SigningKey, VerifyingKey};

/// The most any input may hold: far more than a key, a key set, a token
/// or its claims, and a bound on what `/dev/zero` can make us allocate.
pub const MAX_INPUT_BYTES: u64 = 1 << 20;

/// A file's text, or standard input for `-` or no path.
pub fn read_source(path: Option<&str>) -> Result<String> {
    match path {
        None | Some("-") => text(
            read_bounded(std::io::stdin(), "standard input")?,
            "standard input",
        ),
        Some(path) => read_file(Path::new(path)),
    }
}

/// A file's text, with the path in the error.
pub fn read_file(path: &Path) -> Result<String> {
    let what = path.display().to_string();
    text(read_bytes(path)?, &what)
}

/// A file's bytes, [`MAX_INPUT_BYTES`] at most, with the path in the error.
fn read_bytes(path: &Path) -> Result<Vec<u8>> {
    let what = path.display().to_string();
    let file = fs::File::open(path).with_context(|| format!("reading {what}"))?;
    read_bounded(file, &what)
}

/// All of `reader`, or an error past [`MAX_INPUT_BYTES`].
fn read_bounded(reader: impl Read, what: &str) -> Result<Vec<u8>> {
    let mut bytes = Vec::new();
    reader
        .take(MAX_INPUT_BYTES + 1)
        .read_to_end(&mut bytes)
        .with_context(|| format!("reading {what}"))?;
    if bytes.len() as u64 > MAX_INPUT_BYTES {
        bail!("{what} holds more than {MAX_INPUT_BYTES} bytes");
    }
    Ok(bytes)
}

fn text(bytes: Vec<u8>, what: &str) -> Result<String> {
    String::from_utf8(bytes).with_context(|| format!("{what} is not UTF-8 text"))
}

/// A secret from a file or an environment variable (never from the command
/// line, where other users and shell history could see it). A secret that
/// is text loses one trailing newline, as `echo` and editors add; one that
/// is not (random bytes, `head -c 64 /dev/urandom`) is taken as it is: its
/// last byte is a newline one time in 256, and cutting it would leave a
/// secret no other tool uses.
/// `-` for the file reads standard input, as the secret managers' pipes
/// give it (`vault kv get -field=key … | tessera token sign --secret-file -`).
pub fn secret(file: Option<&Path>, env: Option<&str>) -> Result<Option<Secret>> {
    let mut bytes = match (file, env) {
        (Some(path), _) if path == Path::new("-") => {
            read_bounded(std::io::stdin(), "standard input")?
        }
        (Some(path), _) => read_bytes(path)?,
        (None, Some(var)) => {
            // A secret given where its variable's name goes (`--secret-env
            // "$JWT_SECRET"`) must not be echoed into a log, and a hex or
            // alphanumeric secret looks like a name: what was given is
            // never shown. What cannot be a name at all is said to be so.
            if var.is_empty() || var.contains(|c: char| c == '=' || c == '\0' || c.is_whitespace())
            {
                bail!(
                    "--secret-env takes the name of an environment variable, not a value \
                     (what was given is not shown)"
                );
            }
            match std::env::var_os(var) {
                Some(value) => value.into_encoded_bytes(),
                None => bail!(
                    "the environment variable --secret-env names is not set (its name is not \
                     shown, in case a secret was given in its place)"
                ),
            }
        }
        (None, None) => return Ok(None),
    };
    if std::str::from_utf8(&bytes).is_ok() {
        if bytes.ends_with(b"\r\n") {
            bytes.truncate(bytes.len() - 2);
        } else if bytes.ends_with(b"\n") {
            bytes.truncate(bytes.len() - 1);
        }
    }
    Ok(Some(Secret::new(bytes)))
}

/// What a key file holds.
pub enum KeyFile {
    Jwk(Box<Jwk>),
    Pem(String),
}

/// Read a key file: a JWK (JSON) or a PEM document.
pub fn key_file(path: &Path) -> Result<KeyFile> {
    let text = read_file(path)?;
    parse_key(&text).with_context(|| format!("reading the key in {}", path.display()))
}

/// Parse key text: a JWK (JSON) or a PEM document.
pub fn parse_key(text: &str) -> Result<KeyFile> {
    let trimmed = text.trim_start();
    if trimmed.starts_with('{') {
        Ok(KeyFile::Jwk(Box::new(Jwk::from_json(text)?)))
    } else if trimmed.starts_with("-----BEGIN") {
        Ok(KeyFile::Pem(text.to_owned()))
    } else {
        bail!("not a JWK (JSON) or a PEM document")
    }
}

/// A signing key from a key file; PEM needs the algorithm named.
pub fn signing_key(path: &Path, alg: Option<Algorithm>) -> Result<SigningKey> {
    let key = match key_file(path)? {
        KeyFile::Jwk(jwk) => match alg {
            Some(alg) => jwk.to_signing_key_for(alg)?,
            None => jwk.to_signing_key()?,
        },
        KeyFile::Pem(pem) => pem_signing_key(&pem, alg)?,
    };
    Ok(key)
}

/// A verifying key from a key file (public or private; for `oct` JWKs,
/// the shared secret). PEM needs exactly one algorithm named.
pub fn verifying_key(path: &Path, algs: &[Algorithm]) -> Result<VerifyingKey> {
    let key = match key_file(path)? {
        KeyFile::Jwk(jwk) => {
            let key = match (jwk.alg.as_deref(), algs) {
                (None, [alg]) => jwk.to_verifying_key_for(*alg)?,
                _ => jwk.to_verifying_key()?,
            };
            // An Ed25519 key verifies under both of its names; asked for
            // the other one only, it is made for that one.
            let other = match key.algorithm() {
                Algorithm::EdDSA => Some(Algorithm::Ed25519),
                Algorithm::Ed25519 => Some(Algorithm::EdDSA),
                _ => None,
            }
            .filter(|other| {
                jwk.alg.is_none() && algs.contains(other) && !algs.contains(&key.algorithm())
            });
            let key = match other {
                Some(other) => jwk.to_verifying_key_for(other)?,
                None => key,
            };
            // A key for one algorithm, asked to verify others only: every
            // token would fail as if it were bad; it is the command that is.
            let own = key.algorithm();
            if !algs.is_empty() && !algs.contains(&own) {
                let asked: Vec<&str> = algs.iter().map(|a| a.as_str()).collect();
                bail!(
                    "the key is for {own}, and --alg allows only {}: give --alg {own}, or leave \
                     --alg out",
                    asked.join(", ")
                )
            }
            key
        }
        KeyFile::Pem(pem) => match algs {
            [] => pem_verifying_key(&pem, None)?,
            [alg] => VerifyingKey::from_pem(*alg, &pem)?,
            _ => bail!("a PEM key needs one --alg at most"),
        },
    };
    Ok(key)
}

/// Algorithms a PEM key implies by its type alone.
const IMPLIED: [Algorithm; 4] = [
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::ES512,
    Algorithm::EdDSA,
];

/// A signing key from PEM text, for `alg` or the one its type implies.
pub fn pem_signing_key(pem: &str, alg: Option<Algorithm>) -> anyhow::Result<SigningKey> {
    pem_key(pem, alg, SigningKey::from_pem)
}

/// A verifying key from PEM text, for `alg` or the one its type implies.
pub fn pem_verifying_key(pem: &str, alg: Option<Algorithm>) -> anyhow::Result<VerifyingKey> {
    pem_key(pem, alg, VerifyingKey::from_pem)
}

/// Load a PEM key for `alg`, or for the one algorithm its type implies.
fn pem_key<K>(
    pem: &str,
    alg: Option<Algorithm>,
    load: impl Fn(Algorithm, &str) -> Result<K, tessera_jose::Error>,
) -> anyhow::Result<K> {
    if let Some(alg) = alg {
        return Ok(load(alg, pem)?);
    }
    if let Some(key) = IMPLIED.iter().find_map(|alg| load(*alg, pem).ok()) {
        return Ok(key);
    }
    if pem.contains("-----BEGIN ENCRYPTED PRIVATE KEY-----") {
        bail!(
            "the key is encrypted; decrypt it first \
             (openssl pkcs8 -in FILE -out PLAIN.pem, then keep PLAIN.pem private)"
        );
    }
    // Not EC or Ed25519: an RSA key, which needs --alg, or no key we load.
    match load(Algorithm::RS256, pem) {
        Ok(_) => bail!("an RSA key serves several algorithms: name one with --alg"),
        Err(e) => Err(anyhow::anyhow!(e).context("not a key of a supported type")),
    }
}

/// Write a private key: a new file, readable by its owner only, which
/// appears whole or not at all, never over an existing file
/// (`tessera_server::secret::PrivateFile`).
pub fn write_private(path: &Path, contents: &str) -> Result<()> {
    tessera_server::secret::write_private_file(path, contents.as_bytes()).map_err(|e| {
        let exists = matches!(&e, tessera_server::Error::Io { cause, .. }
            if cause.kind() == std::io::ErrorKind::AlreadyExists);
        if exists {
            anyhow::anyhow!(
                "{} exists already: a key file is never written over",
                path.display()
            )
        } else {
            anyhow::Error::new(e).context(format!("creating {}", path.display()))
        }
    })
}

/// `--alg` values.
pub fn parse_alg(name: &str) -> Result<Algorithm, String> {
    Algorithm::from_name(name).map_err(|_| {
        let all: Vec<&str> = Algorithm::all().map(Algorithm::as_str).collect();
        format!("unknown algorithm {name:?} (one of {})", all.join(", "))
    })
}

/// `15m`, `1h`, `30s`, `2d`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text).map_err(|e| format!("{e} (examples: 30s, 15m, 1h, 2d)"))
}

/// `NAME=VALUE`: the value is JSON when it parses as JSON, else a string.
pub fn name_value(text: &str) -> Result<(String, Value), String> {
    let (name, value) = split_name_value(text)?;
    let value = match serde_json::from_str::<serde::de::IgnoredAny>(value) {
        Ok(_) => json_without_repeats(value).map_err(|e| format!("{name}: {e}"))?,
        Err(_) => Value::String(value.to_owned()),
    };
    Ok((name.to_owned(), value))
}

/// `NAME=VALUE` whose VALUE is a string whatever it looks like (`123`,
/// `true`, `["admin"]` stay text): what a script passes from data.
pub fn name_string(text: &str) -> Result<(String, Value), String> {
    let (name, value) = split_name_value(text)?;
    Ok((name.to_owned(), Value::String(value.to_owned())))
}

/// `NAME=VALUE` cut at its first `=`, the name not empty.
fn split_name_value(text: &str) -> Result<(&str, &str), String> {
    let (name, value) = text
        .split_once('=')
        .ok_or_else(|| format!("expected NAME=VALUE, got {text:?}"))?;
    if name.is_empty() {
        return Err(format!("empty name in {text:?}"));
    }
    Ok((name, value))
}

/// `text` as JSON, refusing an object that gives a name twice, at any
/// depth: `serde_json` keeps the last, and the token would carry what
/// nobody checked (`{"role":"user","role":"admin"}` signed as admin).
pub fn json_without_repeats(text: &str) -> serde_json::Result<Value> {
    serde_json::from_str::<NoRepeats>(text).map(|v| v.0)
}

/// A JSON value whose objects name each member once.
struct NoRepeats(Value);

impl<'de> serde::Deserialize<'de> for NoRepeats {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<NoRepeats, D::Error> {
        d.deserialize_any(NoRepeatsVisitor).map(NoRepeats)
    }
}

struct NoRepeatsVisitor;

impl<'de> serde::de::Visitor<'de> for NoRepeatsVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JSON")
    }

    fn visit_bool<E>(self, v: bool) -> std::result::Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> std::result::Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E>(self, v: u64) -> std::result::Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E>(self, v: f64) -> std::result::Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_str<E>(self, v: &str) -> std::result::Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_string<E>(self, v: String) -> std::result::Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> std::result::Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(
        self,
        mut seq: A,
    ) -> std::result::Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(NoRepeats(item)) = seq.next_element()? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(
        self,
        mut map: A,
    ) -> std::result::Result<Value, A::Error> {
        let mut members = serde_json::Map::new();
        while let Some(name) = map.next_key::<String>()? {
            let NoRepeats(value) = map.next_value()?;
            if members.insert(name.clone(), value).is_some() {
                return Err(serde::de::Error::custom(format_args!(
                    "{name:?} is given more than once"
                )));
            }
        }
        Ok(Value::Object(members))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_json_when_they_parse() {
        assert_eq!(name_value("n=5").unwrap().1, Value::from(5));
        assert_eq!(name_value("n=true").unwrap().1, Value::Bool(true));
        assert_eq!(name_value("n=[\"a\"]").unwrap().1, serde_json::json!(["a"]));
        assert_eq!(name_value("n=hello").unwrap().1, Value::from("hello"));
        assert_eq!(name_value("n=a=b").unwrap().1, Value::from("a=b"));
        assert_eq!(name_value("n=").unwrap().1, Value::from(""));
        assert!(name_value("novalue").is_err());
        // An object that names a member twice is refused, at any depth,
        // not read as its last value (nor as a string).
        for repeated in [r#"n={"a":1,"a":2}"#, r#"n=[{"b":{"a":1,"a":1}}]"#] {
            let e = name_value(repeated).unwrap_err();
            assert!(e.contains("\"a\" is given more than once"), "{e}");
        }
        assert_eq!(
            name_value(r#"n={"a":{"a":1},"b":[1,1]}"#).unwrap().1,
            serde_json::json!({"a": {"a": 1}, "b": [1, 1]})
        );
        assert!(name_value("=x").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("15m").unwrap(), Duration::from_secs(900));
        assert_eq!(parse_duration("2d").unwrap(), Duration::from_secs(172_800));
        assert!(parse_duration("soon").is_err());
    }
}
