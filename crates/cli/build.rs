//! Lay out the functions a start of `tessera serve` runs side by side in
//! release builds (`symbol-order.txt`, from `benches/load/symbol-order.sh`),
//! so that an idle server maps few pages of its code: the kernel maps a
//! binary's code in 64 KiB windows around each function first run, and
//! left where the compiler puts them, the ~2.4 MB a start runs are spread
//! over ~9 MiB of windows (docs/benchmarks.md, issue 16).
//!
//! Only where the linker takes the option (LLD, the default of Rust 1.90
//! and later from rustup on x86_64 Linux; GNU ld does not), which a
//! trivial program linked with it first shows, and not when a linker of
//! one's own is configured; `TESSERA_NO_SYMBOL_ORDER=1` turns it off. The
//! order changes nothing but where code sits.

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

/// Whether this is a release build for x86_64 Linux whose linker takes
/// `--symbol-ordering-file`, with nothing in the way: a trivial program is
/// linked with it first (a Rust 1.90 or later from rustup links with LLD;
/// one built by a distribution may keep GNU ld, which refuses it).
fn lld_links_release() -> bool {
    let var = |name: &str| std::env::var(name).unwrap_or_default();
    if var("TESSERA_NO_SYMBOL_ORDER") == "1"
        || var("PROFILE") != "release"
        || var("TARGET") != "x86_64-unknown-linux-gnu"
        || var("HOST") != var("TARGET")
        || std::env::var_os("RUSTC_LINKER").is_some()
        || var("CARGO_ENCODED_RUSTFLAGS").contains("link")
    {
        return false;
    }
    let Some(out) = std::env::var_os("OUT_DIR").map(std::path::PathBuf::from) else {
        return false;
    };
    let (source, order) = (out.join("probe.rs"), out.join("probe-order.txt"));
    if std::fs::write(&source, "fn main() {}\n").is_err() || std::fs::write(&order, "").is_err() {
        return false;
    }
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    Command::new(rustc)
        .arg("--edition=2021")
        .arg("-o")
        .arg(out.join("probe"))
        .arg(&source)
        .arg("-C")
        .arg(format!(
            "link-arg=-Wl,--symbol-ordering-file={}",
            order.display()
        ))
        .output()
        .is_ok_and(|o| o.status.success())
}
