//! `dbstats`: per-column-family sizes and key counts of an index database (to see where the
//! disk goes). Opens the database as the server would, so stop the server first.
//!
//! Usage: `dbstats DB_DIRECTORY COIN NET`

use anyhow::{Context, Result};
use electrumx_core::CoinParams;
use electrumx_core::store::{Store, StoreOptions, cf};
use std::path::Path;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [dir, coin, net] = args.as_slice() else {
        anyhow::bail!("usage: dbstats DB_DIRECTORY COIN NET");
    };
    let coin = CoinParams::from_names(coin, net).map_err(anyhow::Error::msg)?;
    let store = Store::open(Path::new(dir), &coin, &StoreOptions::default()).context("opening")?;
    let db = store.db();
    println!("| column family | SST bytes | keys (estimate) |");
    println!("|---|---|---|");
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
        println!("| {name} | {size} | {keys} |");
    }
    println!("| all SST files | {total} | |");
    println!(
        "files on disk (SST, WAL, manifest): {} bytes",
        store.disk_size()
    );
    Ok(())
}
