//! Print the benchmark table of docs/benchmarks.md from criterion's output.
//!
//! `cargo run --release --bin report` after `cargo bench` (both in
//! `benches/`). Reads `target/criterion/*/*/new/{benchmark,estimates}.json`.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use serde_json::Value;

const CONTENDERS: [&str; 4] = ["tessera", "jsonwebtoken", "jwt-simple", "aws-lc-rs raw"];
const ORDER: [&str; 6] = ["HS256", "RS256", "PS256", "ES256", "ES384", "EdDSA"];

fn read(path: &Path) -> Option<Value> {
    serde_json::from_str(&fs::read_to_string(path).ok()?).ok()
}

fn human(ns: f64) -> String {
    if ns >= 1_000_000.0 {
        format!("{:.2} ms", ns / 1_000_000.0)
    } else if ns >= 1_000.0 {
        format!("{:.2} µs", ns / 1_000.0)
    } else {
        format!("{ns:.0} ns")
    }
}

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/criterion");
    // (group, function) -> mean ns
    let mut means: BTreeMap<(String, String), f64> = BTreeMap::new();
    let Ok(groups) = fs::read_dir(&root) else {
        eprintln!(
            "no criterion results under {}; run `cargo bench` first",
            root.display()
        );
        std::process::exit(2);
    };
    for group in groups.flatten() {
        for function in fs::read_dir(group.path()).into_iter().flatten().flatten() {
            let new = function.path().join("new");
            let (Some(meta), Some(est)) = (
                read(&new.join("benchmark.json")),
                read(&new.join("estimates.json")),
            ) else {
                continue;
            };
            let (Some(g), Some(f), Some(mean)) = (
                meta["group_id"].as_str(),
                meta["function_id"].as_str(),
                est["mean"]["point_estimate"].as_f64(),
            ) else {
                continue;
            };
            means.insert((g.to_owned(), f.to_owned()), mean);
        }
    }
    println!("| operation | tessera | jsonwebtoken | jwt-simple | aws-lc-rs raw | tessera ÷ raw | jsonwebtoken ÷ tessera | jwt-simple ÷ tessera |");
    println!("|---|---|---|---|---|---|---|---|");
    for op in ["verify", "sign"] {
        for alg in ORDER {
            let group = format!("{op}-{alg}");
            let get = |name: &str| means.get(&(group.clone(), name.to_owned())).copied();
            let Some(tessera) = get("tessera") else {
                continue;
            };
            let cells: Vec<String> = CONTENDERS
                .iter()
                .map(|c| get(c).map(human).unwrap_or_else(|| "-".into()))
                .collect();
            let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
                (Some(a), Some(b)) => format!("{:.2}×", a / b),
                _ => "-".into(),
            };
            println!(
                "| {op} {alg} | {} | {} | {} | {} | {} | {} | {} |",
                cells[0],
                cells[1],
                cells[2],
                cells[3],
                ratio(Some(tessera), get("aws-lc-rs raw")),
                ratio(get("jsonwebtoken"), Some(tessera)),
                ratio(get("jwt-simple"), Some(tessera)),
            );
        }
    }
}
