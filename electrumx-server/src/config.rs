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

    /// Services to offer, ElectrumX syntax: `tcp://host:port,…` (empty: index only).
    #[arg(long, env = "SERVICES", default_value = "")]
    pub services: String,

    /// TLS certificate chain (PEM) for ssl:// and wss:// services.
    #[arg(long, env = "SSL_CERTFILE")]
    pub ssl_certfile: Option<PathBuf>,

    /// TLS private key (PEM: PKCS#8, PKCS#1 RSA or SEC1 EC) for ssl:// and wss:// services.
    #[arg(long, env = "SSL_KEYFILE")]
    pub ssl_keyfile: Option<PathBuf>,

    /// Services to advertise in `server.features` (default: none).
    #[arg(long, env = "REPORT_SERVICES", default_value = "")]
    pub report_services: String,

    /// File whose text is the `server.banner` ($SERVER_VERSION etc. substituted).
    #[arg(long, env = "BANNER_FILE")]
    pub banner_file: Option<PathBuf>,

    /// Address shown by `server.donation_address`.
    #[arg(long, env = "DONATION_ADDRESS", default_value = "")]
    pub donation_address: String,

    // IRC advertising
    /// Advertise REPORT_SERVICES on IRC as ElectrumX 1.x did: any non-empty value turns it on.
    #[arg(long, env = "IRC", default_value = "")]
    pub irc: String,

    /// IRC nick after the coin's prefix (default: a hash of the advertised host).
    #[arg(long, env = "IRC_NICK")]
    pub irc_nick: Option<String>,

    /// IRC server to connect to (default: the coin's, irc.freenode.net).
    #[arg(long, env = "IRC_SERVER")]
    pub irc_server: Option<String>,

    /// Port of the IRC server.
    #[arg(long, env = "IRC_PORT", default_value_t = 6667, value_parser = clap::value_parser!(u16).range(1..))]
    pub irc_port: u16,

    /// IRC channel to join (default: the coin's, `#electrum` for Bitcoin).
    #[arg(long, env = "IRC_CHANNEL")]
    pub irc_channel: Option<String>,

    /// Connect to the IRC server over TLS (any non-empty value), verified against the
    /// system's CA certificates (`SSL_CERT_FILE` overrides where they are read from).
    #[arg(long, env = "IRC_TLS", default_value = "")]
    pub irc_tls: String,

    /// Longest incoming message in bytes.
    #[arg(long, env = "MAX_RECV", default_value_t = 1_000_000, value_parser = clap::value_parser!(u64).range(1000..=100_000_000))]
    pub max_recv: u64,

    /// Longest response in bytes (values under 350000 are raised to it, as in ElectrumX).
    #[arg(long, env = "MAX_SEND", default_value_t = 8_100_000, value_parser = clap::value_parser!(u64).range(1..=1_000_000_000))]
    pub max_send: u64,

    /// Most concurrent client sessions.
    #[arg(long, env = "MAX_SESSIONS", default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub max_sessions: u64,

    /// Messages queued for one session before it counts as not reading and is dropped.
    #[arg(long, env = "SEND_QUEUE", default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub send_queue: u64,

    /// Most requests in one JSON-RPC batch.
    #[arg(long, env = "MAX_BATCH", default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub max_batch: u64,

    /// Seconds without a message after which a session is closed.
    #[arg(long, env = "SESSION_TIMEOUT", default_value_t = 600, value_parser = clap::value_parser!(u64).range(1..))]
    pub session_timeout: u64,

    /// Seconds one request may take before it fails with "server busy".
    #[arg(long, env = "REQUEST_TIMEOUT", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
    pub request_timeout: u64,

    /// Session cost at which requests start to be delayed (0 with COST_HARD_LIMIT 0: no limits).
    #[arg(long, env = "COST_SOFT_LIMIT", default_value_t = 1000, value_parser = clap::value_parser!(u64).range(0..=1_000_000_000))]
    pub cost_soft_limit: u64,

    /// Session cost at which the session is closed with error -101.
    #[arg(long, env = "COST_HARD_LIMIT", default_value_t = 10000, value_parser = clap::value_parser!(u64).range(0..=1_000_000_000))]
    pub cost_hard_limit: u64,

    /// Milliseconds a request waits at the hard limit (proportionally less above the soft one).
    #[arg(long, env = "REQUEST_SLEEP", default_value_t = 2500, value_parser = clap::value_parser!(u64).range(0..=600_000))]
    pub request_sleep: u64,

    /// Bytes sent or received that cost 1.0.
    #[arg(long, env = "BANDWIDTH_UNIT_COST", default_value_t = 5000, value_parser = clap::value_parser!(u64).range(1..))]
    pub bandwidth_unit_cost: u64,

    /// Accepted for ElectrumX compatibility; each session answers one request at a time.
    #[arg(long, env = "INITIAL_CONCURRENT", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    pub initial_concurrent: u64,

    /// Prefix length grouping IPv4 sessions for costs.
    #[arg(long, env = "SESSION_GROUP_BY_SUBNET_IPV4", default_value_t = 24, value_parser = clap::value_parser!(u8).range(0..=32))]
    pub session_group_by_subnet_ipv4: u8,

    /// Prefix length grouping IPv6 sessions for costs.
    #[arg(long, env = "SESSION_GROUP_BY_SUBNET_IPV6", default_value_t = 48, value_parser = clap::value_parser!(u8).range(0..=128))]
    pub session_group_by_subnet_ipv6: u8,

    /// Regular expression: clients whose `server.version` name matches are refused.
    #[arg(long, env = "DROP_CLIENT")]
    pub drop_client: Option<String>,

    /// Milliseconds between mempool polls.
    #[arg(long, env = "DAEMON_POLL_INTERVAL_MEMPOOL", default_value_t = 5000, value_parser = clap::value_parser!(u64).range(10..))]
    pub daemon_poll_interval_mempool: u64,

    /// Seconds between sync progress lines.
    #[arg(long, env = "PROGRESS_INTERVAL", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    pub progress_interval: u64,
}

