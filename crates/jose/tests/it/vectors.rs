//! Finding `../shared/vectors`.
//!
//! `TESSERA_VECTORS` names the folder (relative paths are taken from the
//! workspace root); without it, `../shared/vectors` beside the checkout is
//! used if present. When the folder is missing the vector tests print a
//! notice and pass, unless `TESSERA_REQUIRE_VECTORS=1` (as in CI), when
//! they fail.

use std::path::{Path, PathBuf};

use serde_json::Value;

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The vectors folder, or `None` (after printing why) when the tests
/// should skip.
pub fn dir() -> Option<PathBuf> {
    let required = std::env::var("TESSERA_REQUIRE_VECTORS").is_ok_and(|v| v == "1");
    let candidate = match std::env::var_os("TESSERA_VECTORS") {
        Some(path) => {
            let path = PathBuf::from(path);
            if path.is_absolute() {
                path
            } else {
                workspace_root().join(path)
            }
        }
        None => workspace_root().join("../shared/vectors"),
    };
    if candidate.join("README.md").is_file() {
        return Some(candidate);
    }
    assert!(
        !required,
        "TESSERA_REQUIRE_VECTORS=1 but no test vectors at {}",
        candidate.display()
    );
    eprintln!(
        "skipped: test vectors not found at {} (set TESSERA_VECTORS)",
        candidate.display()
    );
    None
}

/// Parse a JSON file of the vectors folder.
pub fn load(dir: &Path, rel: &str) -> Value {
    let path = dir.join(rel);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Counts of one vector file, printed as the issue asks.
#[derive(Default, Debug)]
pub struct Tally {
    pub valid: usize,
    pub invalid: usize,
    pub acceptable: usize,
    pub deviations: usize,
    pub not_applicable: usize,
}

impl Tally {
    pub fn total(&self) -> usize {
        self.valid + self.invalid + self.acceptable + self.deviations + self.not_applicable
    }

    /// Check that every vector of `doc` was run, then print the counts.
    pub fn finish(&self, file: &str, doc: &Value) {
        let declared = doc["numberOfTests"].as_u64().expect("numberOfTests");
        assert_eq!(
            self.total() as u64,
            declared,
            "{file}: not every vector ran"
        );
        self.report(file);
    }

    pub fn report(&self, file: &str) {
        println!(
            "{file}: ran {} vectors: {} valid accepted, {} invalid rejected, {} acceptable, \
             {} documented deviations (asserted), {} outside the JWS profile (asserted rejected)",
            self.total(),
            self.valid,
            self.invalid,
            self.acceptable,
            self.deviations,
            self.not_applicable
        );
    }
}
