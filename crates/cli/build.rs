//! Lay out the functions a start of `tessera serve` runs side by side in
//! release builds (`symbol-order.txt`, from `benches/load/symbol-order.sh`),
//! so that an idle server maps few pages of its code: the kernel maps a
//! binary's code in 64 KiB windows around each function first run, and
//! left where the compiler puts them, the ~2.4 MB a start runs are spread
//! over ~9 MiB of windows (docs/benchmarks.md, issue 16).
//!
//! Only where the linker is LLD, the default of Rust 1.90 and later on
//! x86_64 Linux (GNU ld knows no `--symbol-ordering-file`), and not when a
//! linker of one's own is configured; `TESSERA_NO_SYMBOL_ORDER=1` turns it
//! off. The order changes nothing but where code sits.

use std::path::Path;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=symbol-order.txt");
    println!("cargo:rerun-if-env-changed=TESSERA_NO_SYMBOL_ORDER");
    if lld_links_release() {
        let order = Path::new(env!("CARGO_MANIFEST_DIR")).join("symbol-order.txt");
        println!(
            "cargo:rustc-link-arg-bin=tessera=-Wl,--symbol-ordering-file={}",
            order.display()
        );
        // Names of functions that changed since the list was made are
        // skipped without a word.
        println!("cargo:rustc-link-arg-bin=tessera=-Wl,--no-warn-symbol-ordering");
    }
}

/// Whether this is a release build for x86_64 Linux linked by Rust's own
/// LLD, with nothing in the way.
fn lld_links_release() -> bool {
    let var = |name: &str| std::env::var(name).unwrap_or_default();
    if var("TESSERA_NO_SYMBOL_ORDER") == "1"
        || var("PROFILE") != "release"
        || var("TARGET") != "x86_64-unknown-linux-gnu"
        || std::env::var_os("RUSTC_LINKER").is_some()
        || var("CARGO_ENCODED_RUSTFLAGS").contains("link")
    {
        return false;
    }
    // rustc 1.90 made rust-lld the default linker for this target.
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let Ok(out) = Command::new(rustc).arg("-V").output() else {
        return false;
    };
    let version = String::from_utf8_lossy(&out.stdout);
    let minor = version
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.split('.').nth(1))
        .and_then(|m| m.parse::<u32>().ok());
    minor.is_some_and(|m| m >= 90)
}
