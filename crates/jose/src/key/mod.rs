//! Signing and verifying keys.
//!
//! A key's type fixes its algorithm: a [`VerifyingKey`] built for `RS256`
//! verifies `RS256` tokens and nothing else, so an `HS256` token "signed"
//! with the bytes of an RSA public key (the classic algorithm-confusion
//! attack) is refused before any MAC is computed. HMAC keys can only be made
//! from secrets, never from public-key material.
//!
//! Keys hold the crypto library's parsed key objects: signing and verifying
//! never re-parse DER. They are cheap to clone (shared), secret material is
//! zeroized when the last clone drops, and `Debug` never prints a secret.

mod checks;
mod parts;
mod pem;
mod secret;

use std::fmt;
use std::sync::Arc;

use aws_lc_rs::encoding::{AsBigEndian, AsDer};
use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::{self as lc_sig, KeyPair as _, ParsedPublicKey};
use aws_lc_rs::{hmac as lc_hmac, rand as lc_rand};
use zeroize::Zeroizing;

use crate::alg::{Algorithm, Family, KeyType};
use crate::Error;

use parts::{split_point, uncompressed_point};
pub(crate) use parts::{PrivateParts, PublicParts};
pub use pem::PemKind;
pub use secret::Secret;

// The HMAC variant holds aws-lc's precomputed HMAC state (about 1.2 KiB).
// The enum only ever lives behind an `Arc`, so its size is never copied;
// boxing the state would add a pointer chase to every HMAC operation.
#[allow(clippy::large_enum_variant)]
enum Signer {
    Hmac { key: lc_hmac::Key, secret: Secret },
    Rsa(lc_sig::RsaKeyPair),
    Ec(lc_sig::EcdsaKeyPair),
    Ed25519(lc_sig::Ed25519KeyPair),
}

/// A key that signs tokens with one algorithm.
#[derive(Clone)]
pub struct SigningKey {
    alg: Algorithm,
    kid: Option<String>,
    inner: Arc<Signer>,
    /// The base64url of `{"alg":…,"typ":"JWT","kid":…}`, the header
    /// `jwt::sign` always uses with this key, made once.
    jwt_header: std::sync::OnceLock<String>,
}

impl SigningKey {
    /// An HMAC key (`HS256`/`HS384`/`HS512`) from a shared secret.
    ///
    /// The secret must be at least as long as the hash output (RFC 7518
    /// §3.2), and must not be PEM or JWK text: feeding a public key file to
    /// an HMAC constructor is how algorithm confusion starts.
    pub fn hmac(alg: Algorithm, secret: &[u8]) -> Result<SigningKey, Error> {
        let (key, secret) = hmac_key(alg, secret)?;
        Ok(SigningKey::from_parts(alg, Signer::Hmac { key, secret }))
    }

    /// A new random key for `alg`. RSA keys are 2048 bits; see
    /// [`SigningKey::generate_rsa`] for other sizes. HMAC secrets are as
    /// long as the hash output.
    pub fn generate(alg: Algorithm) -> Result<SigningKey, Error> {
        match alg.family() {
            Family::Hmac { min_key_len, .. } => {
                // Random bytes that happen to look like a key to the
                // algorithm-confusion check (starting `ssh-`: 2^-32) are
                // drawn again, not refused.
                let mut secret = Zeroizing::new(vec![0u8; min_key_len]);
                let mut drawn = Err(Error::Crypto {
                    operation: "random generation",
                });
                for _ in 0..4 {
                    lc_rand::fill(&mut secret).map_err(|_| Error::Crypto {
                        operation: "random generation",
                    })?;
                    drawn = SigningKey::hmac(alg, &secret);
                    if !matches!(drawn, Err(Error::InvalidKey { .. })) {
                        break;
                    }
                }
                drawn
            }
            Family::Rsa { .. } => SigningKey::generate_rsa(alg, 2048),
            Family::Ecdsa { sign, .. } => {
                let pair = lc_sig::EcdsaKeyPair::generate(sign).map_err(|_| Error::Crypto {
                    operation: "EC key generation",
                })?;
                Ok(SigningKey::from_parts(alg, Signer::Ec(pair)))
            }
            Family::EdDsa => {
                let pair = lc_sig::Ed25519KeyPair::generate().map_err(|_| Error::Crypto {
                    operation: "Ed25519 key generation",
                })?;
                Ok(SigningKey::from_parts(alg, Signer::Ed25519(pair)))
            }
        }
    }

