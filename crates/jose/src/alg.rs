//! The one table of JWS algorithms (RFC 7518 §3, RFC 8037 §3.1).
//!
//! Every other module asks this table what an algorithm needs; nothing else
//! lists algorithms. Each row is built by a small factory (`hmac`, `rsa_pkcs1`,
//! `rsa_pss`, `ecdsa`, `eddsa`), so adding an algorithm is adding one row.
//!
//! `none` is not an algorithm here: it cannot be named, parsed or allowed.

use std::fmt;
use std::str::FromStr;

use aws_lc_rs::{hmac as lc_hmac, signature as lc_sig};

use crate::Error;

/// A JWS signature algorithm.
///
/// The variants are the registered names of RFC 7518 and RFC 8037. There is
/// no `none`: an unsigned token cannot be produced or accepted.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[allow(clippy::upper_case_acronyms)]
pub enum Algorithm {
    /// HMAC with SHA-256.
    HS256,
    /// HMAC with SHA-384.
    HS384,
    /// HMAC with SHA-512.
    HS512,
    /// RSASSA-PKCS1-v1_5 with SHA-256.
    RS256,
    /// RSASSA-PKCS1-v1_5 with SHA-384.
    RS384,
    /// RSASSA-PKCS1-v1_5 with SHA-512.
    RS512,
    /// RSASSA-PSS with SHA-256 and MGF1 with SHA-256.
    PS256,
    /// RSASSA-PSS with SHA-384 and MGF1 with SHA-384.
    PS384,
    /// RSASSA-PSS with SHA-512 and MGF1 with SHA-512.
    PS512,
    /// ECDSA on P-256 with SHA-256.
    ES256,
    /// ECDSA on P-384 with SHA-384.
    ES384,
    /// ECDSA on P-521 with SHA-512.
    ES512,
    /// EdDSA on Ed25519 (RFC 8037).
    EdDSA,
    /// EdDSA on Ed25519 by its fully-specified name (RFC 9864), which
    /// openid-client and others now write; the same signatures as
    /// `EdDSA`. A key set made from JWKs uses an Ed25519 key for both.
    Ed25519,
}

/// A NIST curve used by the ECDSA algorithms.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Curve {
    /// P-256 (secp256r1).
    P256,
    /// P-384 (secp384r1).
    P384,
    /// P-521 (secp521r1).
    P521,
}

impl Curve {
    /// The JWK `crv` name.
    pub fn name(self) -> &'static str {
        match self {
            Curve::P256 => "P-256",
            Curve::P384 => "P-384",
            Curve::P521 => "P-521",
        }
    }

    /// Size in bytes of one coordinate (and of the private scalar).
    pub fn coordinate_len(self) -> usize {
        match self {
            Curve::P256 => 32,
            Curve::P384 => 48,
            Curve::P521 => 66,
        }
    }

    /// The curve with this JWK `crv` name.
    pub fn from_name(name: &str) -> Option<Curve> {
        match name {
            "P-256" => Some(Curve::P256),
            "P-384" => Some(Curve::P384),
            "P-521" => Some(Curve::P521),
            _ => None,
        }
    }
}

/// What a row of the table needs from the crypto library.
#[derive(Clone, Copy)]
pub(crate) enum Family {
    Hmac {
        alg: lc_hmac::Algorithm,
        /// RFC 7518 §3.2: a key of the same size as the hash output or larger.
        min_key_len: usize,
    },
    Rsa {
        verify: &'static lc_sig::RsaParameters,
        sign: &'static dyn lc_sig::RsaEncoding,
    },
    Ecdsa {
        curve: Curve,
        verify: &'static lc_sig::EcdsaVerificationAlgorithm,
        sign: &'static lc_sig::EcdsaSigningAlgorithm,
    },
    EdDsa,
}

/// The kind of key an algorithm takes, as the JWK `kty` names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KeyType {
    /// A shared secret (`oct`).
    Oct,
    /// An RSA key (`RSA`).
    Rsa,
    /// An elliptic-curve key (`EC`).
    Ec,
    /// An octet key pair (`OKP`, RFC 8037).
    Okp,
}

impl KeyType {
    /// The JWK `kty` value.
    pub fn name(self) -> &'static str {
        match self {
            KeyType::Oct => "oct",
            KeyType::Rsa => "RSA",
            KeyType::Ec => "EC",
            KeyType::Okp => "OKP",
        }
    }
}

pub(crate) struct Row {
    pub(crate) alg: Algorithm,
    pub(crate) name: &'static str,
    pub(crate) family: Family,
}

const fn hmac(alg: Algorithm, name: &'static str, h: lc_hmac::Algorithm, len: usize) -> Row {
    Row {
        alg,
        name,
        family: Family::Hmac {
            alg: h,
            min_key_len: len,
        },
    }
}

const fn rsa(
    alg: Algorithm,
    name: &'static str,
    verify: &'static lc_sig::RsaParameters,
    sign: &'static dyn lc_sig::RsaEncoding,
) -> Row {
    Row {
        alg,
        name,
        family: Family::Rsa { verify, sign },
    }
}

const fn ecdsa(
    alg: Algorithm,
    name: &'static str,
    curve: Curve,
    verify: &'static lc_sig::EcdsaVerificationAlgorithm,
    sign: &'static lc_sig::EcdsaSigningAlgorithm,
) -> Row {
    Row {
        alg,
        name,
        family: Family::Ecdsa {
            curve,
            verify,
            sign,
        },
    }
}

