//! Strict base64url without padding (RFC 7515 §2, Appendix C).
//!
//! Decoding refuses padding, whitespace, characters outside the URL-safe
//! alphabet and non-canonical encodings (non-zero trailing bits), so every
//! byte string has exactly one accepted encoding. Encodings that a lenient
//! decoder would map to the same bytes are a classic way to make two
//! different tokens carry one signature.
//!
//! The codec is `base64-simd` (SIMD where the CPU has it), whose decoder
//! refuses all of the above; the unit tests below pin that down.

use base64_simd::{Out, URL_SAFE_NO_PAD};

/// Encode bytes as unpadded base64url.
pub fn encode(bytes: impl AsRef<[u8]>) -> String {
    URL_SAFE_NO_PAD.encode_to_string(bytes)
}

/// Append the unpadded base64url form of `bytes` to `out`.
pub fn encode_into(bytes: impl AsRef<[u8]>, out: &mut String) {
    URL_SAFE_NO_PAD.encode_append(bytes, out);
}

/// Decode strict unpadded base64url. `None` if the input is not exactly
/// the canonical encoding of some byte string.
pub fn decode(text: impl AsRef<[u8]>) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD.decode_to_vec(text).ok()
}

/// Decode into a caller-provided buffer, returning the decoded length.
/// `None` if the input is invalid or does not fit.
pub fn decode_to_slice(text: &[u8], out: &mut [u8]) -> Option<usize> {
    let len = decoded_len(text.len())?;
    let out = out.get_mut(..len)?;
    URL_SAFE_NO_PAD
        .decode(text, Out::from_slice(out))
        .ok()
        .map(|decoded| decoded.len())
}

/// Decode into `out`, replacing what it held (its capacity is kept).
/// `None` if the input is invalid; `out` is then left empty.
pub(crate) fn decode_into(text: &[u8], out: &mut Vec<u8>) -> Option<()> {
    out.clear();
    out.resize(decoded_len(text.len())?, 0);
    match decode_to_slice(text, out) {
        Some(len) => {
            out.truncate(len);
            Some(())
        }
        None => {
            out.clear();
            None
        }
    }
}

/// Decode `text` and hand the bytes to `f`: in a stack buffer when they
/// fit (the common case for token parts), on the heap otherwise.
pub(crate) fn with_decoded<const STACK: usize, R>(
    text: &str,
    input: crate::Input,
    f: impl FnOnce(&[u8]) -> Result<R, crate::Error>,
) -> Result<R, crate::Error> {
    let invalid = || crate::Error::Base64 { input };
    if decoded_len(text.len()).ok_or_else(invalid)? <= STACK {
        let mut buf = [0u8; STACK];
        let len = decode_to_slice(text.as_bytes(), &mut buf).ok_or_else(invalid)?;
        f(&buf[..len])
    } else {
        f(&decode(text).ok_or_else(invalid)?)
    }
}

/// Length of the bytes an unpadded encoding of `encoded_len` characters
/// holds, or `None` for a length no canonical encoding has.
pub fn decoded_len(encoded_len: usize) -> Option<usize> {
    match encoded_len % 4 {
        1 => None,
        rem => Some(encoded_len / 4 * 3 + rem.saturating_sub(1)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        for len in 0..70 {
            let bytes: Vec<u8> = (0..len).map(|i| (i * 37 + 11) as u8).collect();
            let text = encode(&bytes);
            assert!(!text.contains('='));
            assert_eq!(decode(&text).unwrap(), bytes);
            assert_eq!(decoded_len(text.len()), Some(len as usize));
            // Into a reused buffer, whatever it held before.
            let mut out = vec![0xff; 100];
            assert_eq!(decode_into(text.as_bytes(), &mut out), Some(()));
            assert_eq!(out, bytes);
        }
        let mut out = b"earlier".to_vec();
        assert_eq!(decode_into(b"Zm9vYh", &mut out), None);
        assert!(out.is_empty(), "a refused input leaves nothing behind");
    }

    #[test]
    fn rejects_everything_but_the_canonical_form() {
        assert_eq!(decode("Zm9v").unwrap(), b"foo");
        for bad in [
            "Zm9vYg==", // padding
            "Zm9vYg=",  // partial padding
            "Zm9v Yg",  // whitespace
            "Zm9v\nYg", // newline
            "Zm9v+g",   // standard alphabet
            "Zm9v/g",   // standard alphabet
            "Zm9vY",    // impossible length
            "Zm9vYh",   // non-zero trailing bits ("Yg" is canonical)
            "AB",       // non-zero trailing bits
            "Zm9v?",
        ] {
            assert_eq!(decode(bad), None, "{bad:?} was accepted");
        }
    }

    #[test]
    fn slice_decoding_checks_room() {
        let mut buf = [0u8; 3];
        assert_eq!(decode_to_slice(b"Zm9v", &mut buf), Some(3));
        assert_eq!(&buf, b"foo");
        assert_eq!(decode_to_slice(b"Zm9vYg", &mut buf), None);
    }
}
