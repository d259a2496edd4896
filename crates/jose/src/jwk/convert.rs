//! Keys to and from JWK, both directions in one place (as panva/jose's
//! `key/export` and `key/import`): `key/` knows nothing of JWK, and the
//! methods keep their names on the key types.

use super::{thumbprint, Jwk};
use crate::alg::{Algorithm, KeyType};
use crate::key::{PrivateParts, SigningKey, VerifyingKey};
use crate::Error;

impl Jwk {
    /// A verifying key for the JWK's own algorithm (see [`Jwk::algorithm`]).
    pub fn to_verifying_key(&self) -> Result<VerifyingKey, Error> {
        self.to_verifying_key_for(self.algorithm()?)
    }

    /// A verifying key for `alg`, which must agree with the JWK's `alg`,
    /// `kty` and `crv`.
    pub fn to_verifying_key_for(&self, alg: Algorithm) -> Result<VerifyingKey, Error> {
        self.check_fit(alg, "verify")?;
        let key = if alg.is_symmetric() {
            VerifyingKey::hmac(alg, self.required_secret("k", &self.k)?)?
        } else {
            VerifyingKey::from_public_parts(alg, self.public_parts(alg)?)?
        };
        Ok(match &self.kid {
            Some(kid) => key.with_kid(kid.clone()),
            None => key,
        })
    }

    /// A signing key for the JWK's own algorithm (see [`Jwk::algorithm`]).
    pub fn to_signing_key(&self) -> Result<SigningKey, Error> {
        self.to_signing_key_for(self.algorithm()?)
    }

    /// A signing key for `alg`, which must agree with the JWK.
    pub fn to_signing_key_for(&self, alg: Algorithm) -> Result<SigningKey, Error> {
        self.check_fit(alg, "sign")?;
        let key = match alg.key_type() {
            KeyType::Oct => SigningKey::hmac(alg, self.required_secret("k", &self.k)?)?,
            KeyType::Rsa => {
                if self.extra.contains_key("oth") {
                    return Err(Error::UnsupportedKey {
                        reason: "multi-prime RSA keys (\"oth\") are not supported".to_owned(),
                    });
                }
                let components = aws_lc_rs::rsa::KeyPairComponents {
                    public_key: aws_lc_rs::rsa::PublicKeyComponents {
                        n: self.required("n", &self.n)?,
                        e: self.required("e", &self.e)?,
                    },
                    d: self.required_secret("d", &self.d)?,
                    p: self.required_secret("p", &self.p)?,
                    q: self.required_secret("q", &self.q)?,
                    dP: self.required_secret("dp", &self.dp)?,
                    dQ: self.required_secret("dq", &self.dq)?,
                    qInv: self.required_secret("qi", &self.qi)?,
                };
                SigningKey::from_rsa_components(alg, &components)?
            }
            KeyType::Ec => SigningKey::from_ec_parts(
                alg,
                self.required_secret("d", &self.d)?,
                self.required("x", &self.x)?,
                self.required("y", &self.y)?,
            )?,
            KeyType::Okp => SigningKey::from_ed25519_parts(
                alg,
                self.required_secret("d", &self.d)?,
                self.required("x", &self.x)?,
            )?,
        };
        Ok(match &self.kid {
            Some(kid) => key.with_kid(kid.clone()),
            None => key,
        })
    }
}

impl SigningKey {
    /// The private key as a JWK (with `alg`, and `kid` when set).
    pub fn to_jwk(&self) -> Result<Jwk, Error> {
        self.to_jwk_inner(false)
    }

    fn to_jwk_inner(&self, for_thumbprint: bool) -> Result<Jwk, Error> {
        let private = self.private_parts()?;
        let public = match &private {
            PrivateParts::Oct { .. } => None,
            _ => Some(self.public_parts()?),
        };
        let kid = if for_thumbprint {
            None
        } else {
            self.kid().map(str::to_owned)
        };
        Ok(Jwk::from_parts(
            self.algorithm(),
            kid,
            public,
            Some(private),
        ))
    }

    /// Set the key id to the RFC 7638 thumbprint of the public key (of the
    /// secret, for HMAC keys). For HMAC, only with a random secret: the
    /// thumbprint is a fast hash of the secret, and goes in every token's
    /// header, so a secret someone chose could be guessed from it offline.
    pub fn with_thumbprint_kid(self) -> Result<SigningKey, Error> {
        let kid = thumbprint(&self.to_jwk_inner(true)?)?;
        Ok(self.with_kid(kid))
    }
}

impl VerifyingKey {
    /// The public key as a JWK (with `alg`, `use: sig`, and `kid` when set).
    /// HMAC keys have no public form and give an error.
    pub fn to_public_jwk(&self) -> Result<Jwk, Error> {
        let parts = self
            .public_parts()
            .cloned()
            .ok_or_else(|| Error::UnsupportedKey {
                reason: "an HMAC key has no public form".to_owned(),
            })?;
        Ok(Jwk::from_parts(
            self.algorithm(),
            self.kid().map(str::to_owned),
            Some(parts),
            None,
        ))
    }

    /// The RFC 7638 thumbprint (SHA-256, base64url) of the key.
    pub fn thumbprint(&self) -> Result<String, Error> {
        let jwk = match (self.public_parts(), self.hmac_secret()) {
            (Some(parts), _) => Jwk::from_parts(self.algorithm(), None, Some(parts.clone()), None),
            (None, Some(secret)) => Jwk::from_parts(
                self.algorithm(),
                None,
                None,
                Some(PrivateParts::Oct { k: secret.clone() }),
            ),
            (None, None) => {
                return Err(Error::UnsupportedKey {
                    reason: "a key with neither public parts nor a secret".to_owned(),
                })
            }
        };
        thumbprint(&jwk)
    }
}
