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
/// line, where other users and shell history could see it). One trailing
/// newline, as `echo` and editors add, is not part of the secret.
pub fn secret(file: Option<&Path>, env: Option<&str>) -> Result<Option<Secret>> {
    let mut bytes = match (file, env) {
        (Some(path), _) => read_bytes(path)?,
        (None, Some(var)) => match std::env::var_os(var) {
            Some(value) => value.into_encoded_bytes(),
            None => bail!("environment variable {var} is not set"),
        },
        (None, None) => return Ok(None),
    };
    if bytes.ends_with(b"\r\n") {
        bytes.truncate(bytes.len() - 2);
    } else if bytes.ends_with(b"\n") {
        bytes.truncate(bytes.len() - 1);
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
        KeyFile::Pem(pem) => {
            let alg = alg.context("a PEM key needs --alg")?;
            SigningKey::from_pem(alg, &pem)?
        }
    };
    Ok(key)
}

/// A verifying key from a key file (public or private; for `oct` JWKs,
/// the shared secret). PEM needs exactly one algorithm named.
pub fn verifying_key(path: &Path, algs: &[Algorithm]) -> Result<VerifyingKey> {
    let key = match key_file(path)? {
        KeyFile::Jwk(jwk) => match (jwk.alg.is_some(), algs) {
            (false, [alg]) => jwk.to_verifying_key_for(*alg)?,
            _ => jwk.to_verifying_key()?,
        },
        KeyFile::Pem(pem) => match algs {
            [alg] => VerifyingKey::from_pem(*alg, &pem)?,
            _ => bail!("a PEM key needs exactly one --alg"),
        },
    };
    Ok(key)
}

/// Write a private key: a new file, readable by its owner only, which
/// appears whole or not at all, never over an existing file
/// (`tessera_server::secret::PrivateFile`).
pub fn write_private(path: &Path, contents: &str) -> Result<()> {
    tessera_server::secret::write_private_file(path, contents.as_bytes())
        .with_context(|| format!("creating {} (it must not exist yet)", path.display()))
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
    let (name, value) = text
        .split_once('=')
        .ok_or_else(|| format!("expected NAME=VALUE, got {text:?}"))?;
    if name.is_empty() {
        return Err(format!("empty name in {text:?}"));
    }
    let value = serde_json::from_str(value).unwrap_or_else(|_| Value::String(value.to_owned()));
    Ok((name.to_owned(), value))
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
        assert!(name_value("=x").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("15m").unwrap(), Duration::from_secs(900));
        assert_eq!(parse_duration("2d").unwrap(), Duration::from_secs(172_800));
        assert!(parse_duration("soon").is_err());
    }
}
