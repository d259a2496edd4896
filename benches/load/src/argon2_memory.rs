//! Argon2id (the server's parameters) under the server's allocator,
//! mimalloc: a fresh, zeroed allocation per hash (what argon2's own
//! `verify_password` does) against memory a thread keeps between hashes
//! (what `tessera_server::password` does). The two alternate in rounds on
//! one thread, so a drift in this VM's speed hits both alike.
//!
//! ```sh
//! cd benches/load && cargo run --release --bin argon2-memory [-- ROUNDS]
//! ```
#![allow(clippy::unwrap_used)]

use std::time::Instant;

use argon2::{Algorithm, Argon2, Block, Params, Version};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const PER_ROUND: usize = 8;

fn main() {
    let rounds: usize = std::env::args().nth(1).map_or(10, |s| s.parse().unwrap());
    let params = Params::new(19456, 2, 1, Some(32)).unwrap();
    let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone());
    let mut kept = vec![Block::default(); params.block_count()];
    let mut out = [0u8; 32];
    let (mut fresh_ns, mut kept_ns) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        let t = Instant::now();
        for _ in 0..PER_ROUND {
            argon
                .hash_password_into(b"correct horse battery", b"saltsaltsaltsalt", &mut out)
                .unwrap();
        }
        fresh_ns.push(t.elapsed().as_secs_f64() * 1e3 / PER_ROUND as f64);
        let t = Instant::now();
        for _ in 0..PER_ROUND {
            argon
                .hash_password_into_with_memory(
                    b"correct horse battery",
                    b"saltsaltsaltsalt",
                    &mut out,
                    &mut kept,
                )
                .unwrap();
        }
        kept_ns.push(t.elapsed().as_secs_f64() * 1e3 / PER_ROUND as f64);
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let ratios: Vec<f64> = fresh_ns.iter().zip(&kept_ns).map(|(f, k)| k / f).collect();
    let (f, k) = (median(&mut fresh_ns), median(&mut kept_ns));
    let mut ratios = ratios;
    println!("| memory | ms per hash (median of {rounds} rounds of {PER_ROUND}) |");
    println!("|---|---:|");
    println!("| fresh allocation per hash (mimalloc) | {f:.2} |");
    println!("| kept by the thread | {k:.2} |");
    println!(
        "\nkept ÷ fresh, median of the rounds' ratios: {:.3}",
        median(&mut ratios)
    );
}
