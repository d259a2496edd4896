//! PEM and DER: PKCS#8, SPKI, PKCS#1 and SEC1.
//!
//! The ASN.1 is read with the RustCrypto encoding crates (`der`, `pkcs8`,
//! `spki`, `pkcs1`); the keys themselves are built by aws-lc.

use der::asn1::ObjectIdentifier;
use der::Decode;
use zeroize::Zeroizing;

use super::{split_point, PrivateParts, PublicParts, Secret, Signer};
use crate::alg::{Algorithm, Curve, Family};
use crate::Error;
use aws_lc_rs::signature as lc_sig;

const RSA_ENCRYPTION: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
const EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
const ED25519: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.101.112");
const P256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
const P384: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.34");
const P521: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.35");

/// The kind of key a PEM block or DER blob holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PemKind {
    /// PKCS#8 `PrivateKeyInfo` (`-----BEGIN PRIVATE KEY-----`).
    PrivateKey,
    /// PKCS#1 `RSAPrivateKey` (`-----BEGIN RSA PRIVATE KEY-----`).
    RsaPrivateKey,
    /// SEC1 `ECPrivateKey` (`-----BEGIN EC PRIVATE KEY-----`).
    EcPrivateKey,
    /// X.509 `SubjectPublicKeyInfo` (`-----BEGIN PUBLIC KEY-----`).
    PublicKey,
    /// PKCS#1 `RSAPublicKey` (`-----BEGIN RSA PUBLIC KEY-----`).
    RsaPublicKey,
}

impl PemKind {
    fn from_label(label: &str) -> Option<PemKind> {
        match label {
            "PRIVATE KEY" => Some(PemKind::PrivateKey),
            "RSA PRIVATE KEY" => Some(PemKind::RsaPrivateKey),
            "EC PRIVATE KEY" => Some(PemKind::EcPrivateKey),
            "PUBLIC KEY" => Some(PemKind::PublicKey),
            "RSA PUBLIC KEY" => Some(PemKind::RsaPublicKey),
            _ => None,
        }
    }

    /// True for the kinds that hold a private key.
    pub fn is_private(self) -> bool {
        matches!(
            self,
            PemKind::PrivateKey | PemKind::RsaPrivateKey | PemKind::EcPrivateKey
        )
    }
}

/// Find the first key block in `text` (skipping blocks such as
/// `EC PARAMETERS` and any text around them) and decode it.
pub(super) fn decode(text: &str) -> Result<(PemKind, Zeroizing<Vec<u8>>), Error> {
    let mut rest = text;
    while let Some(start) = rest.find("-----BEGIN ") {
        let block = &rest[start..];
        let label_end = block[11..]
            .find("-----")
            .ok_or_else(|| Error::invalid_key("unterminated PEM header line"))?;
        let label = &block[11..11 + label_end];
        let end_marker = format!("-----END {label}-----");
        let end = block
            .find(&end_marker)
            .ok_or_else(|| Error::invalid_key(format!("PEM block {label:?} has no END line")))?;
        let whole = &block[..end + end_marker.len()];
        rest = &block[end + end_marker.len()..];
        if label == "EC PARAMETERS" {
            continue;
        }
        let kind = PemKind::from_label(label).ok_or_else(|| Error::UnsupportedKey {
            reason: format!("PEM block {label:?} is not a key this crate reads"),
        })?;
        let (_, der) = der::pem::decode_vec(whole.as_bytes())
            .map_err(|e| Error::invalid_key(format!("invalid PEM: {e}")))?;
        return Ok((kind, Zeroizing::new(der)));
    }
    Err(Error::invalid_key("no PEM key block found"))
}

/// A PEM document with `label` around `der`.
pub(super) fn encode(label: &str, der: &[u8]) -> Result<String, Error> {
    der::pem::encode_string(label, der::pem::LineEnding::LF, der).map_err(|_| Error::Crypto {
        operation: "PEM encoding",
    })
}

fn curve_of(oid: ObjectIdentifier) -> Result<Curve, Error> {
    match oid {
        P256 => Ok(Curve::P256),
        P384 => Ok(Curve::P384),
        P521 => Ok(Curve::P521),
        other => Err(Error::UnsupportedKey {
            reason: format!("EC curve {other} is not supported"),
        }),
    }
}

fn mismatch(what: &str, alg: Algorithm) -> Error {
    Error::invalid_key(format!("{what} cannot be used with {alg}"))
}

fn ec_curve_param(params: Option<der::AnyRef<'_>>) -> Result<Curve, Error> {
    let oid = params
        .and_then(|p| p.decode_as::<ObjectIdentifier>().ok())
        .ok_or_else(|| Error::invalid_key("EC key without a named curve"))?;
    curve_of(oid)
}