    /// A new RSA key of 2048, 3072 or 4096 bits for an `RS*`/`PS*` algorithm.
    pub fn generate_rsa(alg: Algorithm, bits: usize) -> Result<SigningKey, Error> {
        if alg.key_type() != KeyType::Rsa {
            return Err(Error::UnsupportedKey {
                reason: format!("{alg} does not use RSA keys"),
            });
        }
        let size = match bits {
            2048 => KeySize::Rsa2048,
            3072 => KeySize::Rsa3072,
            4096 => KeySize::Rsa4096,
            other => {
                return Err(Error::UnsupportedKey {
                    reason: format!(
                        "RSA keys are generated with 2048, 3072 or 4096 bits, not {other}"
                    ),
                })
            }
        };
        let pair = lc_sig::RsaKeyPair::generate(size).map_err(|_| Error::Crypto {
            operation: "RSA key generation",
        })?;
        Ok(SigningKey::from_parts(alg, Signer::Rsa(pair)))
    }

    /// A private key from PEM: PKCS#8 (`PRIVATE KEY`), PKCS#1
    /// (`RSA PRIVATE KEY`) or SEC1 (`EC PRIVATE KEY`).
    pub fn from_pem(alg: Algorithm, pem: &str) -> Result<SigningKey, Error> {
        let (kind, der) = pem::decode(pem)?;
        SigningKey::from_der(alg, kind, &der)
    }

    /// A private key from DER of the given kind.
    pub fn from_der(alg: Algorithm, kind: PemKind, der: &[u8]) -> Result<SigningKey, Error> {
        let signer = pem::signer_from_der(alg, kind, der)?;
        SigningKey::new_checked(alg, signer)
    }

    pub(crate) fn from_rsa_components(
        alg: Algorithm,
        components: &aws_lc_rs::rsa::KeyPairComponents<&[u8], &[u8]>,
    ) -> Result<SigningKey, Error> {
        checks::rsa_public(components.public_key.n, components.public_key.e)?;
        let pair = lc_sig::RsaKeyPair::from_components(components)
            .map_err(|e| Error::invalid_key(format!("RSA private key rejected: {e}")))?;
        SigningKey::new_checked(alg, Signer::Rsa(pair))
    }

    pub(crate) fn from_ec_parts(
        alg: Algorithm,
        d: &[u8],
        x: &[u8],
        y: &[u8],
    ) -> Result<SigningKey, Error> {
        let (curve, sign) = match alg.family() {
            Family::Ecdsa { curve, sign, .. } => (curve, sign),
            _ => return Err(Error::invalid_key(format!("{alg} does not use EC keys"))),
        };
        if d.len() != curve.coordinate_len() {
            return Err(Error::invalid_key(format!(
                "a {} private key is {} bytes",
                curve.name(),
                curve.coordinate_len()
            )));
        }
        let point = uncompressed_point(curve, x, y)?;
        let pair = lc_sig::EcdsaKeyPair::from_private_key_and_public_key(sign, d, &point)
            .map_err(|e| Error::invalid_key(format!("EC private key rejected: {e}")))?;
        Ok(SigningKey::from_parts(alg, Signer::Ec(pair)))
    }

    /// An Ed25519 key for `alg` (`EdDSA` or `Ed25519`, as the JWK or the
    /// caller names it: the same key, two names a verifier may pin).
    pub(crate) fn from_ed25519_parts(
        alg: Algorithm,
        d: &[u8],
        x: &[u8],
    ) -> Result<SigningKey, Error> {
        let pair = lc_sig::Ed25519KeyPair::from_seed_and_public_key(d, x)
            .map_err(|e| Error::invalid_key(format!("Ed25519 private key rejected: {e}")))?;
        Ok(SigningKey::from_parts(alg, Signer::Ed25519(pair)))
    }

    fn new_checked(alg: Algorithm, signer: Signer) -> Result<SigningKey, Error> {
        if let Signer::Rsa(pair) = &signer {
            let public = pair.public_key();
            checks::rsa_public(
                public.modulus().big_endian_without_leading_zero(),
                public.exponent().big_endian_without_leading_zero(),
            )?;
        }
        Ok(SigningKey::from_parts(alg, signer))
    }

    fn from_parts(alg: Algorithm, signer: Signer) -> SigningKey {
        SigningKey {
            alg,
            kid: None,
            inner: Arc::new(signer),
            jwt_header: std::sync::OnceLock::new(),
        }
    }

