//! `dbstats`: per-column-family sizes and key counts of an index database (to see where the
//! disk goes). Opens the database as the server would, so stop the server first.
//!
//! Usage: `dbstats DB_DIRECTORY COIN NET [--compact]` (`--compact` first compacts every
//! family fully, as the post-sync compaction does).

use anyhow::{Context, Result};
use electrumx_core::CoinParams;
use electrumx_core::store::{Store, StoreOptions, cf};
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
    let coin = CoinParams::from_names(coin, net).map_err(anyhow::Error::msg)?;
    let store = Store::open(Path::new(dir), &coin, &StoreOptions::default()).context("opening")?;
    if compact {
        for name in cf::ALL {
            store.compact_cf(name);
        }
    }
    let db = store.db();
    println!("| column family | SST bytes | keys (estimate) | data blocks | index | filters |");
    println!("|---|---|---|---|---|---|");
    let mut total = 0u64;
    for name in cf::ALL {
        let h = store.cf(name);
        let size = db
            .property_int_value_cf(h, "rocksdb.total-sst-files-size")?
            .unwrap_or(0);
        let keys = db
            .property_int_value_cf(h, "rocksdb.estimate-num-keys")?
            .unwrap_or(0);
        total += size;
        let props = db
            .property_value_cf(h, "rocksdb.aggregated-table-properties")?
            .unwrap_or_default();
        let data = table_property(&props, "data block size");
        let index = table_property(&props, "index block size");
        let filter = table_property(&props, "filter block size");
        println!("| {name} | {size} | {keys} | {data} | {index} | {filter} |");
    }
    println!("| all SST files | {total} | | | | |");
    println!(
        "files on disk (SST, WAL, manifest): {} bytes",
        store.disk_size()
    );
    Ok(())
}

/// One field of RocksDB's aggregated table properties text ("name=value; ..."); field names
/// may carry a parenthesised detail ("index block size (user-key? 1, ...)").
fn table_property(props: &str, name: &str) -> String {
    props
        .split(';')
        .filter_map(|field| field.split_once('='))
        .find(|(k, _)| k.trim().starts_with(name))
        .map(|(_, v)| v.trim().to_string())
        .unwrap_or_else(|| "?".into())
}
