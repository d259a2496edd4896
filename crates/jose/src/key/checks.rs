//! Weak-key checks, applied wherever a key enters the crate.

use crate::alg::Algorithm;
use crate::Error;

/// RFC 7518 §3.2 and the algorithm-confusion guard for HMAC secrets.
pub(super) fn hmac_secret(alg: Algorithm, secret: &[u8], min_len: usize) -> Result<(), Error> {
    if secret.len() < min_len {
        return Err(Error::WeakKey {
            reason: format!(
                "{alg} needs a secret of at least {min_len} bytes, got {}",
                secret.len()
            ),
        });
    }
    // A public key (PEM, DER, or a JWK) passed where a shared secret
    // belongs is the classic way to turn an RS256 verifier into an HS256
    // one. Looked for in every form a key is handed around in: PEM after
    // other text (OpenSSL's "Bag Attributes") or a byte-order mark, DER,
    // and DER in base64 without the PEM lines (as consoles show keys).
    let trimmed = trim_ascii_start(secret);
    let trimmed = trimmed
        .strip_prefix("\u{feff}".as_bytes())
        .unwrap_or(trimmed);
    if contains(trimmed, b"-----BEGIN ") || trimmed.starts_with(b"ssh-") {
        return Err(Error::InvalidKey {
            reason: "this looks like a PEM or SSH key, not an HMAC secret".to_owned(),
        });
    }
    if is_key_der(trimmed) || base64_text(trimmed).is_some_and(|der| is_key_der(&der)) {
        return Err(Error::InvalidKey {
            reason: "this looks like a key in DER (or DER in base64), not an HMAC secret"
                .to_owned(),
        });
    }
    if trimmed.starts_with(b"{") && contains(trimmed, b"\"kty\"") {
        return Err(Error::InvalidKey {
            reason: "this looks like a JWK, not an HMAC secret; load it as a JWK".to_owned(),
        });
    }
    Ok(())
}

/// Whether `bytes` are a key's DER: a `SubjectPublicKeyInfo`, a PKCS#1
/// RSA public key, a PKCS#8 private key, or an X.509 certificate (a JWK's
/// `x5c` member, base64 DER, is the issuer's public key too). Random bytes
/// are not: each needs a nested structure whose every length adds up.
fn is_key_der(bytes: &[u8]) -> bool {
    use der::Decode;
    bytes.first() == Some(&0x30)
        && (spki::SubjectPublicKeyInfoRef::from_der(bytes).is_ok()
            || pkcs1::RsaPublicKey::from_der(bytes).is_ok()
            || pkcs8::PrivateKeyInfo::from_der(bytes).is_ok()
            || is_certificate_der(bytes))
}

/// An X.509 certificate's outline (RFC 5280 §4.1): a SEQUENCE of the
/// signed part (a SEQUENCE), the signature's algorithm (a SEQUENCE) and
/// the signature (a BIT STRING), and nothing else.
fn is_certificate_der(bytes: &[u8]) -> bool {
    use der::{Decode, Reader, Tag, Tagged};
    let Ok(outer) = der::asn1::AnyRef::from_der(bytes) else {
        return false;
    };
    let Ok(mut inner) = der::SliceReader::new(outer.value()) else {
        return false;
    };
    let mut tags = Vec::with_capacity(3);
    while !inner.is_finished() && tags.len() < 4 {
        match der::asn1::AnyRef::decode(&mut inner) {
            Ok(part) => tags.push(part.tag()),
            Err(_) => return false,
        }
    }
    outer.tag() == Tag::Sequence && tags == [Tag::Sequence, Tag::Sequence, Tag::BitString]
}

/// The bytes `text` stands for if it is standard base64 (padded or not,
/// white space between lines allowed).
fn base64_text(text: &[u8]) -> Option<zeroize::Zeroizing<Vec<u8>>> {
    let compact: zeroize::Zeroizing<Vec<u8>> = zeroize::Zeroizing::new(
        text.iter()
            .copied()
            .filter(|b| !b.is_ascii_whitespace())
            .collect(),
    );
    let alphabet = |b: &u8| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'=');
    if compact.len() < 16 || !compact.iter().all(alphabet) {
        return None;
    }
    let unpadded = compact
        .strip_suffix(b"==")
        .or_else(|| compact.strip_suffix(b"="));
    base64_simd::STANDARD_NO_PAD
        .decode_to_vec(unpadded.unwrap_or(&compact))
        .ok()
        .map(zeroize::Zeroizing::new)
}

