//! JSON Web Keys (RFC 7517, with the key types of RFC 7518 §6 and RFC 8037).
//!
//! A [`Jwk`] is the data; [`Jwk::to_verifying_key`] and
//! [`Jwk::to_signing_key`] turn it into a usable key, checking that its
//! `kty`, `crv`, `alg`, `use` and `key_ops` all agree with the algorithm.
//! `x5c`, `x5t`, `x5t#S256` and `x5u` are kept and written back but never
//! used to decide whether a signature is trusted.

mod convert;
mod set;
mod thumbprint;

use std::fmt;

use serde::ser::SerializeMap;
use serde_json::{Map, Value};

use crate::alg::{Algorithm, Curve, KeyType};
use crate::b64;
use crate::error::Input;
use crate::key::{PrivateParts, PublicParts, Secret};
use crate::Error;

pub(crate) use set::select;
pub use set::{JwkSet, KeySet, SkippedKey};
use thumbprint::thumbprint;

/// Default depth limit for JWK and JWKS documents.
pub(crate) const MAX_JWK_DEPTH: usize = 8;

/// A JSON Web Key (RFC 7517, with the key types of RFC 7518 §6 and
/// RFC 8037).
///
/// [`Jwk::to_verifying_key`] and [`Jwk::to_signing_key`] turn it into a
/// usable key, checking that its `kty`, `crv`, `alg`, `use` and `key_ops`
/// all agree with the algorithm. `x5c`, `x5t`, `x5t#S256` and `x5u` are
/// kept and written back but never used to decide whether a signature is
/// trusted.
///
/// Binary members are held decoded; private ones (`d`, `p`, `q`, `dp`, `dq`,
/// `qi`, `k`) as [`Secret`]s, which zeroize on drop and print redacted.
#[derive(Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct Jwk {
    /// `kty`: `oct`, `RSA`, `EC` or `OKP` (others are kept but unusable).
    pub kty: String,
    /// `use`: `sig` for signing keys.
    pub key_use: Option<String>,
    /// `key_ops`: allowed operations (`sign`, `verify`, …).
    pub key_ops: Option<Vec<String>>,
    /// `alg`: the one algorithm this key is for.
    pub alg: Option<String>,
    /// `kid`: the key id.
    pub kid: Option<String>,
    /// `crv`: the curve of an `EC` or `OKP` key.
    pub crv: Option<String>,
    /// `n`: RSA modulus.
    pub n: Option<Vec<u8>>,
    /// `e`: RSA public exponent.
    pub e: Option<Vec<u8>>,
    /// `x`: EC x coordinate, or the OKP public key.
    pub x: Option<Vec<u8>>,
    /// `y`: EC y coordinate.
    pub y: Option<Vec<u8>>,
    /// `d`: the private exponent or scalar.
    pub d: Option<Secret>,
    /// `p`: RSA first prime.
    pub p: Option<Secret>,
    /// `q`: RSA second prime.
    pub q: Option<Secret>,
    /// `dp`: RSA first CRT exponent.
    pub dp: Option<Secret>,
    /// `dq`: RSA second CRT exponent.
    pub dq: Option<Secret>,
    /// `qi`: RSA CRT coefficient.
    pub qi: Option<Secret>,
    /// `k`: the shared secret of an `oct` key.
    pub k: Option<Secret>,
    /// `x5u`, `x5c`, `x5t`, `x5t#S256`, `oth` and any other members, as
    /// they appeared. Never used for verification.
    pub extra: Map<String, Value>,
}

const BINARY_PUBLIC: [&str; 4] = ["n", "e", "x", "y"];
const BINARY_PRIVATE: [&str; 7] = ["d", "p", "q", "dp", "dq", "qi", "k"];

impl Jwk {
    /// Parse one JWK from JSON text, strictly (no repeated members).
    pub fn from_json(text: &str) -> Result<Jwk, Error> {
        let map = crate::json::object(text.as_bytes(), Input::Jwk, MAX_JWK_DEPTH)?;
        Jwk::from_map(map)
    }

