//! # electrumx-core
//!
//! An embeddable Electrum indexer: it turns a Bitcoin node's chain into a compact,
//! crash-safe RocksDB index that answers what Electrum wallets ask (script histories,
//! balances, UTXOs, headers, transaction positions, spenders of outpoints).
//!
//! The pieces, each a module with one job:
//! - [`coin`]: coin and network parameters (`COIN`, `NET`).
//! - [`daemon`]: the block source: [`daemon::RpcDaemon`] (JSON-RPC to bitcoind),
//!   [`daemon::BlockFileDaemon`] (block files on disk) or [`daemon::HybridDaemon`] (a node
//!   whose own block files feed the initial sync), behind the [`daemon::Daemon`] trait.
//! - [`parse`]: a zero-copy block parser.
//! - [`ChainIndex`] (reads) over the index, implemented by [`Index`].
//! - [`mempool`]: mirror of the node's mempool (fees, touched scripts, fee histogram).
//! - [`controller`]: builder-style lifecycle: open, sync, follow the tip, publish events, stop;
//!   consistent snapshots of the index while it runs ([`Controller::snapshot`]).
//! - [`stats`]: counters and latency histograms for monitoring.
//!
//! The prefetcher (it fetches and parses blocks ahead of indexing), the block processor
//! and the RocksDB store are private: what an embedder needs of them goes through
//! [`Controller`] ([`Controller::db_stats`], [`ControllerBuilder::prefetch_options`]) and
//! [`Index`] ([`Index::open`] for tools that read a database without syncing it).
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use electrumx_core::{CoinParams, Controller, ChainIndex, ScriptHash};
//! use electrumx_core::daemon::{DaemonUrl, RpcDaemon, RpcDaemonConfig};
//! use std::sync::Arc;
//!
//! let coin = CoinParams::from_names("Bitcoin", "regtest")?;
//! let urls = DaemonUrl::parse_list("http://user:pass@127.0.0.1:18443", coin.rpc_port)?;
//! let cancel = tokio_util::sync::CancellationToken::new();
//! let daemon = Arc::new(RpcDaemon::new(RpcDaemonConfig::new(urls), cancel)?);
//! let controller = Controller::builder().coin(coin).db_dir("/tmp/index").daemon(daemon).build()?;
//! controller.start()?;
//! controller.wait_caught_up().await?;
//! let index = controller.index();
//! let sh = ScriptHash::of_script(&[0x51]);
//! println!("balance: {}", index.balance(&sh)?);
//! controller.stop().await?;
//! # Ok(()) }
//! ```

#![warn(missing_docs)]
#![forbid(unsafe_code)]

pub mod coin;
pub mod controller;
pub mod daemon;
pub mod error;
pub mod hash;
mod index;
pub mod mempool;
pub mod parse;
mod prefetch;
mod snapshot;
pub mod stats;
mod store;

pub use coin::{Coin, CoinParams, Network};
pub use controller::{Controller, ControllerBuilder, IndexEvent, SyncProgress, SyncStatus};
pub use error::{
    BuildError, DaemonError, DbError, IndexError, LifecycleError, ParseError, SettingError,
    SnapshotError,
};
pub use hash::{BlockHash, Hash32, HashX, ScriptHash, Txid};
pub use index::{ChainIndex, HistoryItem, Index, Utxo};
pub use mempool::{Mempool, MempoolEntry, MempoolUpdate};
pub use prefetch::PrefetchOptions;
pub use snapshot::SnapshotInfo;
pub use store::{CfStats, DbStats, StoreOptions};
