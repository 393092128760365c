//! What the library's integration tests share: mainnet blocks 0..438 from the shared data
//! (`../shared/data`, or `ELECTRUMX_SHARED_DIR/data`), served by a `BlockFileDaemon`, so
//! that no node is needed.

use electrumx_core::CoinParams;
use std::path::{Path, PathBuf};

/// The last block of the shared run.
pub const TIP: u32 = 438;

/// The directory of the shared mainnet blocks.
pub fn blocks_dir() -> PathBuf {
    let shared = std::env::var_os("ELECTRUMX_SHARED_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared"));
    shared.join("data/mainnet-blocks/run-0000000-0000438")
}

/// Bitcoin mainnet.
pub fn coin() -> CoinParams {
    CoinParams::from_names("Bitcoin", "mainnet").unwrap()
}