    /// Build a JWK from a parsed JSON object.
    ///
    /// The private members' text is wiped from memory once read, and all
    /// of it when the JWK is refused: a key that fails to parse (in a set
    /// whose other keys are used, say) leaves no copy of its secrets.
    pub fn from_map(mut map: Map<String, Value>) -> Result<Jwk, Error> {
        let read = Jwk::read(&mut map);
        wipe_private(&mut map);
        let mut jwk = read?;
        jwk.extra = map;
        Ok(jwk)
    }

    /// [`Jwk::from_map`]'s reading: the members it knows, taken out of
    /// `map`.
    fn read(map: &mut Map<String, Value>) -> Result<Jwk, Error> {
        let mut jwk = Jwk {
            kty: take_string(map, "kty")?
                .ok_or_else(|| Error::invalid_key("JWK has no \"kty\""))?,
            key_use: take_string(map, "use")?,
            key_ops: take_strings(map, "key_ops")?,
            alg: take_string(map, "alg")?,
            kid: take_string(map, "kid")?,
            crv: take_string(map, "crv")?,
            ..Jwk::default()
        };
        for name in BINARY_PUBLIC {
            let value = take_bytes(map, name)?;
            match name {
                "n" => jwk.n = value,
                "e" => jwk.e = value,
                "x" => jwk.x = value,
                _ => jwk.y = value,
            }
        }
        if jwk.kty == "RSA" {
            // RFC 7518 §6.3.1.1: the fewest octets. Some writers (Java's
            // `BigInteger.toByteArray`) add a zero byte; the integer is the
            // same, read here in its canonical form, so that its RFC 7638
            // thumbprint is the one every other reader computes.
            for value in [&mut jwk.n, &mut jwk.e].into_iter().flatten() {
                let zeros = value.iter().take_while(|b| **b == 0).count();
                value.drain(..zeros.min(value.len().saturating_sub(1)));
            }
        }
        for name in BINARY_PRIVATE {
            let value = take_bytes(map, name)?.map(Secret::new);
            match name {
                "d" => jwk.d = value,
                "p" => jwk.p = value,
                "q" => jwk.q = value,
                "dp" => jwk.dp = value,
                "dq" => jwk.dq = value,
                "qi" => jwk.qi = value,
                _ => jwk.k = value,
            }
        }
        if map.contains_key("oth") {
            // RFC 7518 §6.3.2.7: a multi-prime RSA key, which no
            // algorithm here signs with; its primes are never kept as
            // unknown members.
            return Err(Error::UnsupportedKey {
                reason: "multi-prime RSA keys (\"oth\") are not supported".into(),
            });
        }
        if let Some(x5c) = map.get("x5c") {
            let ok = x5c
                .as_array()
                .is_some_and(|certs| certs.iter().all(Value::is_string));
            if !ok {
                return Err(Error::invalid_key(
                    "JWK member \"x5c\" must be an array of strings",
                ));
            }
        }
        Ok(jwk)
    }

    /// The JSON text of this JWK (private members included, if present:
    /// the text is then as secret as the key, and the caller's to wipe,
    /// with `zeroize`'s `Zeroizing` for one).
    pub fn to_json(&self) -> String {
        exact_json(self, false)
    }

    /// The JSON text, indented.
    pub fn to_json_pretty(&self) -> String {
        exact_json(self, true)
    }

