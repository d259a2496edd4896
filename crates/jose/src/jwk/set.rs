//! JWK sets (RFC 7517 §5) and the verifying key sets built from them.

use serde_json::Value;

use super::{Jwk, MAX_JWK_DEPTH};
use crate::alg::{Algorithm, KeyType};
use crate::error::Input;
use crate::key::VerifyingKey;
use crate::Error;

/// A key that a set could not use, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SkippedKey {
    /// Position in the set's `keys` array.
    pub index: usize,
    /// The key's `kid`, if it had a readable one.
    pub kid: Option<String>,
    /// The key's `kty`, if readable.
    pub kty: Option<String>,
    /// The key's `alg`, if readable; for a key without one that was
    /// usable under other algorithms of the caller's list, the algorithm
    /// it failed under.
    pub alg: Option<String>,
    /// Whether its `use` and `key_ops` allow verifying signatures: `use`
    /// absent or `sig`, `key_ops` absent or naming `verify` (either one
    /// unreadable counts as allowing it).
    pub verifies: bool,
    /// Why it was skipped.
    pub reason: String,
}

/// Whether a key whose `use` and `key_ops` are these may verify
/// signatures; `None` is absent or unreadable.
fn may_verify(key_use: Option<&str>, key_ops: Option<&[String]>) -> bool {
    key_use.is_none_or(|u| u == "sig")
        && key_ops.is_none_or(|ops| ops.iter().any(|o| o == "verify"))
}

impl SkippedKey {
    /// Whether this unusable key claims the same `kid` as a usable key for
    /// `alg` would: then a lookup of that `kid` is ambiguous, since the
    /// publisher named two keys alike.
    fn shadows(&self, kid: &str, alg: Algorithm) -> bool {
        self.could_have_signed(Some(kid), alg)
    }

    /// Whether this unusable key could be the one that signed a token
    /// whose header names `kid` (any key, for a token without one) and
    /// `alg`: its `kid`, a type and `alg` (where it says them) that fit,
    /// and a `use` and `key_ops` that allow verifying. Another skipped key
    /// (an encryption key published under the same `kid`, say) says
    /// nothing about the token.
    pub fn could_have_signed(&self, kid: Option<&str>, alg: Algorithm) -> bool {
        self.verifies
            && kid.is_none_or(|kid| self.kid.as_deref() == Some(kid))
            && self
                .kty
                .as_deref()
                .is_none_or(|kty| kty == alg.key_type().name())
            && self.alg.as_deref().is_none_or(|a| names_alike(a, alg))
    }
}

/// Whether the algorithm name `name` (a JWK's `alg`) stands for `alg`'s
/// signatures: its own name, or for an Ed25519 key either of its two
/// (`EdDSA`, RFC 8037; `Ed25519`, RFC 9864).
fn names_alike(name: &str, alg: Algorithm) -> bool {
    let ed25519 = |name: &str| matches!(name, "EdDSA" | "Ed25519");
    name == alg.as_str() || (ed25519(name) && ed25519(alg.as_str()))
}

/// Whether `a` and `b` are the same key listed twice: alike member for
/// member, or but for the name of an Ed25519 key's algorithm (a publisher
/// moving to RFC 9864's `Ed25519` may list the key under both).
fn same_key(a: &Jwk, b: &Jwk) -> bool {
    if a == b {
        return true;
    }
    match (a.alg.as_deref(), &b.alg) {
        (Some(name), Some(other)) if names_alike(name, Algorithm::EdDSA) => {
            names_alike(other, Algorithm::EdDSA) && {
                let mut renamed = b.clone();
                renamed.alg = a.alg.clone();
                *a == renamed
            }
        }
        _ => false,
    }
}

/// A JWK set as data: the keys that parsed, and the ones that did not.
///
/// One unreadable or unsupported key does not make the whole set fail:
/// identity providers publish keys of types a verifier may not know (for
/// example encryption keys), and those are skipped and reported in
/// [`JwkSet::skipped`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct JwkSet {
    /// The keys.
    pub keys: Vec<Jwk>,
    skipped: Vec<SkippedKey>,
    /// The position of the first skipped key that held a secret (a
    /// private member, or `kty` `oct`), for [`JwkSet::check_published`].
    skipped_secret: Option<usize>,
}

