//! `dbstats`: per-column-family sizes and key counts of an index database (to see where the
//! disk goes). Opens the database as the server would, so stop the server first.
//!
//! Usage: `dbstats DB_DIRECTORY COIN NET [--compact]` (`--compact` first compacts every
//! family fully, as the post-sync compaction does).

use anyhow::{Context, Result};
use electrumx_core::{CoinParams, Index};
use std::path::Path;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (args, compact) = match args.split_last() {
        Some((last, rest)) if last == "--compact" => (rest, true),
        _ => (args.as_slice(), false),
    };
    let [dir, coin, net] = args else {
        anyhow::bail!("usage: dbstats DB_DIRECTORY COIN NET [--compact]");
    };
    let coin = CoinParams::from_names(coin, net)?;
    let index = Index::open(Path::new(dir), &coin).context("opening")?;
    if compact {
        index.compact();
    }
    let stats = index.db_stats_detailed();
    let opt = |v: Option<u64>| v.map_or_else(|| "?".to_string(), |v| v.to_string());
    println!("| column family | SST bytes | keys (estimate) | data blocks | index | filters |");
    println!("|---|---|---|---|---|---|");
    for cf in &stats.column_families {
        println!(
            "| {} | {} | {} | {} | {} | {} |",
            cf.name,
            cf.sst_bytes,
            cf.keys,
            opt(cf.data_block_bytes),
            opt(cf.index_block_bytes),
            opt(cf.filter_block_bytes)
        );
    }
    println!("| all SST files | {} | | | | |", stats.sst_bytes());
    println!(
        "files on disk (SST, WAL, manifest): {} bytes",
        stats.disk_bytes
    );
    Ok(())
}