    pub(crate) fn from_parts(
        alg: Algorithm,
        kid: Option<String>,
        public: Option<PublicParts>,
        private: Option<PrivateParts>,
    ) -> Jwk {
        let mut jwk = Jwk {
            kty: alg.key_type().name().to_owned(),
            alg: Some(alg.as_str().to_owned()),
            kid,
            ..Jwk::default()
        };
        if !alg.is_symmetric() {
            jwk.key_use = Some("sig".to_owned());
        }
        match public {
            Some(PublicParts::Rsa { n, e }) => {
                jwk.n = Some(n);
                jwk.e = Some(e);
            }
            Some(PublicParts::Ec { curve, x, y }) => {
                jwk.crv = Some(curve.name().to_owned());
                jwk.x = Some(x);
                jwk.y = Some(y);
            }
            Some(PublicParts::Ed25519 { x }) => {
                jwk.crv = Some("Ed25519".to_owned());
                jwk.x = Some(x);
            }
            None => {}
        }
        match private {
            Some(PrivateParts::Oct { k }) => jwk.k = Some(k),
            Some(PrivateParts::Rsa {
                d,
                p,
                q,
                dp,
                dq,
                qi,
            }) => {
                jwk.d = Some(d);
                jwk.p = Some(p);
                jwk.q = Some(q);
                jwk.dp = Some(dp);
                jwk.dq = Some(dq);
                jwk.qi = Some(qi);
            }
            Some(PrivateParts::Ec { d }) | Some(PrivateParts::Ed25519 { d }) => jwk.d = Some(d),
            None => {}
        }
        jwk
    }

    /// True when the JWK carries private or secret material: any of the
    /// private members of RFC 7518 §6.3.2 (`d`, the primes and CRT values,
    /// `oth`) or an `oct` key's `k`. Either prime alone factors an RSA
    /// modulus, so a key without `d` but with `p` is private too.
    pub fn is_private(&self) -> bool {
        [
            &self.d, &self.p, &self.q, &self.dp, &self.dq, &self.qi, &self.k,
        ]
        .iter()
        .any(|member| member.is_some())
            || self.extra.contains_key("oth")
    }

    /// True for `kty: oct` (shared secrets).
    pub fn is_symmetric(&self) -> bool {
        self.kty == "oct"
    }

    /// The JWK without its private members. Symmetric keys have no public
    /// form and give an error, and so do key types other than `RSA`, `EC`
    /// and `OKP`: their private members are not known here, and one left
    /// in (kept among the unknown members) would be published.
    pub fn to_public(&self) -> Result<Jwk, Error> {
        if self.is_symmetric() {
            return Err(Error::UnsupportedKey {
                reason: "an oct (shared secret) key has no public form".to_owned(),
            });
        }
        if !matches!(self.kty.as_str(), "RSA" | "EC" | "OKP") {
            return Err(Error::UnsupportedKey {
                reason: format!(
                    "key type {:?}: its private members are not known, so no public form is made",
                    self.kty
                ),
            });
        }
        let mut public = self.clone();
        public.d = None;
        public.p = None;
        public.q = None;
        public.dp = None;
        public.dq = None;
        public.qi = None;
        public.k = None;
        public.extra.remove("oth");
        // What the private key may do, the public one may undo: a private
        // key of `key_ops: ["sign"]` (WebCrypto's export) gives a public one
        // that verifies, not one that can do nothing.
        if let Some(ops) = &mut public.key_ops {
            let mut kept: Vec<String> = Vec::with_capacity(ops.len());
            for op in ops.drain(..) {
                let op = match op.as_str() {
                    "sign" => "verify".to_owned(),
                    "decrypt" => "encrypt".to_owned(),
                    "unwrapKey" => "wrapKey".to_owned(),
                    _ => op,
                };
                if !kept.contains(&op) {
                    kept.push(op);
                }
            }
            *ops = kept;
        }
        Ok(public)
    }

    /// The RFC 7638 SHA-256 thumbprint.
    pub fn thumbprint(&self) -> Result<String, Error> {
        thumbprint(self)
    }

    /// The algorithm this key is for: its `alg`, or for `EC` and `OKP` keys
    /// without one, the only algorithm their curve allows. RSA and `oct`
    /// keys without `alg` are usable with several algorithms; name one with
    /// [`Jwk::to_verifying_key_for`].
    pub fn algorithm(&self) -> Result<Algorithm, Error> {
        if let Some(alg) = &self.alg {
            return Algorithm::from_name(alg);
        }
        match (self.kty.as_str(), self.crv.as_deref()) {
            ("EC", Some(crv)) => match Curve::from_name(crv) {
                Some(Curve::P256) => Ok(Algorithm::ES256),
                Some(Curve::P384) => Ok(Algorithm::ES384),
                Some(Curve::P521) => Ok(Algorithm::ES512),
                None => Err(Error::UnsupportedKey {
                    reason: format!("EC curve {crv:?} is not supported"),
                }),
            },
            ("OKP", Some("Ed25519")) => Ok(Algorithm::EdDSA),
            ("OKP", Some(crv)) => Err(Error::UnsupportedKey {
                reason: format!("OKP curve {crv:?} is not supported for signatures"),
            }),
            (kty, _) => Err(Error::InvalidKey {
                reason: format!(
                    "a {kty} JWK without \"alg\" fits several algorithms; name the one to use"
                ),
            }),
        }
    }