impl JwkSet {
    /// A set of these keys.
    pub fn new(keys: Vec<Jwk>) -> JwkSet {
        JwkSet {
            keys,
            skipped: Vec::new(),
            skipped_secret: None,
        }
    }

    /// Refuse a set meant to be public (fetched from an issuer's
    /// `jwks_uri`) that holds a secret: a symmetric (`oct`) key or a
    /// private key, either of which anyone who reads the set could sign
    /// tokens with. Call it on every key set fetched from elsewhere before
    /// trusting any key in it: an issuer misconfigured that way is
    /// refused whole, not trusted in part. Keys that could not be read
    /// count too: a private key refused for a malformed member is as
    /// public as one that parsed.
    pub fn check_published(&self) -> Result<(), Error> {
        if let Some(index) = self.skipped_secret {
            return Err(Error::InvalidKey {
                reason: format!(
                    "the key set publishes a secret (a private or symmetric key, at index \
                     {index}, which could not be read), which anyone who reads it could sign with"
                ),
            });
        }
        if self.keys.iter().any(|k| k.kty == "oct") {
            return Err(Error::InvalidKey {
                reason: "the key set publishes a symmetric (oct) key, which anyone who reads it \
                         could sign with"
                    .into(),
            });
        }
        if let Some(key) = self.keys.iter().find(|k| k.is_private()) {
            return Err(Error::InvalidKey {
                reason: format!(
                    "the key set publishes a private key (kid {:?}), which anyone who reads it \
                     could sign with",
                    key.kid.as_deref().unwrap_or("")
                ),
            });
        }
        Ok(())
    }

    /// Parse `{"keys":[…]}` strictly. The document itself must be sound;
    /// keys that are not usable JWKs are skipped and reported.
    pub fn from_json(text: &str) -> Result<JwkSet, Error> {
        let mut doc = crate::json::object(text.as_bytes(), Input::Jwk, MAX_JWK_DEPTH + 2)?;
        let keys = match doc.remove("keys") {
            Some(Value::Array(keys)) => keys,
            Some(_) => {
                return Err(Error::invalid_key(
                    "JWK set member \"keys\" must be an array",
                ))
            }
            None => return Err(Error::invalid_key("JWK set has no \"keys\" member")),
        };
        let mut set = JwkSet::default();
        for (index, value) in keys.into_iter().enumerate() {
            let member = |name| value.get(name).and_then(Value::as_str).map(str::to_owned);
            let (kid, kty, alg) = (member("kid"), member("kty"), member("alg"));
            let key_ops = value
                .get("key_ops")
                .and_then(Value::as_array)
                .and_then(|ops| {
                    ops.iter()
                        .map(|o| o.as_str().map(str::to_owned))
                        .collect::<Option<Vec<_>>>()
                });
            let verifies = may_verify(member("use").as_deref(), key_ops.as_deref());
            let secret = value.as_object().is_some_and(super::holds_secret);
            let parsed = match value {
                Value::Object(map) => Jwk::from_map(map).and_then(|jwk| {
                    if supported_kty(&jwk.kty) {
                        Ok(jwk)
                    } else {
                        Err(Error::UnsupportedKey {
                            reason: format!("kty {:?} is not supported", jwk.kty),
                        })
                    }
                }),
                _ => Err(Error::invalid_key("a JWK must be a JSON object")),
            };
            match parsed {
                Ok(jwk) => set.keys.push(jwk),
                Err(e) => {
                    if secret {
                        set.skipped_secret.get_or_insert(index);
                    }
                    set.skipped.push(SkippedKey {
                        index,
                        kid,
                        kty,
                        alg,
                        verifies,
                        reason: e.to_string(),
                    })
                }
            }
        }
        Ok(set)
    }

    /// The keys that could not be read.
    pub fn skipped(&self) -> &[SkippedKey] {
        &self.skipped
    }

    /// The key with this `kid`, if exactly one has it.
    pub fn find(&self, kid: &str) -> Option<&Jwk> {
        let mut matches = self.keys.iter().filter(|k| k.kid.as_deref() == Some(kid));
        match (matches.next(), matches.next()) {
            (Some(one), None) => Some(one),
            _ => None,
        }
    }

