//! Settings of the server binary: ElectrumX's environment variable names, each also a
//! command-line flag (a flag wins over the environment). Invalid values fail at start
//! with a message naming the variable.

use clap::Parser;
use electrumx_core::CoinParams;
use electrumx_core::daemon::DaemonUrl;
use std::path::PathBuf;
use std::time::Duration;

/// Command line and environment of `electrumx-server`.
#[derive(Parser, Debug, Clone)]
#[command(
    name = "electrumx-server",
    version,
    about = "Electrum server: indexes a Bitcoin node's chain into RocksDB"
)]
pub struct Settings {
    /// Node JSON-RPC URL(s), comma-separated for failover: `http://user:pass@host:port/`.
    #[arg(long, env = "DAEMON_URL", required_unless_present = "blocks_dir")]
    pub daemon_url: Option<String>,

    /// Cookie file for node auth when DAEMON_URL has no credentials (e.g. ~/.bitcoin/.cookie).
    #[arg(long, env = "DAEMON_COOKIE_FILE")]
    pub daemon_cookie_file: Option<PathBuf>,

    /// Index blocks from this directory of block files instead of a node.
    #[arg(long, env = "BLOCKS_DIR")]
    pub blocks_dir: Option<PathBuf>,

    /// Database directory.
    #[arg(long, env = "DB_DIRECTORY")]
    pub db_directory: PathBuf,

    /// Coin: Bitcoin or BitcoinSV.
    #[arg(long, env = "COIN", default_value = "Bitcoin")]
    pub coin: String,

    /// Network: mainnet, testnet, testnet4, signet or regtest.
    #[arg(long, env = "NET", default_value = "mainnet")]
    pub net: String,

    /// Memory for sync caches, in MB.
    #[arg(long, env = "CACHE_MB", default_value_t = 1200, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub cache_mb: u64,

    /// Deepest reorg the index can undo (default: the coin's; 200 on Bitcoin mainnet).
    #[arg(long, env = "REORG_LIMIT", value_parser = clap::value_parser!(u32).range(1..))]
    pub reorg_limit: Option<u32>,

    /// Milliseconds between polls for new blocks once caught up.
    #[arg(long, env = "DAEMON_POLL_INTERVAL_BLOCKS", default_value_t = 5000, value_parser = clap::value_parser!(u64).range(10..))]
    pub daemon_poll_interval_blocks: u64,

    /// Seconds one daemon request may take.
    #[arg(long, env = "DAEMON_TIMEOUT", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
    pub daemon_timeout: u64,

    /// Megabytes of fetched blocks held ahead of indexing.
    #[arg(long, env = "PREFETCH_MB", default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=65536))]
    pub prefetch_mb: u64,

    /// Log filter (tracing syntax: `info`, `debug`, `electrumx_core=debug`).
    #[arg(long, env = "LOG_LEVEL", default_value = "info")]
    pub log_level: String,

    /// Seconds between sync progress lines.
    #[arg(long, env = "PROGRESS_INTERVAL", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    pub progress_interval: u64,
}

/// Settings checked and resolved.
pub struct Resolved {
    /// Coin parameters.
    pub coin: CoinParams,
    /// Daemon URLs (empty when indexing block files).
    pub daemon_urls: Vec<DaemonUrl>,
    /// Poll interval.
    pub poll_interval: Duration,
}

impl Settings {
    /// Checks values that clap cannot, naming the variable at fault.
    pub fn resolve(&self) -> Result<Resolved, String> {
        let coin = CoinParams::from_names(&self.coin, &self.net)?;
        let daemon_urls = match &self.daemon_url {
            Some(u) => DaemonUrl::parse_list(u, coin.rpc_port)?,
            None => Vec::new(),
        };
        if let Some(f) = &self.daemon_cookie_file
            && !f.exists()
        {
            tracing::warn!(
                "DAEMON_COOKIE_FILE {} does not exist yet; waiting for the node to write it",
                f.display()
            );
        }
        Ok(Resolved {
            coin,
            daemon_urls,
            poll_interval: Duration::from_millis(self.daemon_poll_interval_blocks),
        })
    }
}