    fn required<'a>(&self, name: &str, value: &'a Option<Vec<u8>>) -> Result<&'a [u8], Error> {
        value
            .as_deref()
            .ok_or_else(|| Error::invalid_key(format!("{} JWK has no \"{name}\"", self.kty)))
    }

    fn required_secret<'a>(
        &self,
        name: &str,
        value: &'a Option<Secret>,
    ) -> Result<&'a [u8], Error> {
        value
            .as_ref()
            .map(Secret::expose)
            .ok_or_else(|| Error::invalid_key(format!("{} JWK has no \"{name}\"", self.kty)))
    }

    fn public_parts(&self, alg: Algorithm) -> Result<PublicParts, Error> {
        match alg.key_type() {
            KeyType::Rsa => Ok(PublicParts::Rsa {
                n: self.required("n", &self.n)?.to_vec(),
                e: self.required("e", &self.e)?.to_vec(),
            }),
            KeyType::Ec => Ok(PublicParts::Ec {
                curve: alg
                    .curve()
                    .ok_or_else(|| Error::invalid_key("not an EC algorithm"))?,
                x: self.required("x", &self.x)?.to_vec(),
                y: self.required("y", &self.y)?.to_vec(),
            }),
            KeyType::Okp => Ok(PublicParts::Ed25519 {
                x: self.required("x", &self.x)?.to_vec(),
            }),
            KeyType::Oct => Err(Error::invalid_key("an oct key has no public part")),
        }
    }

    /// Check that this JWK may be used for `alg` and `operation`.
    fn check_fit(&self, alg: Algorithm, operation: &'static str) -> Result<(), Error> {
        if let Some(own) = &self.alg {
            let own = Algorithm::from_name(own)?;
            if own != alg {
                return Err(Error::AlgorithmMismatch {
                    expected: own,
                    found: alg,
                });
            }
        }
        let kty = alg.key_type().name();
        if self.kty != kty {
            return Err(Error::invalid_key(format!(
                "{alg} needs a {kty} key, but the JWK's kty is {:?}",
                self.kty
            )));
        }
        let want_crv = match alg.key_type() {
            KeyType::Ec => alg.curve().map(Curve::name),
            KeyType::Okp => Some("Ed25519"),
            _ => None,
        };
        if let Some(want) = want_crv {
            if self.crv.as_deref() != Some(want) {
                return Err(Error::invalid_key(format!(
                    "{alg} needs curve {want}, but the JWK's crv is {:?}",
                    self.crv.as_deref().unwrap_or("(none)")
                )));
            }
        }
        if let Some(u) = &self.key_use {
            if u != "sig" {
                return Err(Error::KeyUsage {
                    operation,
                    reason: format!("its \"use\" is {u:?}, not \"sig\""),
                });
            }
        }
        if let Some(ops) = &self.key_ops {
            if !ops.iter().any(|op| op == operation) {
                return Err(Error::KeyUsage {
                    operation,
                    reason: format!("its \"key_ops\" {ops:?} do not include {operation:?}"),
                });
            }
        }
        Ok(())
    }
}

fn take_string(map: &mut Map<String, Value>, name: &str) -> Result<Option<String>, Error> {
    match map.remove(name) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => {
            // A private member of the wrong type holds secrets all the same.
            wipe(other);
            Err(Error::invalid_key(format!(
                "JWK member \"{name}\" must be a string"
            )))
        }
    }
}