    /// The slot where `jwt::sign` keeps this key's encoded default JWT
    /// header; emptied whenever the `kid` changes. The key only holds it.
    pub(crate) fn jwt_header_memo(&self) -> &std::sync::OnceLock<String> {
        &self.jwt_header
    }

    /// The algorithm this key signs with.
    pub fn algorithm(&self) -> Algorithm {
        self.alg
    }

    /// The key id put in token headers, if any.
    pub fn kid(&self) -> Option<&str> {
        self.kid.as_deref()
    }

    /// Set the key id.
    #[must_use]
    pub fn with_kid(mut self, kid: impl Into<String>) -> SigningKey {
        self.kid = Some(kid.into());
        self.jwt_header = std::sync::OnceLock::new();
        self
    }

    /// Sign `message`, returning the JWS signature bytes.
    pub fn sign(&self, message: &[u8]) -> Result<Vec<u8>, Error> {
        let failed = |_| Error::Crypto {
            operation: "signing",
        };
        match (&*self.inner, self.alg.family()) {
            (Signer::Hmac { key, .. }, _) => Ok(lc_hmac::sign(key, message).as_ref().to_vec()),
            (Signer::Rsa(pair), Family::Rsa { sign, .. }) => {
                let mut sig = vec![0u8; pair.public_modulus_len()];
                pair.sign(sign, &lc_rand::SystemRandom::new(), message, &mut sig)
                    .map_err(failed)?;
                Ok(sig)
            }
            (Signer::Ec(pair), _) => Ok(pair
                .sign(&lc_rand::SystemRandom::new(), message)
                .map_err(failed)?
                .as_ref()
                .to_vec()),
            (Signer::Ed25519(pair), _) => Ok(pair.sign(message).as_ref().to_vec()),
            // A Signer is only ever built together with an algorithm of its
            // family, so this arm cannot be reached.
            _ => Err(Error::Crypto {
                operation: "signing",
            }),
        }
    }

    /// The key that verifies this key's signatures (the same secret, for HMAC).
    pub fn verifying_key(&self) -> Result<VerifyingKey, Error> {
        let key = match &*self.inner {
            Signer::Hmac { key, secret } => VerifyingKey {
                alg: self.alg,
                kid: None,
                inner: Arc::new(Verifier::Hmac {
                    key: key.clone(),
                    secret: secret.clone(),
                }),
            },
            _ => VerifyingKey::from_public_parts(self.alg, self.public_parts()?)?,
        };
        Ok(VerifyingKey {
            kid: self.kid.clone(),
            ..key
        })
    }

    pub(crate) fn public_parts(&self) -> Result<PublicParts, Error> {
        match &*self.inner {
            Signer::Hmac { .. } => Err(Error::UnsupportedKey {
                reason: "an HMAC key has no public part".to_owned(),
            }),
            Signer::Rsa(pair) => {
                let public = pair.public_key();
                Ok(PublicParts::Rsa {
                    n: public.modulus().big_endian_without_leading_zero().to_vec(),
                    e: public.exponent().big_endian_without_leading_zero().to_vec(),
                })
            }
            Signer::Ec(pair) => {
                let curve = self
                    .alg
                    .curve()
                    .ok_or_else(|| Error::invalid_key("not an EC algorithm"))?;
                split_point(curve, pair.public_key().as_ref())
            }
            Signer::Ed25519(pair) => Ok(PublicParts::Ed25519 {
                x: pair.public_key().as_ref().to_vec(),
            }),
        }
    }

    /// The private key as PKCS#8 DER (not for HMAC keys).
    pub fn to_pkcs8_der(&self) -> Result<Secret, Error> {
        let failed = |_| Error::Crypto {
            operation: "PKCS#8 encoding",
        };
        let der = match &*self.inner {
            Signer::Hmac { .. } => {
                return Err(Error::UnsupportedKey {
                    reason: "an HMAC secret has no PKCS#8 form".to_owned(),
                })
            }
            Signer::Rsa(pair) => AsDer::<aws_lc_rs::encoding::Pkcs8V1Der>::as_der(pair)
                .map_err(failed)?
                .as_ref()
                .to_vec(),
            Signer::Ec(pair) => pair.to_pkcs8v1().map_err(failed)?.as_ref().to_vec(),
            Signer::Ed25519(pair) => pair.to_pkcs8v1().map_err(failed)?.as_ref().to_vec(),
        };
        Ok(Secret::new(der))
    }

    /// The private key as a PKCS#8 PEM document (`PRIVATE KEY`).
    pub fn to_pkcs8_pem(&self) -> Result<Zeroizing<String>, Error> {
        let der = self.to_pkcs8_der()?;
        pem::encode("PRIVATE KEY", der.expose()).map(Zeroizing::new)
    }