/// Settings checked and resolved.
pub struct Resolved {
    /// The cost model.
    pub cost: crate::cost::CostConfig,
    /// `DROP_CLIENT`, compiled.
    pub drop_client: Option<regex::Regex>,
    /// TLS files, when a service needs them.
    pub tls: Option<std::sync::Arc<crate::transport::TlsFiles>>,
    /// Services to run.
    pub services: Vec<crate::services::Service>,
    /// Services to advertise.
    pub report_services: Vec<crate::services::Service>,
    /// Session limits.
    pub limits: crate::state::Limits,
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
        let services = crate::services::parse_services(
            &self.services,
            "SERVICES",
            coin.default_tcp_port,
            coin.default_ssl_port,
        )?;
        let report_services = crate::services::parse_services(
            &self.report_services,
            "REPORT_SERVICES",
            coin.default_tcp_port,
            coin.default_ssl_port,
        )?;
        if let Some(f) = &self.banner_file
            && !f.is_file()
        {
            return Err(format!(
                "BANNER_FILE: {} is not a readable file",
                f.display()
            ));
        }
        let limits = crate::state::Limits {
            max_recv: self.max_recv as usize,
            max_send: (self.max_send as usize).max(350_000),
            max_batch: self.max_batch as usize,
            max_sessions: self.max_sessions as usize,
            session_timeout: Duration::from_secs(self.session_timeout),
            request_timeout: Duration::from_secs(self.request_timeout),
            send_queue: self.send_queue as usize,
        };
        let needs_tls = services.iter().any(|s| {
            matches!(
                s.protocol,
                crate::services::Protocol::Ssl | crate::services::Protocol::Wss
            )
        });
        let tls = if needs_tls {
            let cert = self
                .ssl_certfile
                .clone()
                .ok_or("SSL_CERTFILE: required by ssl:// and wss:// services")?;
            let key = self
                .ssl_keyfile
                .clone()
                .ok_or("SSL_KEYFILE: required by ssl:// and wss:// services")?;
            Some(std::sync::Arc::new(crate::transport::TlsFiles::load(
                cert, key,
            )?))
        } else {
            None
        };
        if self.cost_hard_limit < self.cost_soft_limit {
            return Err("COST_HARD_LIMIT: must not be below COST_SOFT_LIMIT".into());
        }
        let mut hard = self.cost_hard_limit as f64;
        if hard > 0.0 && hard == self.cost_soft_limit as f64 {
            hard += 1.0;
        }
        let cost = crate::cost::CostConfig {
            soft: self.cost_soft_limit as f64,
            hard,
            request_sleep: Duration::from_millis(self.request_sleep),
            bandwidth_unit: self.bandwidth_unit_cost as f64,
            ipv4_prefix: self.session_group_by_subnet_ipv4,
            ipv6_prefix: self.session_group_by_subnet_ipv6,
        };
        let drop_client = match &self.drop_client {
            Some(re) => Some(
                regex::Regex::new(re)
                    .map_err(|e| format!("DROP_CLIENT: invalid regular expression: {e}"))?,
            ),
            None => None,
        };
        Ok(Resolved {
            cost,
            drop_client,
            tls,
            coin,
            daemon_urls,
            poll_interval: Duration::from_millis(self.daemon_poll_interval_blocks),
            services,
            report_services,
            limits,
        })
    }
}