fn take_strings(map: &mut Map<String, Value>, name: &str) -> Result<Option<Vec<String>>, Error> {
    match map.remove(name) {
        None => Ok(None),
        Some(Value::Array(items)) => items
            .into_iter()
            .map(|v| match v {
                Value::String(s) => Ok(s),
                _ => Err(Error::invalid_key(format!(
                    "JWK member \"{name}\" must be an array of strings"
                ))),
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
        Some(_) => Err(Error::invalid_key(format!(
            "JWK member \"{name}\" must be an array of strings"
        ))),
    }
}

/// `value`'s JSON text, written into a buffer of its exact size: a
/// growing buffer would leave each smaller copy of the text (of a private
/// key's secrets, say) behind in freed memory. Serializing JWKs cannot
/// fail: every member is a string, an array of strings or an
/// already-parsed JSON value.
pub(crate) fn exact_json(value: &impl serde::Serialize, pretty: bool) -> String {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0 += bytes.len();
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    fn write(value: &impl serde::Serialize, pretty: bool, to: impl std::io::Write) -> bool {
        match pretty {
            true => serde_json::to_writer_pretty(to, value).is_ok(),
            false => serde_json::to_writer(to, value).is_ok(),
        }
    }
    let mut count = Count(0);
    if !write(value, pretty, &mut count) {
        return String::new();
    }
    let mut text = Vec::with_capacity(count.0);
    if !write(value, pretty, &mut text) {
        zeroize::Zeroize::zeroize(&mut text);
        return String::new();
    }
    // serde_json writes UTF-8.
    String::from_utf8(text).unwrap_or_default()
}

/// Overwrite every string `value` holds, and drop it.
fn wipe(value: Value) {
    match value {
        Value::String(mut text) => zeroize::Zeroize::zeroize(&mut text),
        Value::Array(items) => items.into_iter().for_each(wipe),
        Value::Object(members) => members.into_iter().for_each(|(_, v)| wipe(v)),
        _ => {}
    }
}

/// A JWK's members being read: whatever is left of its private members
/// when it is dropped (a read that failed half-way) is wiped.
struct Reading(Map<String, Value>);

impl Drop for Reading {
    fn drop(&mut self) {
        wipe_private(&mut self.0);
    }
}

/// The members that hold a private key's secrets (RFC 7518 §6.2.2,
/// §6.3.2, §6.4; RFC 8037 §2).
const PRIVATE_MEMBERS: [&str; 8] = ["d", "p", "q", "dp", "dq", "qi", "k", "oth"];

/// Whether a JWK's members, read or not, hold a secret: a private
/// member, or a symmetric key.
pub(crate) fn holds_secret(map: &Map<String, Value>) -> bool {
    map.get("kty").and_then(Value::as_str) == Some("oct")
        || PRIVATE_MEMBERS.iter().any(|name| map.contains_key(*name))
}

/// Take the private members out of `map` and overwrite their text.
pub(crate) fn wipe_private(map: &mut Map<String, Value>) {
    for name in PRIVATE_MEMBERS {
        if let Some(value) = map.remove(name) {
            wipe(value);
        }
    }
}

fn take_bytes(map: &mut Map<String, Value>, name: &str) -> Result<Option<Vec<u8>>, Error> {
    // The text of a private member is as secret as what it decodes to.
    match take_string(map, name)?.map(zeroize::Zeroizing::new) {
        None => Ok(None),
        Some(text) => b64::decode(&*text).map(Some).ok_or_else(|| {
            Error::invalid_key(format!(
                "JWK member \"{name}\" is not valid unpadded base64url"
            ))
        }),
    }
}

impl serde::Serialize for Jwk {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(None)?;
        map.serialize_entry("kty", &self.kty)?;
        if let Some(kid) = &self.kid {
            map.serialize_entry("kid", kid)?;
        }
        if let Some(u) = &self.key_use {
            map.serialize_entry("use", u)?;
        }
        if let Some(ops) = &self.key_ops {
            map.serialize_entry("key_ops", ops)?;
        }
        if let Some(alg) = &self.alg {
            map.serialize_entry("alg", alg)?;
        }
        if let Some(crv) = &self.crv {
            map.serialize_entry("crv", crv)?;
        }
        for (name, value) in [
            ("n", &self.n),
            ("e", &self.e),
            ("x", &self.x),
            ("y", &self.y),
        ] {
            if let Some(bytes) = value {
                map.serialize_entry(name, &b64::encode(bytes))?;
            }
        }
        for (name, value) in [
            ("d", &self.d),
            ("p", &self.p),
            ("q", &self.q),
            ("dp", &self.dp),
            ("dq", &self.dq),
            ("qi", &self.qi),
            ("k", &self.k),
        ] {
            if let Some(secret) = value {
                map.serialize_entry(
                    name,
                    &*zeroize::Zeroizing::new(b64::encode(secret.expose())),
                )?;
            }
        }
        for (name, value) in &self.extra {
            map.serialize_entry(name, value)?;
        }
        map.end()
    }
}

/// A JWK embedded in the caller's own types (a configuration file, say)
/// is read as [`Jwk::from_json`] reads one: a member written twice is an
/// error, not the last one winning.
impl<'de> serde::Deserialize<'de> for Jwk {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Members;
        impl<'de> serde::de::Visitor<'de> for Members {
            type Value = Map<String, Value>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JWK (a JSON object)")
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut access: A,
            ) -> Result<Self::Value, A::Error> {
                // Wiped if reading stops half-way, a member twice included.
                let mut map = Reading(Map::new());
                while let Some((name, value)) = access.next_entry::<String, Value>()? {
                    if map.0.contains_key(&name) {
                        wipe(value);
                        return Err(serde::de::Error::custom(format!(
                            "JWK member {name:?} appears twice"
                        )));
                    }
                    map.0.insert(name, value);
                }
                Ok(std::mem::take(&mut map.0))
            }
        }
        let map = d.deserialize_map(Members)?;
        Jwk::from_map(map).map_err(serde::de::Error::custom)
    }
}