    /// The public key as SPKI PEM (`PUBLIC KEY`).
    pub fn to_public_pem(&self) -> Result<String, Error> {
        self.verifying_key()?.to_public_pem()
    }

    /// The private parameters, for JWK export.
    pub(crate) fn private_parts(&self) -> Result<PrivateParts, Error> {
        match &*self.inner {
            Signer::Hmac { secret, .. } => Ok(PrivateParts::Oct { k: secret.clone() }),
            Signer::Rsa(_) => pem::rsa_private_parts(self.to_pkcs8_der()?.expose()),
            Signer::Ec(pair) => {
                let d = AsBigEndian::<aws_lc_rs::encoding::EcPrivateKeyBin>::as_be_bytes(
                    &pair.private_key(),
                )
                .map_err(|_| Error::Crypto {
                    operation: "EC key export",
                })?;
                Ok(PrivateParts::Ec {
                    d: Secret::new(d.as_ref().to_vec()),
                })
            }
            Signer::Ed25519(pair) => {
                let seed = pair.seed().map_err(|_| Error::Crypto {
                    operation: "Ed25519 key export",
                })?;
                let d = seed.as_be_bytes().map_err(|_| Error::Crypto {
                    operation: "Ed25519 key export",
                })?;
                Ok(PrivateParts::Ed25519 {
                    d: Secret::new(d.as_ref().to_vec()),
                })
            }
        }
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("alg", &self.alg)
            .field("kid", &self.kid)
            .field("key", &"[REDACTED]")
            .finish()
    }
}

// The HMAC variant holds aws-lc's precomputed HMAC state (about 1.2 KiB).
// The enum only ever lives behind an `Arc`, so its size is never copied;
// boxing the state would add a pointer chase to every HMAC operation.
#[allow(clippy::large_enum_variant)]
enum Verifier {
    Hmac {
        key: lc_hmac::Key,
        secret: Secret,
    },
    Public {
        parsed: ParsedPublicKey,
        parts: PublicParts,
    },
}

/// A key that verifies tokens of one algorithm.
#[derive(Clone)]
pub struct VerifyingKey {
    alg: Algorithm,
    kid: Option<String>,
    inner: Arc<Verifier>,
}

impl VerifyingKey {
    /// An HMAC key from a shared secret (see [`SigningKey::hmac`]).
    pub fn hmac(alg: Algorithm, secret: &[u8]) -> Result<VerifyingKey, Error> {
        let (key, secret) = hmac_key(alg, secret)?;
        Ok(VerifyingKey {
            alg,
            kid: None,
            inner: Arc::new(Verifier::Hmac { key, secret }),
        })
    }

    /// A public key from PEM: SPKI (`PUBLIC KEY`) or PKCS#1
    /// (`RSA PUBLIC KEY`). A private-key PEM is accepted too and reduced to
    /// its public half.
    pub fn from_pem(alg: Algorithm, pem: &str) -> Result<VerifyingKey, Error> {
        let (kind, der) = pem::decode(pem)?;
        VerifyingKey::from_der(alg, kind, &der)
    }

    /// A public key from DER of the given kind.
    pub fn from_der(alg: Algorithm, kind: PemKind, der: &[u8]) -> Result<VerifyingKey, Error> {
        match kind {
            PemKind::PublicKey | PemKind::RsaPublicKey => {
                VerifyingKey::from_public_parts(alg, pem::public_parts_from_der(kind, der)?)
            }
            _ => SigningKey::from_der(alg, kind, der)?.verifying_key(),
        }
    }

    pub(crate) fn from_public_parts(
        alg: Algorithm,
        parts: PublicParts,
    ) -> Result<VerifyingKey, Error> {
        let parsed = parts.parse(alg)?;
        Ok(VerifyingKey {
            alg,
            kid: None,
            inner: Arc::new(Verifier::Public { parsed, parts }),
        })
    }

    /// The algorithm this key verifies.
    pub fn algorithm(&self) -> Algorithm {
        self.alg
    }

    /// The key id, if any.
    pub fn kid(&self) -> Option<&str> {
        self.kid.as_deref()
    }

    /// Set the key id.
    #[must_use]
    pub fn with_kid(mut self, kid: impl Into<String>) -> VerifyingKey {
        self.kid = Some(kid.into());
        self
    }

    /// True for HMAC keys (shared secrets).
    pub fn is_symmetric(&self) -> bool {
        matches!(&*self.inner, Verifier::Hmac { .. })
    }