    /// The set of the public parts of every key. Fails if any key is a
    /// shared secret, which must never be published.
    pub fn to_public(&self) -> Result<JwkSet, Error> {
        Ok(JwkSet::new(
            self.keys
                .iter()
                .map(Jwk::to_public)
                .collect::<Result<_, _>>()?,
        ))
    }

    /// `{"keys":[…]}` as indented JSON text.
    pub fn to_json_pretty(&self) -> String {
        super::exact_json(&Document { keys: &self.keys }, true)
    }

    /// `{"keys":[…]}` as JSON text (private members are written if the
    /// keys hold them, as [`Jwk::to_json`] writes them; use
    /// [`JwkSet::to_public`] first to publish).
    pub fn to_json(&self) -> String {
        super::exact_json(&Document { keys: &self.keys }, false)
    }
}

/// A JWK set's document as written.
#[derive(serde::Serialize)]
struct Document<'a> {
    keys: &'a [Jwk],
}

/// Verifying keys ready for use, chosen per token by `kid` and algorithm.
///
/// A set that mixes shared secrets with asymmetric keys is refused: such a
/// set means secrets and public keys are handled as one kind of thing, which
/// is where algorithm confusion comes from.
#[derive(Clone, Debug, Default)]
pub struct KeySet {
    keys: Vec<VerifyingKey>,
    skipped: Vec<SkippedKey>,
}

impl KeySet {
    /// A set of these keys.
    pub fn new(keys: Vec<VerifyingKey>) -> Result<KeySet, Error> {
        let set = KeySet {
            keys,
            skipped: Vec::new(),
        };
        set.check_not_mixed()?;
        Ok(set)
    }

    /// The usable keys of a JWK set. Keys without `alg` are used with
    /// the algorithm their curve fixes (EC, OKP); RSA and `oct` keys without
    /// `alg` are skipped (see [`KeySet::from_jwks_allowing`]).
    pub fn from_jwks(set: &JwkSet) -> Result<KeySet, Error> {
        KeySet::from_jwks_allowing(set, &[])
    }

    /// Like [`KeySet::from_jwks`], but a key without `alg` is also made
    /// usable with each algorithm of `allowed` that fits its type. This is
    /// the caller's explicit allow-list deciding, never the token.
    pub fn from_jwks_allowing(set: &JwkSet, allowed: &[Algorithm]) -> Result<KeySet, Error> {
        let mut out = KeySet {
            keys: Vec::new(),
            skipped: set.skipped.clone(),
        };
        // The keys seen so far, by `kid`.
        let mut seen: std::collections::HashMap<Option<&str>, Vec<&Jwk>> =
            std::collections::HashMap::new();
        for (index, jwk) in set.keys.iter().enumerate() {
            // The same key listed twice, member for member (a set merged
            // from two sources during a rotation), or an Ed25519 key under
            // both its names: one key, not an ambiguous choice between two.
            let same_kid = seen.entry(jwk.kid.as_deref()).or_default();
            if same_kid.iter().any(|seen| same_key(seen, jwk)) {
                continue;
            }
            same_kid.push(jwk);
            let algs: Vec<Algorithm> = match (&jwk.alg, jwk.algorithm()) {
                (None, Err(_)) if !allowed.is_empty() => allowed
                    .iter()
                    .copied()
                    .filter(|a| a.key_type().name() == jwk.kty)
                    .collect(),
                (_, Ok(alg)) => vec![alg],
                (_, Err(e)) => {
                    out.skip(index, jwk, None, &e);
                    continue;
                }
            };
            if algs.is_empty() {
                out.skip(
                    index,
                    jwk,
                    None,
                    &Error::invalid_key("no allowed algorithm fits this key"),
                );
            }
            let before = out.keys.len();
            let mut failed = Vec::new();
            for alg in &algs {
                match jwk.to_verifying_key_for(*alg) {
                    Ok(key) => out.keys.push(key),
                    Err(e) => failed.push((*alg, e)),
                }
            }
            // A key usable under some of the algorithms tried is skipped
            // only under those it failed: a 32-byte secret tried for
            // HS256, HS384 and HS512 is an HS256 key, not an ambiguity for
            // HS256 tokens. One usable under none says nothing about which
            // algorithm it was meant for, and may shadow any.
            let usable = out.keys.len() > before;
            for (alg, e) in failed {
                out.skip(index, jwk, usable.then_some(alg), &e);
            }
            // An Ed25519 key signs under two names, `EdDSA` (RFC 8037) and
            // `Ed25519` (RFC 9864): one key, one curve, the same signatures,
            // so it is usable under the other name too.
            for (one, other) in [
                (Algorithm::EdDSA, Algorithm::Ed25519),
                (Algorithm::Ed25519, Algorithm::EdDSA),
            ] {
                if algs.contains(&one) && !algs.contains(&other) {
                    let mut renamed = jwk.clone();
                    renamed.alg = Some(other.as_str().to_owned());
                    if let Ok(key) = renamed.to_verifying_key_for(other) {
                        out.keys.push(key);
                    }
                }
            }
        }
        out.check_not_mixed()?;
        Ok(out)
    }