impl fmt::Debug for Jwk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Jwk")
            .field("kty", &self.kty)
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .field("crv", &self.crv)
            .field("use", &self.key_use)
            .field("private", &self.is_private())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::SigningKey;

    #[test]
    fn a_private_key_for_signing_gives_a_public_key_for_verifying() {
        let key = SigningKey::generate(Algorithm::ES256).unwrap();
        let mut private = key.to_jwk().unwrap();
        private.key_ops = Some(vec!["sign".to_owned(), "verify".to_owned()]);
        let public = private.to_public().unwrap();
        assert_eq!(public.key_ops, Some(vec!["verify".to_owned()]));
        let sig = private.to_signing_key().unwrap().sign(b"m").unwrap();
        public
            .to_verifying_key()
            .unwrap()
            .verify(b"m", &sig)
            .unwrap();
        // Only what the public key can undo: nothing private stays.
        private.key_ops = Some(vec!["sign".to_owned(), "unwrapKey".to_owned()]);
        let ops = private.to_public().unwrap().key_ops.unwrap();
        assert_eq!(ops, ["verify", "wrapKey"]);
    }

    #[test]
    fn a_key_type_whose_private_members_are_unknown_has_no_public_form() {
        // An ML-DSA key (draft "AKP"): its private part is `priv`, which
        // a public form made by removing known names would publish.
        let jwk = Jwk::from_json(r#"{"kty":"AKP","alg":"ML-DSA-44","pub":"AAAA","priv":"BBBB"}"#)
            .unwrap();
        let err = jwk.to_public().unwrap_err().to_string();
        assert!(err.contains("\"AKP\""), "{err}");
    }

    #[test]
    fn every_algorithm_round_trips_through_jwk() {
        for alg in Algorithm::all() {
            let key = SigningKey::generate(alg).unwrap().with_kid("k1");
            let private = Jwk::from_json(&key.to_jwk().unwrap().to_json()).unwrap();
            assert_eq!(private.alg.as_deref(), Some(alg.as_str()));
            assert!(private.is_private());
            let again = private.to_signing_key().unwrap();
            assert_eq!(again.kid(), Some("k1"));
            // The same algorithm, not another name for the key type
            // (an Ed25519 key stays Ed25519, not EdDSA).
            assert_eq!(again.algorithm(), alg);
            assert_eq!(private.to_signing_key_for(alg).unwrap().algorithm(), alg);
            let sig = again.sign(b"m").unwrap();
            key.verifying_key().unwrap().verify(b"m", &sig).unwrap();
            if !alg.is_symmetric() {
                let public = key.verifying_key().unwrap().to_public_jwk().unwrap();
                assert!(!public.is_private());
                assert!(!public.to_json().contains("\"d\""));
                let vk = Jwk::from_json(&public.to_json())
                    .unwrap()
                    .to_verifying_key()
                    .unwrap();
                vk.verify(b"m", &sig).unwrap();
                assert!(public.to_signing_key().is_err());
            }
        }
    }

    #[test]
    fn jwk_must_agree_with_the_algorithm() {
        let ec = SigningKey::generate(Algorithm::ES256)
            .unwrap()
            .to_jwk()
            .unwrap();
        assert!(matches!(
            ec.to_verifying_key_for(Algorithm::ES384),
            Err(Error::AlgorithmMismatch { .. })
        ));
        let mut no_alg = ec.clone();
        no_alg.alg = None;
        assert!(matches!(
            no_alg.to_verifying_key_for(Algorithm::ES384),
            Err(Error::InvalidKey { .. })
        ));
        assert!(matches!(
            no_alg.to_verifying_key_for(Algorithm::HS256),
            Err(Error::InvalidKey { .. })
        ));
        assert_eq!(no_alg.algorithm().unwrap(), Algorithm::ES256);
        let mut enc = ec.clone();
        enc.key_use = Some("enc".to_owned());
        assert!(matches!(
            enc.to_verifying_key(),
            Err(Error::KeyUsage { .. })
        ));
        let mut ops = ec;
        ops.key_ops = Some(vec!["sign".to_owned()]);
        assert!(matches!(
            ops.to_verifying_key(),
            Err(Error::KeyUsage { .. })
        ));
        assert!(ops.to_signing_key().is_ok());
    }

    #[test]
    fn rsa_and_oct_without_alg_need_one_named() {
        let jwk =
            Jwk::from_json(r#"{"kty":"oct","k":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}"#)
                .unwrap();
        assert!(matches!(
            jwk.to_verifying_key(),
            Err(Error::InvalidKey { .. })
        ));
        assert_eq!(
            jwk.to_verifying_key_for(Algorithm::HS256)
                .unwrap()
                .algorithm(),
            Algorithm::HS256
        );
    }

    #[test]
    fn strict_parsing() {
        for bad in [
            r#"{"kty":"EC","kty":"EC"}"#,
            r#"{"crv":"P-256"}"#,
            r#"{"kty":1}"#,
            r#"{"kty":"oct","k":"AAA="}"#,
            r#"{"kty":"oct","k":"AB"}"#,
            r#"{"kty":"oct","key_ops":"sign"}"#,
            r#"{"kty":"RSA","x5c":[1]}"#,
            r#"[]"#,
        ] {
            assert!(Jwk::from_json(bad).is_err(), "{bad}");
        }
        let kept =
            Jwk::from_json(r#"{"kty":"EC","x5c":["MIIB"],"x5t#S256":"abc","custom":{"a":1}}"#)
                .unwrap();
        let text = kept.to_json();
        assert!(text.contains("\"x5c\":[\"MIIB\"]") && text.contains("\"custom\":{\"a\":1}"));
    }

    #[test]
    fn debug_is_redacted() {
        let jwk = SigningKey::generate(Algorithm::HS256)
            .unwrap()
            .to_jwk()
            .unwrap();
        let k = b64::encode(jwk.k.as_ref().unwrap().expose());
        let shown = format!("{jwk:?}");
        assert!(!shown.contains(&k), "{shown}");
        assert!(shown.contains("private: true"));
    }
}
