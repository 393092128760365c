//! Checkpoint-proof benchmark at mainnet height: the work of `blockchain.block.header(s)`
//! with `cp_height` 980,000, on the cache the server uses (`HeaderTree`), against hashing
//! every block hash up to the checkpoint (what each request did before). Synthetic block
//! hashes; the proof's work does not depend on their values.
//!
//! Usage: `cpbench [HEIGHT] [PROOFS]` (defaults 980000, 20000). Prints the first proof's
//! time (building the levels), then p50/p99 per proof on 1, 2, 4 and 16 threads (the
//! server computes proofs on its blocking pool, at most twice the cores at once: 4 here;
//! 16 threads on 2 cores mostly measure the scheduler's time slices).

use bitcoin::hashes::{Hash, sha256d};
use electrumx_core::Hash32;
use electrumx_server::cache::header_tree::HeaderTree;
use electrumx_server::cache::merkle::branch_and_root;
use rand::{Rng, SeedableRng};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)]
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let height: u64 = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(980_000);
    let proofs: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(20_000);
    let chain: Arc<Vec<Hash32>> = Arc::new(
        (0..=height)
            .map(|h| Hash32(sha256d::Hash::hash(&h.to_le_bytes()).to_byte_array()))
            .collect(),
    );
    let read = {
        let chain = chain.clone();
        move |start: u64, count: u64| -> Vec<Hash32> {
            let s = (start as usize).min(chain.len());
            let e = (s + count as usize).min(chain.len());
            chain[s..e].to_vec()
        }
    };
    let len = height + 1;
    let started = Instant::now();
    let full = branch_and_root(&chain, (height / 3) as usize).expect("proof");
    let full_time = started.elapsed();
    let tree = Arc::new(HeaderTree::default());
    let started = Instant::now();
    let first = tree.branch_and_root(len, height / 3, &read).expect("proof");
    let warm_up = started.elapsed();
    assert_eq!(first, full, "the cache's proof equals the full computation");
    println!(
        "height {height}: hashing every block hash per proof {full_time:.2?}; first proof with the cache (builds its levels) {warm_up:.2?}; cache {} hashes ({} KB)",
        tree.size(),
        tree.size() * 32 / 1024
    );
    println!("| threads | proofs | p50 µs | p99 µs | proofs/s |");
    println!("|---|---|---|---|---|");
    for threads in [1usize, 2, 4, 16] {
        let started = Instant::now();
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let (tree, read) = (tree.clone(), read.clone());
                std::thread::spawn(move || {
                    let mut rng = rand::rngs::StdRng::seed_from_u64(t as u64);
                    let mut times = Vec::with_capacity(proofs / threads);
                    for _ in 0..proofs / threads {
                        let i = rng.random_range(0..len);
                        let t0 = Instant::now();
                        let p = tree.branch_and_root(len, i, &read);
                        times.push(t0.elapsed());
                        assert!(p.is_some());
                    }
                    times
                })
            })
            .collect();
        let mut times: Vec<Duration> = handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect();
        let wall = started.elapsed();
        times.sort();
        println!(
            "| {threads} | {} | {:.1} | {:.1} | {:.0} |",
            times.len(),
            percentile(&times, 0.5).as_secs_f64() * 1e6,
            percentile(&times, 0.99).as_secs_f64() * 1e6,
            times.len() as f64 / wall.as_secs_f64()
        );
    }
}