    /// Check `signature` over `message`. Constant-time for HMAC.
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> Result<(), Error> {
        let ok = match &*self.inner {
            Verifier::Hmac { key, .. } => lc_hmac::verify(key, message, signature).is_ok(),
            Verifier::Public { parsed, .. } => parsed.verify_sig(message, signature).is_ok(),
        };
        if ok {
            Ok(())
        } else {
            Err(Error::InvalidSignature)
        }
    }

    pub(crate) fn public_parts(&self) -> Option<&PublicParts> {
        match &*self.inner {
            Verifier::Public { parts, .. } => Some(parts),
            Verifier::Hmac { .. } => None,
        }
    }

    /// The public key as SPKI DER (not for HMAC keys).
    pub fn to_spki_der(&self) -> Result<Vec<u8>, Error> {
        match &*self.inner {
            Verifier::Public { parsed, .. } => {
                AsDer::<aws_lc_rs::encoding::PublicKeyX509Der>::as_der(parsed)
                    .map(|der| der.as_ref().to_vec())
                    .map_err(|_| Error::Crypto {
                        operation: "SPKI encoding",
                    })
            }
            Verifier::Hmac { .. } => Err(Error::UnsupportedKey {
                reason: "an HMAC key has no public form".to_owned(),
            }),
        }
    }

    /// The public key as SPKI PEM (`PUBLIC KEY`).
    pub fn to_public_pem(&self) -> Result<String, Error> {
        pem::encode("PUBLIC KEY", &self.to_spki_der()?)
    }

    /// The HMAC secret, for a symmetric key.
    pub(crate) fn hmac_secret(&self) -> Option<&Secret> {
        match &*self.inner {
            Verifier::Hmac { secret, .. } => Some(secret),
            Verifier::Public { .. } => None,
        }
    }
}

impl fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match &*self.inner {
            Verifier::Hmac { .. } => "[REDACTED]",
            Verifier::Public { parts, .. } => parts.key_type().name(),
        };
        f.debug_struct("VerifyingKey")
            .field("alg", &self.alg)
            .field("kid", &self.kid)
            .field("key", &kind)
            .finish()
    }
}

fn hmac_key(alg: Algorithm, secret: &[u8]) -> Result<(lc_hmac::Key, Secret), Error> {
    let Family::Hmac {
        alg: h,
        min_key_len,
    } = alg.family()
    else {
        return Err(Error::UnsupportedKey {
            reason: format!(
                "{alg} is not an HMAC algorithm; HMAC secrets only make HS256/384/512 keys"
            ),
        });
    };
    checks::hmac_secret(alg, secret, min_key_len)?;
    Ok((lc_hmac::Key::new(h, secret), Secret::new(secret.to_vec())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_algorithm_generates_signs_and_verifies() {
        for alg in Algorithm::all() {
            let key = SigningKey::generate(alg).unwrap();
            assert_eq!(key.algorithm(), alg);
            let sig = key.sign(b"message").unwrap();
            let vk = key.verifying_key().unwrap();
            assert_eq!(vk.algorithm(), alg);
            vk.verify(b"message", &sig).unwrap();
            assert!(matches!(
                vk.verify(b"messagE", &sig),
                Err(Error::InvalidSignature)
            ));
        }
    }

    #[test]
    fn debug_never_shows_secrets() {
        let secret = [0x41u8; 32];
        let key = SigningKey::hmac(Algorithm::HS256, &secret).unwrap();
        let vk = key.verifying_key().unwrap();
        for text in [
            format!("{key:?}"),
            format!("{vk:?}"),
            format!("{:?}", Secret::new(secret.to_vec())),
        ] {
            assert!(text.contains("REDACTED"), "{text}");
            assert!(!text.contains("AAAA") && !text.contains("65, 65"), "{text}");
        }
        let ec = SigningKey::generate(Algorithm::ES256).unwrap();
        let d = match ec.private_parts().unwrap() {
            PrivateParts::Ec { d } => d,
            _ => unreachable!(),
        };
        let shown = format!("{ec:?}");
        assert!(!shown.contains(&format!("{:?}", d.expose())));
        assert!(shown.contains("REDACTED"));
    }

    #[test]
    fn hmac_constructors_refuse_asymmetric_algorithms() {
        assert!(matches!(
            VerifyingKey::hmac(Algorithm::RS256, &[7u8; 64]),
            Err(Error::UnsupportedKey { .. })
        ));
    }
}