const fn eddsa(alg: Algorithm, name: &'static str) -> Row {
    Row {
        alg,
        name,
        family: Family::EdDsa,
    }
}

/// The table. Its order is the order of the `Algorithm` variants.
static TABLE: [Row; 14] = [
    hmac(Algorithm::HS256, "HS256", lc_hmac::HMAC_SHA256, 32),
    hmac(Algorithm::HS384, "HS384", lc_hmac::HMAC_SHA384, 48),
    hmac(Algorithm::HS512, "HS512", lc_hmac::HMAC_SHA512, 64),
    rsa(
        Algorithm::RS256,
        "RS256",
        &lc_sig::RSA_PKCS1_2048_8192_SHA256,
        &lc_sig::RSA_PKCS1_SHA256,
    ),
    rsa(
        Algorithm::RS384,
        "RS384",
        &lc_sig::RSA_PKCS1_2048_8192_SHA384,
        &lc_sig::RSA_PKCS1_SHA384,
    ),
    rsa(
        Algorithm::RS512,
        "RS512",
        &lc_sig::RSA_PKCS1_2048_8192_SHA512,
        &lc_sig::RSA_PKCS1_SHA512,
    ),
    rsa(
        Algorithm::PS256,
        "PS256",
        &lc_sig::RSA_PSS_2048_8192_SHA256,
        &lc_sig::RSA_PSS_SHA256,
    ),
    rsa(
        Algorithm::PS384,
        "PS384",
        &lc_sig::RSA_PSS_2048_8192_SHA384,
        &lc_sig::RSA_PSS_SHA384,
    ),
    rsa(
        Algorithm::PS512,
        "PS512",
        &lc_sig::RSA_PSS_2048_8192_SHA512,
        &lc_sig::RSA_PSS_SHA512,
    ),
    ecdsa(
        Algorithm::ES256,
        "ES256",
        Curve::P256,
        &lc_sig::ECDSA_P256_SHA256_FIXED,
        &lc_sig::ECDSA_P256_SHA256_FIXED_SIGNING,
    ),
    ecdsa(
        Algorithm::ES384,
        "ES384",
        Curve::P384,
        &lc_sig::ECDSA_P384_SHA384_FIXED,
        &lc_sig::ECDSA_P384_SHA384_FIXED_SIGNING,
    ),
    ecdsa(
        Algorithm::ES512,
        "ES512",
        Curve::P521,
        &lc_sig::ECDSA_P521_SHA512_FIXED,
        &lc_sig::ECDSA_P521_SHA512_FIXED_SIGNING,
    ),
    eddsa(Algorithm::EdDSA, "EdDSA"),
    eddsa(Algorithm::Ed25519, "Ed25519"),
];

impl Algorithm {
    /// Every supported algorithm, in table order.
    pub fn all() -> impl Iterator<Item = Algorithm> {
        TABLE.iter().map(|row| row.alg)
    }

    pub(crate) fn row(self) -> &'static Row {
        // The table is laid out in variant order; the unit test
        // `table_is_in_variant_order` checks that invariant.
        &TABLE[self as usize]
    }

    pub(crate) fn family(self) -> Family {
        self.row().family
    }

    /// The registered name (`"ES256"`, `"EdDSA"`, …).
    pub fn as_str(self) -> &'static str {
        self.row().name
    }

    /// The JWK key type this algorithm signs with.
    pub fn key_type(self) -> KeyType {
        match self.family() {
            Family::Hmac { .. } => KeyType::Oct,
            Family::Rsa { .. } => KeyType::Rsa,
            Family::Ecdsa { .. } => KeyType::Ec,
            Family::EdDsa => KeyType::Okp,
        }
    }

    /// The curve of an ECDSA algorithm.
    pub fn curve(self) -> Option<Curve> {
        match self.family() {
            Family::Ecdsa { curve, .. } => Some(curve),
            _ => None,
        }
    }

    /// True for the HMAC algorithms, whose key is a shared secret.
    pub fn is_symmetric(self) -> bool {
        self.key_type() == KeyType::Oct
    }

    /// Minimum HMAC secret length in bytes (the hash output size).
    pub fn min_secret_len(self) -> Option<usize> {
        match self.family() {
            Family::Hmac { min_key_len, .. } => Some(min_key_len),
            _ => None,
        }
    }

    /// Parse a registered name. Unknown names, including `none`, are errors.
    pub fn from_name(name: &str) -> Result<Algorithm, Error> {
        TABLE
            .iter()
            .find(|row| row.name == name)
            .map(|row| row.alg)
            .ok_or_else(|| Error::UnsupportedAlgorithm {
                alg: name.to_owned(),
            })
    }
}

impl FromStr for Algorithm {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        Algorithm::from_name(s)
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl serde::Serialize for Algorithm {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> serde::Deserialize<'de> for Algorithm {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Algorithm::from_name(&name).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_in_variant_order() {
        for (i, row) in TABLE.iter().enumerate() {
            assert_eq!(row.alg as usize, i, "{} is out of place", row.name);
            assert_eq!(Algorithm::from_name(row.name).ok(), Some(row.alg));
        }
        assert_eq!(Algorithm::all().count(), TABLE.len());
    }

    #[test]
    fn none_and_lookalikes_are_not_algorithms() {
        for name in [
            "none", "None", "NONE", "hs256", "HS256 ", "ES521", "RS1", "",
        ] {
            assert!(
                matches!(
                    Algorithm::from_name(name),
                    Err(Error::UnsupportedAlgorithm { .. })
                ),
                "{name:?} was accepted"
            );
        }
    }
}
