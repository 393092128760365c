//! `chaingen`: generates a seeded chain into a regtest node datadir, cached by its
//! parameters, for benchmarks. Prints the datadir.
//!
//! Usage: `chaingen --blocks N [--txs-per-block T] [--wallets W] [--seed S] [--cache DIR]`

use anyhow::{Context, Result, bail};
use electrumx_testkit::chaingen::{ChainGen, GenParams};
use electrumx_testkit::node::RegtestNode;
use std::path::PathBuf;

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

#[tokio::main]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let num = |n: &str, d: u64| -> Result<u64> {
        arg(&args, n)
            .map(|v| v.parse::<u64>().with_context(|| format!("{n} {v}")))
            .unwrap_or(Ok(d))
    };
    let blocks = num("--blocks", 1000)? as u32;
    let params = GenParams {
        seed: num("--seed", 1)?,
        txs_per_block: num("--txs-per-block", 1000)? as u32,
        wallets: num("--wallets", 200_000)? as u32,
        ..GenParams::default()
    };
    let cache = arg(&args, "--cache").map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(std::env::var("HOME").unwrap_or_else(|_| "/tmp".into()))
            .join(".cache/electrumx-rs/chains")
    });
    let dir = cache.join(params.cache_key(blocks));
    if dir.join("complete").exists() {
        println!("{}", dir.display());
        return Ok(());
    }
    if dir.exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    let mut node = RegtestNode::start_in(dir.join("node"), None, &[]).await?;
    let mut chain = ChainGen::new(params);
    let started = std::time::Instant::now();
    let mut done = 0;
    let mut txs = 0u64;
    while done < blocks {
        let n = 100.min(blocks - done);
        chain.mine(&node, n).await?;
        done += n;
        txs = chain.blocks.iter().map(|b| b.txs.len() as u64).sum();
        eprintln!(
            "chaingen: {done}/{blocks} blocks, {txs} txs, {:.0}s",
            started.elapsed().as_secs_f64()
        );
        // Keep memory flat: the benchmark needs the node's chain, not our copy of old blocks.
        if chain.blocks.len() > 400 {
            // Blocks are kept for the coin pool only through `pool`; old raw data can go.
            for b in chain.blocks.iter_mut().rev().skip(200) {
                for tx in &mut b.txs {
                    tx.raw = Vec::new();
                }
            }
        }
    }
    if node.height().await? != blocks {
        bail!("node height mismatch");
    }
    node.stop().await?;
    std::fs::write(dir.join("complete"), format!("{txs} txs\n"))?;
    println!("{}", dir.display());
    Ok(())
}
