//! A custom block source: index a directory of block files (Bitcoin Core's `blk*.dat`, or
//! one `HHHHHHH-<hash>.bin` file per block) without a node, then answer a query.
//!
//! ```text
//! cargo run --release -p electrumx-examples --example index_block_files -- \
//!     ../shared/data/mainnet-blocks/run-0000000-0000438 /tmp/files-db \
//!     cc0d7111befe9f24f1824c797e837c5cff2f8773901ccb9aca0372a2a6c48d34
//! ```

use anyhow::{Context, Result};
use electrumx_core::daemon::BlockFileDaemon;
use electrumx_core::{ChainIndex, CoinParams, Controller, ScriptHash};
use std::path::Path;
use std::sync::Arc;

#[tokio::main]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [dir, db, scripthash] = args.as_slice() else {
        anyhow::bail!("usage: index_block_files BLOCKS_DIR DB_DIR SCRIPTHASH");
    };
    let coin = CoinParams::from_names("Bitcoin", "mainnet").map_err(anyhow::Error::msg)?;
    let daemon = Arc::new(BlockFileDaemon::open(Path::new(dir), coin.genesis_hash)?);
    let controller = Controller::builder()
        .coin(coin)
        .db_dir(db)
        .daemon(daemon)
        .build()?;
    controller.start()?;
    let height = controller.wait_caught_up().await?;
    let index = controller.index();
    let sh = ScriptHash::from_hex(scripthash).context("a 64-hex-digit script hash")?;
    println!("indexed to height {height}");
    println!("balance: {} sat", index.balance(&sh)?);
    for u in index.utxos(&sh, 100)? {
        println!(
            "utxo {}:{} at height {}: {} sat",
            u.txid, u.vout, u.height, u.value
        );
    }
    controller.stop().await?;
    Ok(())
}
