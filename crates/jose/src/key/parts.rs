//! Key material in the form JWKs carry it: the public half of an
//! asymmetric key, and the private members of any key.

use aws_lc_rs::rsa::PublicKeyComponents;
use aws_lc_rs::signature::{self as lc_sig, ParsedPublicKey};

use super::{checks, Secret};
use crate::alg::{Algorithm, Curve, Family, KeyType};
use crate::Error;

/// The public half of an asymmetric key, in the form JWKs carry it.
#[derive(Clone, PartialEq, Eq)]
pub(crate) enum PublicParts {
    Rsa {
        n: Vec<u8>,
        e: Vec<u8>,
    },
    Ec {
        curve: Curve,
        x: Vec<u8>,
        y: Vec<u8>,
    },
    Ed25519 {
        x: Vec<u8>,
    },
}

impl PublicParts {
    /// Parse the public key for `alg`, once, for all later verifications.
    pub(super) fn parse(&self, alg: Algorithm) -> Result<ParsedPublicKey, Error> {
        let rejected = |e: aws_lc_rs::error::KeyRejected| {
            Error::invalid_key(format!("the crypto library rejected the public key: {e}"))
        };
        match (self, alg.family()) {
            (PublicParts::Rsa { n, e }, Family::Rsa { verify, .. }) => {
                checks::rsa_public(n, e)?;
                PublicKeyComponents {
                    n: n.as_slice(),
                    e: e.as_slice(),
                }
                .to_parsed_public_key(verify)
                .map_err(rejected)
            }
            (
                PublicParts::Ec { curve, x, y },
                Family::Ecdsa {
                    curve: c, verify, ..
                },
            ) => {
                if *curve != c {
                    return Err(Error::invalid_key(format!(
                        "{alg} needs a {} key, not {}",
                        c.name(),
                        curve.name()
                    )));
                }
                let point = uncompressed_point(*curve, x, y)?;
                ParsedPublicKey::new(verify, point).map_err(rejected)
            }
            (PublicParts::Ed25519 { x }, Family::EdDsa) => {
                if x.len() != 32 {
                    return Err(Error::invalid_key("an Ed25519 public key is 32 bytes"));
                }
                ParsedPublicKey::new(&lc_sig::ED25519, x).map_err(rejected)
            }
            _ => Err(Error::invalid_key(format!(
                "{} key material cannot be used with {alg}",
                self.key_type().name()
            ))),
        }
    }

    pub(crate) fn key_type(&self) -> KeyType {
        match self {
            PublicParts::Rsa { .. } => KeyType::Rsa,
            PublicParts::Ec { .. } => KeyType::Ec,
            PublicParts::Ed25519 { .. } => KeyType::Okp,
        }
    }
}

pub(super) fn uncompressed_point(curve: Curve, x: &[u8], y: &[u8]) -> Result<Vec<u8>, Error> {
    let len = curve.coordinate_len();
    if x.len() != len || y.len() != len {
        return Err(Error::invalid_key(format!(
            "{} coordinates are {len} bytes each",
            curve.name()
        )));
    }
    let mut point = Vec::with_capacity(1 + 2 * len);
    point.push(0x04);
    point.extend_from_slice(x);
    point.extend_from_slice(y);
    Ok(point)
}

pub(super) fn split_point(curve: Curve, point: &[u8]) -> Result<PublicParts, Error> {
    let len = curve.coordinate_len();
    match point.split_first() {
        Some((0x04, rest)) if rest.len() == 2 * len => Ok(PublicParts::Ec {
            curve,
            x: rest[..len].to_vec(),
            y: rest[len..].to_vec(),
        }),
        _ => Err(Error::UnsupportedKey {
            reason: "only uncompressed EC points are supported".to_owned(),
        }),
    }
}

/// Private JWK members of a key.
pub(crate) enum PrivateParts {
    Oct {
        k: Secret,
    },
    Rsa {
        d: Secret,
        p: Secret,
        q: Secret,
        dp: Secret,
        dq: Secret,
        qi: Secret,
    },
    Ec {
        d: Secret,
    },
    Ed25519 {
        d: Secret,
    },
}
