//! What the JOSE benches share: the key every library is given, the
//! closures they are measured through, jwt-simple's options and the floor
//! (the bare aws-lc-rs operation).

use std::collections::HashSet;

use aws_lc_rs::signature::{self as sig, KeyPair as _};
use aws_lc_rs::{hmac, rand};
use jsonwebtoken as jt;
use jwt_simple::prelude as simple;
use tessera_jose::{Algorithm, SigningKey, VerifyingKey};

pub type SignFn = Box<dyn Fn() -> String>;
pub type VerifyFn = Box<dyn Fn(&str) -> bool>;
pub type RawSignFn = Box<dyn Fn(&[u8]) -> Vec<u8>>;
pub type RawVerifyFn = Box<dyn Fn(&[u8], &[u8]) -> bool>;

/// One key of `alg` (HMAC from a fixed secret, the others generated),
/// `kid` "bench", and its PEM forms for the peers.
pub struct BenchKey {
    pub key: SigningKey,
    pub public: VerifyingKey,
    pub private_pem: Option<String>,
    pub public_pem: Option<String>,
}

/// The fixed HMAC secret every library is given.
pub const SECRET: [u8; 32] = [0x5a; 32];

pub fn bench_key(alg: Algorithm) -> BenchKey {
    let key = if alg == Algorithm::HS256 {
        SigningKey::hmac(alg, &SECRET).unwrap()
    } else {
        SigningKey::generate(alg).unwrap()
    }
    .with_kid("bench");
    BenchKey {
        public: key.verifying_key().unwrap(),
        private_pem: key.to_pkcs8_pem().ok().map(|p| p.to_string()),
        public_pem: key.to_public_pem().ok(),
        key,
    }
}

impl BenchKey {
    /// The key as jsonwebtoken takes it: its algorithm and both halves.
    pub fn jsonwebtoken(&self) -> (jt::Algorithm, jt::EncodingKey, jt::DecodingKey) {
        let pems = || {
            (
                self.private_pem.as_deref().unwrap().as_bytes(),
                self.public_pem.as_deref().unwrap().as_bytes(),
            )
        };
        match self.key.algorithm() {
            Algorithm::HS256 => (
                jt::Algorithm::HS256,
                jt::EncodingKey::from_secret(&SECRET),
                jt::DecodingKey::from_secret(&SECRET),
            ),
            alg @ (Algorithm::RS256 | Algorithm::PS256) => {
                let (private, public) = pems();
                (
                    if alg == Algorithm::RS256 {
                        jt::Algorithm::RS256
                    } else {
                        jt::Algorithm::PS256
                    },
                    jt::EncodingKey::from_rsa_pem(private).unwrap(),
                    jt::DecodingKey::from_rsa_pem(public).unwrap(),
                )
            }
            alg @ (Algorithm::ES256 | Algorithm::ES384) => {
                let (private, public) = pems();
                (
                    if alg == Algorithm::ES256 {
                        jt::Algorithm::ES256
                    } else {
                        jt::Algorithm::ES384
                    },
                    jt::EncodingKey::from_ec_pem(private).unwrap(),
                    jt::DecodingKey::from_ec_pem(public).unwrap(),
                )
            }
            _ => {
                let (private, public) = pems();
                (
                    jt::Algorithm::EdDSA,
                    jt::EncodingKey::from_ed_pem(private).unwrap(),
                    jt::DecodingKey::from_ed_pem(public).unwrap(),
                )
            }
        }
    }
}

/// jwt-simple checking the issuer and the audience, as every library does.
pub fn simple_options(issuer: &str, audience: &str) -> simple::VerificationOptions {
    simple::VerificationOptions {
        allowed_issuers: Some(HashSet::from([issuer.to_owned()])),
        allowed_audiences: Some(HashSet::from([audience.to_owned()])),
        ..Default::default()
    }
}

/// The bare aws-lc-rs operation, with keys parsed once, as the floor.
pub fn raw(key: &SigningKey) -> (RawSignFn, RawVerifyFn) {
    let alg = key.algorithm();
    let der = key.to_pkcs8_der().ok().map(|d| d.expose().to_vec());
    match alg {
        Algorithm::HS256 => {
            let key = hmac::Key::new(hmac::HMAC_SHA256, &SECRET);
            let k2 = key.clone();
            (
                Box::new(move |m| hmac::sign(&key, m).as_ref().to_vec()),
                Box::new(move |m, s| hmac::verify(&k2, m, s).is_ok()),
            )
        }
        Algorithm::RS256 | Algorithm::PS256 => {
            let pair = sig::RsaKeyPair::from_pkcs8(der.as_deref().unwrap()).unwrap();
            let (enc, params): (&'static dyn sig::RsaEncoding, &'static sig::RsaParameters) =
                if alg == Algorithm::RS256 {
                    (&sig::RSA_PKCS1_SHA256, &sig::RSA_PKCS1_2048_8192_SHA256)
                } else {
                    (&sig::RSA_PSS_SHA256, &sig::RSA_PSS_2048_8192_SHA256)
                };
            let public = sig::ParsedPublicKey::new(params, pair.public_key().as_ref()).unwrap();
            let rng = rand::SystemRandom::new();
            (
                Box::new(move |m| {
                    let mut out = vec![0; pair.public_modulus_len()];
                    pair.sign(enc, &rng, m, &mut out).unwrap();
                    out
                }),
                Box::new(move |m, s| public.verify_sig(m, s).is_ok()),
            )
        }
        Algorithm::ES256 | Algorithm::ES384 => {
            let (signing, verifying) = if alg == Algorithm::ES256 {
                (
                    &sig::ECDSA_P256_SHA256_FIXED_SIGNING,
                    &sig::ECDSA_P256_SHA256_FIXED,
                )
            } else {
                (
                    &sig::ECDSA_P384_SHA384_FIXED_SIGNING,
                    &sig::ECDSA_P384_SHA384_FIXED,
                )
            };
            let pair = sig::EcdsaKeyPair::from_pkcs8(signing, der.as_deref().unwrap()).unwrap();
            let public = sig::ParsedPublicKey::new(verifying, pair.public_key().as_ref()).unwrap();
            let rng = rand::SystemRandom::new();
            (
                Box::new(move |m| pair.sign(&rng, m).unwrap().as_ref().to_vec()),
                Box::new(move |m, s| public.verify_sig(m, s).is_ok()),
            )
        }
        _ => {
            let pair =
                sig::Ed25519KeyPair::from_pkcs8_maybe_unchecked(der.as_deref().unwrap()).unwrap();
            let public =
                sig::ParsedPublicKey::new(&sig::ED25519, pair.public_key().as_ref()).unwrap();
            (
                Box::new(move |m| pair.sign(m).as_ref().to_vec()),
                Box::new(move |m, s| public.verify_sig(m, s).is_ok()),
            )
        }
    }
}