    /// Note an unusable key; `tried` is the algorithm it was tried for
    /// when the JWK names none.
    fn skip(&mut self, index: usize, jwk: &Jwk, tried: Option<Algorithm>, e: &Error) {
        self.skipped.push(SkippedKey {
            index,
            kid: jwk.kid.clone(),
            kty: Some(jwk.kty.clone()),
            alg: jwk
                .alg
                .clone()
                .or_else(|| tried.map(|alg| alg.as_str().to_owned())),
            verifies: may_verify(jwk.key_use.as_deref(), jwk.key_ops.as_deref()),
            reason: e.to_string(),
        });
    }

    fn check_not_mixed(&self) -> Result<(), Error> {
        let symmetric = self.keys.iter().filter(|k| k.is_symmetric()).count();
        if symmetric != 0 && symmetric != self.keys.len() {
            return Err(Error::MixedKeySet);
        }
        Ok(())
    }

    /// The usable keys.
    pub fn keys(&self) -> &[VerifyingKey] {
        &self.keys
    }

    /// Keys of the source set that were not usable, and why.
    pub fn skipped(&self) -> &[SkippedKey] {
        &self.skipped
    }

    /// The one key for this `kid` and algorithm.
    ///
    /// With a `kid`, only keys with that `kid` match; without one, every
    /// key of the algorithm does. No match and several matches are errors:
    /// the token must say unambiguously which key signed it. A skipped key
    /// of the same type that claims the same `kid` also makes the choice
    /// ambiguous.
    pub fn select(&self, kid: Option<&str>, alg: Algorithm) -> Result<&VerifyingKey, Error> {
        let key = select(&self.keys, kid, alg)?;
        if let Some(kid) = kid {
            let shadows = self.skipped.iter().filter(|s| s.shadows(kid, alg)).count();
            if shadows > 0 {
                return Err(Error::AmbiguousKey {
                    kid: Some(kid.to_owned()),
                    alg,
                    count: 1 + shadows,
                });
            }
        }
        Ok(key)
    }
}

pub(crate) fn select<'k>(
    keys: &'k [VerifyingKey],
    kid: Option<&str>,
    alg: Algorithm,
) -> Result<&'k VerifyingKey, Error> {
    let mut found: Option<&VerifyingKey> = None;
    let mut count = 0;
    for key in keys {
        if key.algorithm() == alg && (kid.is_none() || key.kid() == kid) {
            count += 1;
            found.get_or_insert(key);
        }
    }
    match (found, count) {
        (Some(key), 1) => Ok(key),
        (None, _) => Err(Error::NoMatchingKey {
            kid: kid.map(str::to_owned),
            alg,
        }),
        (Some(_), count) => Err(Error::AmbiguousKey {
            kid: kid.map(str::to_owned),
            alg,
            count,
        }),
    }
}

/// True when a JWK's type is one this crate implements.
fn supported_kty(kty: &str) -> bool {
    [KeyType::Oct, KeyType::Rsa, KeyType::Ec, KeyType::Okp]
        .iter()
        .any(|t| t.name() == kty)
}
