//! Secret bytes.

use std::fmt;

use zeroize::Zeroizing;

/// Secret bytes: zeroized on drop, redacted in `Debug`, compared in
/// constant time (for equal lengths).
#[derive(Clone)]
pub struct Secret(Zeroizing<Vec<u8>>);

impl PartialEq for Secret {
    /// Whether the bytes are the same, in a time that does not depend on
    /// where they differ: a caller comparing a presented secret with `==`
    /// must not tell an attacker how much of it was right.
    fn eq(&self, other: &Secret) -> bool {
        aws_lc_rs::constant_time::verify_slices_are_equal(&self.0, &other.0).is_ok()
    }
}

impl Eq for Secret {}

impl Secret {
    /// Wrap secret bytes.
    pub fn new(bytes: Vec<u8>) -> Secret {
        Secret(Zeroizing::new(bytes))
    }

    /// The bytes. Handle with care.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret([REDACTED; {} bytes])", self.0.len())
    }
}

#[cfg(test)]
mod tests {
    use super::Secret;

    #[test]
    fn secrets_compare_by_their_bytes() {
        let a = Secret::new(b"correct horse".to_vec());
        assert_eq!(a, Secret::new(b"correct horse".to_vec()));
        assert_ne!(a, Secret::new(b"correct horsf".to_vec()));
        assert_ne!(a, Secret::new(b"correct hors".to_vec()));
        assert_ne!(a, Secret::new(Vec::new()));
        assert_eq!(Secret::new(Vec::new()), Secret::new(Vec::new()));
    }
}