fn trim_ascii_start(bytes: &[u8]) -> &[u8] {
    let start = bytes
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(bytes.len());
    &bytes[start..]
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Minimum RSA modulus size: 2048 bits (RFC 7518 §3.3, NIST SP 800-131A).
pub(super) const MIN_RSA_BITS: usize = 2048;

/// Largest RSA modulus the crypto library verifies with (aws-lc's
/// `RSA_*_2048_8192` parameters): a larger key would load and then fail
/// every token with an error about the signature, not the key.
pub(super) const MAX_RSA_BITS: usize = 8192;

/// Largest RSA public exponent the crypto library verifies with.
const MAX_RSA_EXPONENT_BITS: usize = 33;

/// RSA public key sanity: size, exponent, and the ROCA fingerprint.
pub(super) fn rsa_public(n: &[u8], e: &[u8]) -> Result<(), Error> {
    let n = strip_zeros(n);
    let e = strip_zeros(e);
    let bits = bit_len(n);
    if bits < MIN_RSA_BITS {
        return Err(Error::WeakKey {
            reason: format!("RSA modulus is {bits} bits; at least {MIN_RSA_BITS} are required"),
        });
    }
    if bits > MAX_RSA_BITS {
        return Err(Error::UnsupportedKey {
            reason: format!("RSA modulus is {bits} bits; at most {MAX_RSA_BITS} are supported"),
        });
    }
    if n.last().is_some_and(|b| b & 1 == 0) {
        return Err(Error::invalid_key("RSA modulus is even"));
    }
    if bit_len(e) > MAX_RSA_EXPONENT_BITS {
        return Err(Error::UnsupportedKey {
            reason: format!(
                "RSA public exponent is over {MAX_RSA_EXPONENT_BITS} bits, which is not supported"
            ),
        });
    }
    // e must be odd and at least 3; aws-lc also caps it at 33 bits.
    let e_small = e.len() <= 1 && e.first().copied().unwrap_or(0) < 3;
    if e_small || e.last().is_some_and(|b| b & 1 == 0) {
        return Err(Error::WeakKey {
            reason: "RSA public exponent must be odd and at least 3".to_owned(),
        });
    }
    if has_roca_fingerprint(n) {
        return Err(Error::WeakKey {
            reason: "RSA modulus has the ROCA fingerprint (CVE-2017-15361): \
                     its private key can be recovered"
                .to_owned(),
        });
    }
    Ok(())
}

fn strip_zeros(bytes: &[u8]) -> &[u8] {
    let start = bytes.iter().position(|&b| b != 0).unwrap_or(bytes.len());
    &bytes[start..]
}

fn bit_len(be: &[u8]) -> usize {
    match be.first() {
        Some(&top) => (be.len() - 1) * 8 + (8 - top.leading_zeros() as usize),
        None => 0,
    }
}

/// The ROCA test of Nemec et al. (CCS 2017): moduli made by the vulnerable
/// Infineon library are, modulo each of these small primes, in the subgroup
/// generated by 65537. A random modulus passes all 38 tests with negligible
/// probability.
fn has_roca_fingerprint(n: &[u8]) -> bool {
    const PRIMES: [u32; 38] = [
        3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 47, 53, 59, 61, 67, 71, 73, 79, 83, 89,
        97, 101, 103, 107, 109, 113, 127, 131, 137, 139, 149, 151, 157, 163, 167,
    ];
    PRIMES.iter().all(|&p| {
        let residue = n
            .iter()
            .fold(0u32, |acc, &b| (acc * 256 + u32::from(b)) % p);
        in_subgroup_of_65537(residue, p)
    })
}

fn in_subgroup_of_65537(residue: u32, p: u32) -> bool {
    let g = 65537 % p;
    let mut x = 1u32;
    loop {
        if x == residue {
            return true;
        }
        x = x * g % p;
        if x == 1 {
            return false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_and_pem_secrets_are_refused() {
        assert!(matches!(
            hmac_secret(Algorithm::HS256, &[1u8; 31], 32),
            Err(Error::WeakKey { .. })
        ));
        assert!(hmac_secret(Algorithm::HS256, &[1u8; 32], 32).is_ok());
        let pem = b"-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE\n-----END PUBLIC KEY-----\n";
        assert!(matches!(
            hmac_secret(Algorithm::HS256, pem, 32),
            Err(Error::InvalidKey { .. })
        ));
        let jwk = br#"{"kty":"EC","crv":"P-256","x":"abc","y":"def"}"#;
        assert!(matches!(
            hmac_secret(Algorithm::HS256, jwk, 32),
            Err(Error::InvalidKey { .. })
        ));
    }

    /// A public key in the other forms it is handed around in: PEM after
    /// a byte-order mark or OpenSSL's bag attributes, DER, and DER in
    /// base64 without the PEM lines (padded or not, wrapped or not).
    #[test]
    fn public_keys_in_every_form_are_refused_as_secrets() {
        let key = crate::SigningKey::generate(Algorithm::ES256).unwrap();
        let pem = key.verifying_key().unwrap().to_public_pem().unwrap();
        let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        let der = base64_simd::STANDARD.decode_to_vec(&body).unwrap();
        let rsa = crate::SigningKey::generate(Algorithm::RS256).unwrap();
        let rsa_pem = rsa.verifying_key().unwrap().to_public_pem().unwrap();
        let rsa_body: String = rsa_pem
            .lines()
            .filter(|l| !l.starts_with("-----"))
            .collect();
        let wrapped: String = rsa_pem
            .lines()
            .filter(|l| !l.starts_with("-----"))
            .map(|l| format!("{l}\n"))
            .collect();
        let private = rsa.to_pkcs8_pem().unwrap();
        let private_body: String = private
            .lines()
            .filter(|l| !l.starts_with("-----"))
            .collect();
        for (what, secret) in [
            ("a byte-order mark", format!("\u{feff}{pem}").into_bytes()),
            (
                "bag attributes",
                format!("Bag Attributes\n    localKeyID: 01\n{pem}").into_bytes(),
            ),
            ("DER", der.clone()),
            ("base64 DER", body.clone().into_bytes()),
            (
                "unpadded base64 DER",
                body.trim_end_matches('=').as_bytes().to_vec(),
            ),
            ("RSA, base64 DER", rsa_body.into_bytes()),
            ("RSA, wrapped base64 DER", wrapped.into_bytes()),
            ("a private key, base64 DER", private_body.into_bytes()),
        ] {
            assert!(
                matches!(
                    hmac_secret(Algorithm::HS256, &secret, 32),
                    Err(Error::InvalidKey { .. })
                ),
                "{what}"
            );
        }
        // Secrets that merely look alike still pass: a random secret, in
        // base64 too, and one that starts as DER does.
        let random = crate::b64::decode("q83vEjRWeJq83vEjRWeJq83vEjRWeJq83vEjRWeJq80").unwrap();
        let base64 = base64_simd::STANDARD.encode_to_string(&random);
        let mut sequence = random.clone();
        sequence[0] = 0x30;
        for secret in [random, base64.into_bytes(), sequence] {
            assert!(hmac_secret(Algorithm::HS256, &secret, 32).is_ok());
        }
    }

    #[test]
    fn subgroup_masks_match_the_published_roca_prints() {
        // The first published masks: bit r is set when r is in <65537> mod p.
        for (p, mask) in [(3u32, 6u64), (5, 30), (7, 126), (11, 1026), (13, 5658)] {
            let computed = (0..p)
                .filter(|&r| in_subgroup_of_65537(r, p))
                .fold(0u64, |m, r| m | 1 << r);
            assert_eq!(computed, mask, "p = {p}");
        }
    }

    #[test]
    fn small_exponents_and_moduli_are_refused() {
        let mut n = vec![0xffu8; 256];
        n[255] = 0xf1;
        assert!(matches!(rsa_public(&n, &[1]), Err(Error::WeakKey { .. })));
        assert!(matches!(
            rsa_public(&n, &[0, 0, 2]),
            Err(Error::WeakKey { .. })
        ));
        assert!(matches!(
            rsa_public(&n[1..], &[1, 0, 1]),
            Err(Error::WeakKey { .. })
        ));
        assert!(rsa_public(&n, &[1, 0, 1]).is_ok());
    }

    #[test]
    fn keys_the_crypto_library_cannot_verify_with_are_refused() {
        let mut n = vec![0xffu8; MAX_RSA_BITS / 8];
        n[MAX_RSA_BITS / 8 - 1] = 0xf1;
        assert!(rsa_public(&n, &[1, 0, 1]).is_ok());
        n.insert(0, 1);
        assert!(matches!(
            rsa_public(&n, &[1, 0, 1]),
            Err(Error::UnsupportedKey { .. })
        ));
        let n = &n[1..];
        assert!(rsa_public(n, &[1, 0, 0, 0, 1]).is_ok());
        assert!(matches!(
            rsa_public(n, &[3, 0, 0, 0, 1]),
            Err(Error::UnsupportedKey { .. })
        ));
    }
}