pub(super) fn signer_from_der(alg: Algorithm, kind: PemKind, der: &[u8]) -> Result<Signer, Error> {
    let rejected = |e: aws_lc_rs::error::KeyRejected| match e.description_() {
        "TooSmall" => Error::WeakKey {
            reason: format!("the key is smaller than {alg} allows (RSA needs 2048 bits or more)"),
        },
        _ => Error::invalid_key(format!("the crypto library rejected the private key: {e}")),
    };
    match kind {
        PemKind::PrivateKey => {
            let info = pkcs8::PrivateKeyInfo::from_der(der)
                .map_err(|e| Error::invalid_key(format!("invalid PKCS#8: {e}")))?;
            let oid = info.algorithm.oid;
            match (oid, alg.family()) {
                (RSA_ENCRYPTION, Family::Rsa { .. }) => lc_sig::RsaKeyPair::from_pkcs8(der)
                    .map(Signer::Rsa)
                    .map_err(rejected),
                (EC_PUBLIC_KEY, Family::Ecdsa { curve, sign, .. }) => {
                    let found = ec_curve_param(info.algorithm.parameters)?;
                    if found != curve {
                        return Err(mismatch(&format!("a {} key", found.name()), alg));
                    }
                    lc_sig::EcdsaKeyPair::from_pkcs8(sign, der)
                        .map(Signer::Ec)
                        .map_err(rejected)
                }
                (ED25519, Family::EdDsa) => lc_sig::Ed25519KeyPair::from_pkcs8_maybe_unchecked(der)
                    .map(Signer::Ed25519)
                    .map_err(rejected),
                (RSA_ENCRYPTION, _) => Err(mismatch("an RSA key", alg)),
                (EC_PUBLIC_KEY, _) => Err(mismatch("an EC key", alg)),
                (ED25519, _) => Err(mismatch("an Ed25519 key", alg)),
                (other, _) => Err(Error::UnsupportedKey {
                    reason: format!("private key algorithm {other} is not supported"),
                }),
            }
        }
        PemKind::RsaPrivateKey => match alg.family() {
            Family::Rsa { .. } => lc_sig::RsaKeyPair::from_der(der)
                .map(Signer::Rsa)
                .map_err(rejected),
            _ => Err(mismatch("an RSA key", alg)),
        },
        PemKind::EcPrivateKey => match alg.family() {
            Family::Ecdsa { sign, curve, .. } => {
                let key = sec1::EcPrivateKey::from_der(der)
                    .map_err(|e| Error::invalid_key(format!("invalid SEC1 key: {e}")))?;
                if let Some(oid) = key.parameters.and_then(|p| p.named_curve()) {
                    let found = curve_of(oid)?;
                    if found != curve {
                        return Err(mismatch(&format!("a {} key", found.name()), alg));
                    }
                }
                lc_sig::EcdsaKeyPair::from_private_key_der(sign, der)
                    .map(Signer::Ec)
                    .map_err(rejected)
            }
            _ => Err(mismatch("an EC key", alg)),
        },
        PemKind::PublicKey | PemKind::RsaPublicKey => Err(Error::invalid_key(
            "a public key cannot sign; a private key is needed",
        )),
    }
}

fn rsa_public_from_pkcs1(der: &[u8]) -> Result<PublicParts, Error> {
    let key = pkcs1::RsaPublicKey::from_der(der)
        .map_err(|e| Error::invalid_key(format!("invalid RSA public key: {e}")))?;
    Ok(PublicParts::Rsa {
        n: key.modulus.as_bytes().to_vec(),
        e: key.public_exponent.as_bytes().to_vec(),
    })
}

pub(super) fn public_parts_from_der(kind: PemKind, der: &[u8]) -> Result<PublicParts, Error> {
    match kind {
        PemKind::RsaPublicKey => rsa_public_from_pkcs1(der),
        PemKind::PublicKey => {
            let spki = spki::SubjectPublicKeyInfoRef::from_der(der)
                .map_err(|e| Error::invalid_key(format!("invalid SubjectPublicKeyInfo: {e}")))?;
            let bits = spki
                .subject_public_key
                .as_bytes()
                .ok_or_else(|| Error::invalid_key("public key bit string has unused bits"))?;
            match spki.algorithm.oid {
                RSA_ENCRYPTION => rsa_public_from_pkcs1(bits),
                EC_PUBLIC_KEY => split_point(ec_curve_param(spki.algorithm.parameters)?, bits),
                ED25519 if bits.len() == 32 => Ok(PublicParts::Ed25519 { x: bits.to_vec() }),
                ED25519 => Err(Error::invalid_key("an Ed25519 public key is 32 bytes")),
                other => Err(Error::UnsupportedKey {
                    reason: format!("public key algorithm {other} is not supported"),
                }),
            }
        }
        _ => Err(Error::invalid_key("not a public key")),
    }
}

/// The RSA private members (for JWK export) from PKCS#8 DER.
pub(super) fn rsa_private_parts(pkcs8_der: &[u8]) -> Result<PrivateParts, Error> {
    let bad = |e: der::Error| Error::invalid_key(format!("invalid RSA private key: {e}"));
    let info = pkcs8::PrivateKeyInfo::from_der(pkcs8_der).map_err(bad)?;
    let key = pkcs1::RsaPrivateKey::from_der(info.private_key).map_err(bad)?;
    if key.other_prime_infos.is_some() {
        return Err(Error::UnsupportedKey {
            reason: "multi-prime RSA keys are not supported".to_owned(),
        });
    }
    let s = |u: pkcs1::UintRef<'_>| Secret::new(u.as_bytes().to_vec());
    Ok(PrivateParts::Rsa {
        d: s(key.private_exponent),
        p: s(key.prime1),
        q: s(key.prime2),
        dp: s(key.exponent1),
        dq: s(key.exponent2),
        qi: s(key.coefficient),
    })
}
