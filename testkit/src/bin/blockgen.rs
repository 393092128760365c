//! `blockgen`: writes a mainnet-shaped chain as Bitcoin Core block files (`blk*.dat`), with
//! `summary.json` and the sampled scripts' truth (`truth.json`) beside them; see
//! `electrumx_testkit::blockgen`. The output directory is named after the parameters under
//! `--cache` (default `~/.cache/electrumx-rs/block-chains`) and reused when complete.
//! Prints the directory.
//!
//! Usage: `blockgen --blocks N --txs T [--big-blocks B] [--reused R] [--seed S]
//! [--xor HEX16] [--sample-one-in K] [--cache DIR]`

use anyhow::{Context, Result, bail};
use electrumx_testkit::blockgen::{BlockGen, ShapeParams};
use std::path::PathBuf;

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let num = |n: &str, d: u64| -> Result<u64> {
        arg(&args, n)
            .map(|v| {
                v.replace('_', "")
                    .parse::<u64>()
                    .with_context(|| format!("{n} {v}"))
            })
            .unwrap_or(Ok(d))
    };
    let defaults = ShapeParams::default();
    let xor = match arg(&args, "--xor") {
        None => None,
        Some(h) => {
            let b = const_hex::decode(&h).context("--xor: hex")?;
            let Ok(key) = <[u8; 8]>::try_from(b.as_slice()) else {
                bail!("--xor: 8 bytes of hex");
            };
            Some(key)
        }
    };
    let params = ShapeParams {
        seed: num("--seed", defaults.seed)?,
        blocks: num("--blocks", defaults.blocks as u64)? as u32,
        txs: num("--txs", defaults.txs)?,
        big_blocks: num("--big-blocks", defaults.big_blocks as u64)? as u32,
        reused_scripts: num("--reused", defaults.reused_scripts)?,
        sample_one_in: num("--sample-one-in", defaults.sample_one_in)?.max(1),
        xor,
        ..defaults
    };
    let cache = arg(&args, "--cache").map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(std::env::var("HOME").unwrap_or_else(|_| "/tmp".into()))
            .join(".cache/electrumx-rs/block-chains")
    });
    let key = format!(
        "v2-s{}-b{}-t{}-g{}-r{}-k{}{}",
        params.seed,
        params.blocks,
        params.txs,
        params.big_blocks,
        params.reused_scripts,
        params.sample_one_in,
        params
            .xor
            .map(|k| format!("-x{}", const_hex::encode(k)))
            .unwrap_or_default()
    );
    let dir = cache.join(key);
    if dir.join("summary.json").exists() {
        println!("{}", dir.display());
        return Ok(());
    }
    if dir.exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    let summary = BlockGen::new(params).write(&dir, |s| {
        eprintln!(
            "blockgen: height {} txs {} bytes {} {:.0}s ({:.0} tx/s)",
            s.blocks,
            s.txs,
            s.block_bytes,
            s.seconds,
            s.txs as f64 / s.seconds.max(1e-9)
        )
    })?;
    eprintln!(
        "blockgen: done: {} blocks, {} txs, {} inputs, {} outputs, {} unspent, {} bytes in {} files, {:.1}s",
        summary.blocks,
        summary.txs,
        summary.inputs,
        summary.outputs,
        summary.unspent,
        summary.block_bytes,
        summary.files,
        summary.seconds
    );
    println!("{}", dir.display());
    Ok(())
}
