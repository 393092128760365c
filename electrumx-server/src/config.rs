//! Settings of the server binary: ElectrumX's environment variable names, each also a
//! command-line flag and a key of an optional TOML file (`--config`).
//!
//! Precedence: command-line flag > environment variable > config file > built-in default.
//! Invalid values, unknown keys in the file and ElectrumX's obsolete variables fail at start
//! with a message naming the setting.

use clap::{CommandFactory, FromArgMatches, Parser};
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
    /// TOML file of settings: keys are the environment names (`DAEMON_URL`) or their
    /// lower-case forms (`daemon_url`); flags and the environment override it.
    #[arg(long, env = "ELECTRUMX_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Node JSON-RPC URL(s), comma-separated for failover: `http://user:pass@host:port/`.
    #[arg(long, env = "DAEMON_URL")]
    pub daemon_url: Option<String>,

    /// Cookie file for node auth when DAEMON_URL has no credentials (default: `.cookie` in
    /// the network's directory under DAEMON_DATADIR).
    #[arg(long, env = "DAEMON_COOKIE_FILE")]
    pub daemon_cookie_file: Option<PathBuf>,

    /// The node's data directory, where its cookie file is looked for (default: ~/.bitcoin).
    #[arg(long, env = "DAEMON_DATADIR")]
    pub daemon_datadir: Option<PathBuf>,

    /// Without DAEMON_URL: index blocks from this directory of block files instead of a
    /// node. With it: the node's `blocks/` directory, read during the initial sync.
    #[arg(long, env = "BLOCKS_DIR")]
    pub blocks_dir: Option<PathBuf>,

    /// Initial sync from the node's block files: `auto` (when its blocks directory is
    /// readable), `on` (refuse to start otherwise) or `off` (every block over RPC).
    #[arg(long, env = "BLOCK_FILES", default_value = "auto", value_parser = parse_block_files)]
    pub block_files: BlockFiles,

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

    // Peer discovery
    /// Peer discovery: `on` (find, verify and list peers), `self` (list only ourselves,
    /// once verified) or `off`.
    #[arg(long, env = "PEER_DISCOVERY", default_value = "on")]
    pub peer_discovery: String,

    /// Announce ourselves with `server.add_peer` to peers that do not list us.
    #[arg(long, env = "PEER_ANNOUNCE", default_value = "true", action = clap::ArgAction::Set, value_parser = parse_bool)]
    pub peer_announce: bool,

    /// Reach every peer through the SOCKS proxy, not only onion peers.
    #[arg(long, env = "FORCE_PROXY", default_value = "false", action = clap::ArgAction::Set, value_parser = parse_bool)]
    pub force_proxy: bool,

    /// Host of the SOCKS5 proxy (Tor) for onion peers.
    #[arg(long, env = "TOR_PROXY_HOST", default_value = "localhost")]
    pub tor_proxy_host: String,

    /// Port of the SOCKS5 proxy (unset: 9050, 9150 and 1080 are tried).
    #[arg(long, env = "TOR_PROXY_PORT", value_parser = clap::value_parser!(u16).range(1..))]
    pub tor_proxy_port: Option<u16>,

    /// URL of a JSON list of banned peer hosts, `*.domain`s and IPs (`https://`, `http://`
    /// or `file://`; empty: none). Default: the coin's (ElectrumX's list on Bitcoin mainnet).
    #[arg(long, env = "BLACKLIST_URL")]
    pub blacklist_url: Option<String>,

    /// Not an ElectrumX setting: accept private and loopback addresses as peers and in
    /// REPORT_SERVICES (test networks on one machine or a LAN).
    #[arg(long, env = "PEER_ALLOW_PRIVATE", default_value = "false", action = clap::ArgAction::Set, value_parser = parse_bool)]
    pub peer_allow_private: bool,

    /// File whose text is the `server.banner` ($SERVER_VERSION etc. substituted).
    #[arg(long, env = "BANNER_FILE")]
    pub banner_file: Option<PathBuf>,

    /// Address shown by `server.donation_address`.
    #[arg(long, env = "DONATION_ADDRESS", default_value = "")]
    pub donation_address: String,

    // IRC advertising
    /// Advertise REPORT_SERVICES on IRC as ElectrumX 1.x did (a boolean: see ANON_LOGS).
    #[arg(long, env = "IRC", value_parser = parse_bool, default_value = "false", num_args = 0..=1, default_missing_value = "true")]
    pub irc: bool,

    /// IRC nick after the coin's prefix (default: a hash of the advertised host).
    #[arg(long, env = "IRC_NICK")]
    pub irc_nick: Option<String>,

    /// IRC server to connect to (default: the coin's, irc.freenode.net).
    #[arg(long, env = "IRC_SERVER")]
    pub irc_server: Option<String>,

    /// Port of the IRC server (default: 6667, or 6697 with IRC_TLS).
    #[arg(long, env = "IRC_PORT", value_parser = clap::value_parser!(u16).range(1..))]
    pub irc_port: Option<u16>,

    /// IRC channel to join (default: the coin's, `#electrum` for Bitcoin).
    #[arg(long, env = "IRC_CHANNEL")]
    pub irc_channel: Option<String>,

    /// Connect to the IRC server over TLS, verified against the system's CA certificates
    /// (`SSL_CERT_FILE` overrides where they are read from).
    #[arg(long, env = "IRC_TLS", value_parser = parse_bool, default_value = "false", num_args = 0..=1, default_missing_value = "true")]
    pub irc_tls: bool,

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

    /// Seconds a stopping server (SIGINT, SIGTERM, LocalRPC `stop`) reports itself unready on
    /// `GET /health` while still serving its sessions, so that a load balancer drains it
    /// before they close. 0: close at once.
    #[arg(long, env = "SHUTDOWN_GRACE", default_value_t = 5)]
    pub shutdown_grace: u64,

    /// Seconds without an answer from the node after which `GET /health` reports the
    /// server unready.
    #[arg(long, env = "HEALTH_NODE_TIMEOUT", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
    pub health_node_timeout: u64,

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

    /// Requests one session may have in progress at once; lowered as the session's cost
    /// rises above `COST_SOFT_LIMIT` (as in ElectrumX).
    #[arg(long, env = "INITIAL_CONCURRENT", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    pub initial_concurrent: u64,

    /// Most client sessions from one address (an IPv4 address or an IPv6 /64) at once; 0
    /// for no limit. Further connections from it are closed at once.
    #[arg(long, env = "MAX_SESSIONS_PER_IP", default_value_t = crate::state::DEFAULT_MAX_SESSIONS_PER_IP as u64)]
    pub max_sessions_per_ip: u64,

    /// Addresses or subnets (comma-separated, e.g. `127.0.0.0/8,::1,10.0.0.0/8`) that
    /// `MAX_SESSIONS_PER_IP` does not apply to; empty for none.
    #[arg(
        long,
        env = "SESSIONS_PER_IP_EXEMPT",
        default_value = "127.0.0.0/8,::1/128"
    )]
    pub sessions_per_ip_exempt: String,

    /// Load balancers (addresses or subnets, comma-separated, e.g. `10.0.0.5,10.1.0.0/16`)
    /// whose connections to client services may start with a PROXY protocol header (v1 or
    /// v2, HAProxy's `send-proxy` / `send-proxy-v2`) giving the real client's address; a
    /// header from any other address closes the connection. Empty (default): none.
    #[arg(long, env = "TRUSTED_PROXIES", default_value = "")]
    pub trusted_proxies: String,

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

    /// Database engine, for ElectrumX compatibility: only `rocksdb` is supported.
    #[arg(long, env = "DB_ENGINE", default_value = "rocksdb")]
    pub db_engine: String,

    /// Redact client IP addresses in logs (`xx.xx.xx.xx:xx`). Booleans: 1/true/yes/on or
    /// 0/false/no/off (empty: false).
    #[arg(long, env = "ANON_LOGS", value_parser = parse_bool, default_value = "false", num_args = 0..=1, default_missing_value = "true")]
    pub anon_logs: bool,

    /// Seconds between session summary lines in the log (0: never).
    #[arg(long, env = "LOG_SESSIONS", default_value_t = 3600)]
    pub log_sessions: u64,

    /// Seconds between sync progress lines.
    #[arg(long, env = "PROGRESS_INTERVAL", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    pub progress_interval: u64,
}

/// A boolean setting: `1`/`true`/`yes`/`on` or `0`/`false`/`no`/`off`/empty, any case.
pub fn parse_bool(s: &str) -> Result<bool, String> {
    match s.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" | "" => Ok(false),
        other => Err(format!(
            "{other:?} is not a boolean (true/false, yes/no, on/off, 1/0)"
        )),
    }
}

/// `BLOCK_FILES`: whether the initial sync reads the node's block files.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlockFiles {
    /// When the node's blocks directory is readable.
    Auto,
    /// Always; the server refuses to start when the directory is not readable.
    On,
    /// Never: every block over RPC.
    Off,
}

/// Parses `BLOCK_FILES`: `auto`, or a boolean (`on`/`off`, `1`/`0`, …).
pub fn parse_block_files(s: &str) -> Result<BlockFiles, String> {
    if s.trim().eq_ignore_ascii_case("auto") {
        return Ok(BlockFiles::Auto);
    }
    match parse_bool(s) {
        Ok(true) => Ok(BlockFiles::On),
        Ok(false) => Ok(BlockFiles::Off),
        Err(_) => Err(format!("{s:?} is not auto, on or off")),
    }
}

/// ElectrumX's obsolete variables: ElectrumX refuses to start when one is set, and so do we
/// (each has a replacement in `SERVICES` / `REPORT_SERVICES`).
pub const OBSOLETE_ENV: &[&str] = &[
    "MAX_SUBSCRIPTIONS",
    "MAX_SUBS",
    "MAX_SESSION_SUBS",
    "BANDWIDTH_LIMIT",
    "HOST",
    "TCP_PORT",
    "SSL_PORT",
    "RPC_HOST",
    "RPC_PORT",
    "REPORT_HOST",
    "REPORT_TCP_PORT",
    "REPORT_SSL_PORT",
    "REPORT_HOST_TOR",
    "REPORT_TCP_PORT_TOR",
    "REPORT_SSL_PORT_TOR",
];

/// ElectrumX variables that have no meaning here; a warning names them at start.
pub const IGNORED_ENV: &[&str] = &[
    "ALLOW_ROOT",
    "EVENT_LOOP_POLICY",
    "LOG_FORMAT",
    "TOR_BANNER_FILE",
    "DROP_CLIENT_UNKNOWN",
    "PYTHON_GIL",
];

impl Settings {
    /// Reads the settings of this process: `args`, the environment and the config file.
    /// Errors are clap errors (`--help` and `--version` included), printed by `exit()`.
    pub fn load_from<I, T>(args: I) -> Result<Settings, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        let args: Vec<std::ffi::OsString> = args.into_iter().map(Into::into).collect();
        let mut cmd = Settings::command();
        if let Some(path) = config_path(&args) {
            let text = std::fs::read_to_string(&path).map_err(|e| {
                cmd.error(
                    clap::error::ErrorKind::Io,
                    format!("config file {}: {e}", path.display()),
                )
            })?;
            let defaults = file_defaults(&cmd, &text).map_err(|e| {
                cmd.error(
                    clap::error::ErrorKind::ValueValidation,
                    format!("config file {}: {e}", path.display()),
                )
            })?;
            for (id, value) in defaults {
                // Settings are read once per process: leaking the few file values is fine.
                let value: &'static str = Box::leak(value.into_boxed_str());
                cmd = cmd.mut_arg(id, |a| a.default_value(value).required(false));
            }
        }
        let matches = cmd.try_get_matches_from_mut(args)?;
        let settings = Settings::from_arg_matches(&matches).map_err(|e| e.format(&mut cmd))?;
        if let Some(var) = OBSOLETE_ENV.iter().find(|v| std::env::var_os(v).is_some()) {
            return Err(cmd.error(
                clap::error::ErrorKind::ArgumentConflict,
                format!("{var} is an obsolete ElectrumX setting: remove it (see SERVICES and REPORT_SERVICES)"),
            ));
        }
        Ok(settings)
    }

    /// Names of set ElectrumX variables that have no effect here.
    pub fn ignored_env() -> Vec<&'static str> {
        IGNORED_ENV
            .iter()
            .copied()
            .filter(|v| std::env::var_os(v).is_some())
            .collect()
    }
}

/// `--config FILE` / `--config=FILE` from the arguments, else `ELECTRUMX_CONFIG`.
fn config_path(args: &[std::ffi::OsString]) -> Option<PathBuf> {
    let mut it = args.iter().skip(1);
    while let Some(a) = it.next() {
        let a = a.to_string_lossy();
        if a == "--config" {
            return it.next().map(PathBuf::from);
        }
        if let Some(p) = a.strip_prefix("--config=") {
            return Some(PathBuf::from(p));
        }
    }
    std::env::var_os("ELECTRUMX_CONFIG")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

/// The file's values as default values of the matching arguments.
fn file_defaults(cmd: &clap::Command, text: &str) -> Result<Vec<(String, String)>, String> {
    let table: toml::Table = text.parse().map_err(|e: toml::de::Error| e.to_string())?;
    let mut out = Vec::new();
    for (key, value) in table {
        let id = key.to_ascii_lowercase().replace('-', "_");
        let known = cmd.get_arguments().any(|a| {
            a.get_id().as_str() == id && id != "config" && id != "help" && id != "version"
        });
        if !known {
            return Err(format!("unknown setting `{key}`"));
        }
        let text = match value {
            toml::Value::String(s) => s,
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Float(f) => f.to_string(),
            toml::Value::Boolean(b) => b.to_string(),
            toml::Value::Array(items) => items
                .into_iter()
                .map(|v| match v {
                    toml::Value::String(s) => Ok(s),
                    toml::Value::Integer(i) => Ok(i.to_string()),
                    other => Err(format!(
                        "`{key}`: a list of {}s is not supported",
                        other.type_str()
                    )),
                })
                .collect::<Result<Vec<_>, _>>()?
                .join(","),
            other => {
                return Err(format!(
                    "`{key}`: a {} value is not supported",
                    other.type_str()
                ));
            }
        };
        out.push((id, text));
    }
    Ok(out)
}

/// Settings checked and resolved.
pub struct Resolved {
    /// The cost model.
    pub cost: crate::protocol::cost::CostConfig,
    /// `DROP_CLIENT`, compiled.
    pub drop_client: Option<regex::Regex>,
    /// TLS files, when a service needs them.
    pub tls: Option<std::sync::Arc<crate::protocol::transport::TlsFiles>>,
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
    /// The cookie file for URLs without credentials: `DAEMON_COOKIE_FILE`, else the node's
    /// default one for the network.
    pub cookie_file: Option<PathBuf>,
    /// The node's `blocks/` directory to read during the initial sync (`BLOCK_FILES`):
    /// `BLOCKS_DIR` given with `DAEMON_URL`, else `blocks` in the network's directory under
    /// `DAEMON_DATADIR` (or `~/.bitcoin` when every URL is on loopback); `None` with
    /// `BLOCK_FILES=off`, without a node, or when `auto` finds no readable directory.
    pub node_blocks_dir: Option<PathBuf>,
    /// Poll interval.
    pub poll_interval: Duration,
    /// Peer discovery.
    pub peers: crate::discovery::peers::PeerConfig,
}

impl Settings {
    /// `DAEMON_COOKIE_FILE`, else `<DAEMON_DATADIR or ~/.bitcoin>/<network dir>/.cookie`.
    /// Resolved even when every URL has credentials: LocalRPC's `daemon_url` may switch to
    /// one without.
    fn cookie_file(
        &self,
        coin: &CoinParams,
        urls: &[DaemonUrl],
    ) -> Result<Option<PathBuf>, String> {
        if let Some(f) = &self.daemon_cookie_file {
            return Ok(Some(f.clone()));
        }
        let needed = urls.iter().any(|u| u.user_pass.is_none());
        let datadir = match (&self.daemon_datadir, std::env::var_os("HOME")) {
            (Some(d), _) => d.clone(),
            (None, Some(home)) => PathBuf::from(home).join(".bitcoin"),
            (None, None) if needed => {
                return Err("DAEMON_URL has no credentials and HOME is not set: give DAEMON_COOKIE_FILE or DAEMON_DATADIR".into());
            }
            (None, None) => return Ok(None),
        };
        let file = datadir.join(coin.network.datadir_subdir()).join(".cookie");
        if needed {
            tracing::info!(
                "DAEMON_URL has no credentials: authenticating with the node's cookie file {}",
                file.display()
            );
        }
        Ok(Some(file))
    }

    /// The node's blocks directory for the initial sync (see [`Resolved::node_blocks_dir`]).
    fn node_blocks_dir(
        &self,
        coin: &CoinParams,
        urls: &[DaemonUrl],
    ) -> Result<Option<PathBuf>, String> {
        if urls.is_empty() || self.block_files == BlockFiles::Off {
            return Ok(None);
        }
        let dir = match (
            &self.blocks_dir,
            &self.daemon_datadir,
            std::env::var_os("HOME"),
        ) {
            (Some(d), _, _) => Some(d.clone()),
            (None, Some(d), _) => Some(d.join(coin.network.datadir_subdir()).join("blocks")),
            (None, None, Some(home)) if urls.iter().all(|u| u.is_loopback()) => Some(
                PathBuf::from(home)
                    .join(".bitcoin")
                    .join(coin.network.datadir_subdir())
                    .join("blocks"),
            ),
            _ => None,
        };
        let readable = dir.as_ref().is_some_and(|d| std::fs::read_dir(d).is_ok());
        match (self.block_files, dir) {
            (_, Some(d)) if readable => Ok(Some(d)),
            (BlockFiles::On, Some(d)) => Err(format!(
                "BLOCK_FILES: on, but the node's blocks directory {} is not readable",
                d.display()
            )),
            (BlockFiles::On, None) => Err(
                "BLOCK_FILES: on, but no blocks directory is known: give BLOCKS_DIR or DAEMON_DATADIR"
                    .into(),
            ),
            _ => Ok(None),
        }
    }

    /// Checks values that clap cannot, naming the variable at fault.
    pub fn resolve(&self) -> Result<Resolved, String> {
        let coin = CoinParams::from_names(&self.coin, &self.net).map_err(|e| e.to_string())?;
        if !self.db_engine.eq_ignore_ascii_case("rocksdb") {
            return Err(format!(
                "DB_ENGINE: {:?} is not supported; electrumx-rs keeps its index in RocksDB (its own format: a fresh DB_DIRECTORY is needed when coming from ElectrumX)",
                self.db_engine
            ));
        }
        let daemon_urls = match (&self.daemon_url, &self.blocks_dir) {
            (Some(u), _) => DaemonUrl::parse_list(u, coin.rpc_port).map_err(|e| e.to_string())?,
            (None, Some(_)) => Vec::new(),
            (None, None) => {
                return Err("DAEMON_URL: required (or BLOCKS_DIR to index block files)".into());
            }
        };
        let cookie_file = self.cookie_file(&coin, &daemon_urls)?;
        let node_blocks_dir = self.node_blocks_dir(&coin, &daemon_urls)?;
        if let Some(f) = &cookie_file
            && daemon_urls.iter().any(|u| u.user_pass.is_none())
            && !f.exists()
        {
            tracing::warn!(
                "cookie file {} does not exist yet; waiting for the node to write it",
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
        if let Some(s) = report_services.iter().find(|s| {
            matches!(
                s.protocol,
                crate::services::Protocol::Rpc | crate::services::Protocol::Metrics
            )
        }) {
            return Err(format!(
                "REPORT_SERVICES: {s} is an admin service and cannot be advertised"
            ));
        }
        check_report_services(
            &report_services,
            self.peer_announce,
            self.peer_allow_private,
        )?;
        let peers = self.peer_config(&coin, &services, &report_services)?;
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
            initial_concurrent: self.initial_concurrent as usize,
            max_sessions_per_ip: self.max_sessions_per_ip as usize,
            per_ip_exempt: crate::protocol::netmask::Cidr::parse_list(&self.sessions_per_ip_exempt)
                .map_err(|e| format!("SESSIONS_PER_IP_EXEMPT: {e}"))?,
            trusted_proxies: crate::protocol::netmask::Cidr::parse_list(&self.trusted_proxies)
                .map_err(|e| format!("TRUSTED_PROXIES: {e}"))?,
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
            Some(std::sync::Arc::new(
                crate::protocol::transport::TlsFiles::load(cert, key)?,
            ))
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
        let cost = crate::protocol::cost::CostConfig {
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
            cookie_file,
            node_blocks_dir,
            poll_interval: Duration::from_millis(self.daemon_poll_interval_blocks),
            services,
            report_services,
            limits,
            peers,
        })
    }

    /// The peer discovery settings.
    fn peer_config(
        &self,
        coin: &CoinParams,
        services: &[crate::services::Service],
        report_services: &[crate::services::Service],
    ) -> Result<crate::discovery::peers::PeerConfig, String> {
        let discovery = crate::discovery::peers::Discovery::parse(&self.peer_discovery)?;
        let blacklist_url = match &self.blacklist_url {
            Some(u) if u.trim().is_empty() => None,
            Some(u) => {
                let u = u.trim();
                if !["https://", "http://", "file://"]
                    .iter()
                    .any(|p| u.starts_with(p))
                {
                    return Err(format!(
                        "BLACKLIST_URL: {u:?} is not an https://, http:// or file:// URL"
                    ));
                }
                Some(u.to_string())
            }
            None => coin.blacklist_url.map(str::to_string),
        };
        let report: Vec<String> = report_services.iter().map(|s| s.to_string()).collect();
        // Outgoing peer connections leave from the address clients are served on; never
        // from an admin service's address, and never from loopback unless private
        // addresses are allowed (a loopback source cannot reach a public peer).
        use crate::services::Protocol;
        let local_addr = services
            .iter()
            .filter(|s| {
                matches!(
                    s.protocol,
                    Protocol::Tcp | Protocol::Ssl | Protocol::Ws | Protocol::Wss
                )
            })
            .filter_map(|s| s.host.parse::<std::net::IpAddr>().ok())
            .find(|ip| !ip.is_unspecified() && (self.peer_allow_private || !ip.is_loopback()));
        Ok(crate::discovery::peers::PeerConfig {
            discovery,
            announce: self.peer_announce,
            allow_private: self.peer_allow_private,
            force_proxy: self.force_proxy,
            proxy_host: self.tor_proxy_host.clone(),
            proxy_port: self.tor_proxy_port,
            blacklist_url,
            genesis_hash: coin.genesis_hash.to_display_hex(),
            default_tcp_port: coin.default_tcp_port,
            default_ssl_port: coin.default_ssl_port,
            seeds: coin.peers.iter().map(|s| s.to_string()).collect(),
            our_features: crate::protocol::features::features_of(&report, coin),
            local_addr,
            state_file: Some(
                self.db_directory
                    .join(crate::discovery::peers::store::FILE_NAME),
            ),
            schedule: crate::discovery::peers::ELECTRUMX_SCHEDULE,
        })
    }
}

/// ElectrumX's rules for `REPORT_SERVICES`: no `rpc`, no multicast or unspecified address,
/// no private address when announcing (unless `PEER_ALLOW_PRIVATE`), no `localhost`, a host.
fn check_report_services(
    services: &[crate::services::Service],
    announce: bool,
    allow_private: bool,
) -> Result<(), String> {
    use crate::discovery::peers::netaddr;
    for s in services {
        if s.protocol == crate::services::Protocol::Rpc {
            return Err("REPORT_SERVICES: bad protocol rpc".into());
        }
        match netaddr::ip_literal(&s.host) {
            Some(ip)
                if ip.is_multicast()
                    || ip.is_unspecified()
                    || (netaddr::is_private(ip) && announce && !allow_private) =>
            {
                return Err(format!(
                    "REPORT_SERVICES: bad IP address {ip} (private addresses need PEER_ANNOUNCE off or PEER_ALLOW_PRIVATE)"
                ));
            }
            Some(_) => {}
            None if s.host.is_empty() => {
                return Err(format!("REPORT_SERVICES: {s} has no host"));
            }
            None if s.host.eq_ignore_ascii_case("localhost") => {
                return Err(format!("REPORT_SERVICES: bad host {}", s.host));
            }
            None if !netaddr::is_valid_hostname(&s.host) => {
                return Err(format!("REPORT_SERVICES: bad host {}", s.host));
            }
            None => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(text: &str) -> (tempfile::TempDir, String) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("electrumx.toml");
        std::fs::write(&path, text).unwrap();
        let p = path.display().to_string();
        (dir, p)
    }

    #[test]
    fn the_file_fills_in_and_flags_override() {
        let (_d, path) = write(
            "DAEMON_URL = \"http://u:p@127.0.0.1:1/\"\ndb_directory = \"/tmp/x\"\n\
             CACHE_MB = 300\nservices = [\"tcp://:50001\", \"rpc://\"]\nanon_logs = true\n",
        );
        let s = Settings::load_from(["electrumx-server", "--config", &path]).unwrap();
        assert_eq!(s.cache_mb, 300);
        assert_eq!(s.db_directory, PathBuf::from("/tmp/x"));
        assert_eq!(s.services, "tcp://:50001,rpc://");
        assert!(s.anon_logs);
        assert_eq!(
            s.max_sessions, 1000,
            "built-in default where the file is silent"
        );
        let s = Settings::load_from([
            "electrumx-server",
            &format!("--config={path}"),
            "--cache-mb",
            "400",
        ])
        .unwrap();
        assert_eq!(s.cache_mb, 400, "a flag beats the file");
    }

    #[test]
    fn bad_files_name_the_setting() {
        let (_d, path) = write("DB_DIRECTORY = \"/tmp/x\"\nCACHE_MBB = 3\n");
        let e = Settings::load_from(["electrumx-server", "--config", &path]).unwrap_err();
        assert!(e.to_string().contains("CACHE_MBB"), "{e}");
        let (_d, path) = write(
            "DB_DIRECTORY = \"/tmp/x\"\nDAEMON_URL = \"http://u:p@h/\"\nCACHE_MB = \"lots\"\n",
        );
        let e = Settings::load_from(["electrumx-server", "--config", &path]).unwrap_err();
        assert!(
            e.to_string().contains("cache-mb") || e.to_string().contains("CACHE_MB"),
            "{e}"
        );
        let (_d, path) = write("not toml [");
        assert!(Settings::load_from(["electrumx-server", "--config", &path]).is_err());
        let e =
            Settings::load_from(["electrumx-server", "--config", "/nonexistent.toml"]).unwrap_err();
        assert!(e.to_string().contains("/nonexistent.toml"), "{e}");
    }

    #[test]
    fn booleans_say_what_they_mean() {
        for (v, b) in [
            ("", false),
            ("0", false),
            ("False", false),
            ("off", false),
            ("1", true),
            ("yes", true),
            ("ON", true),
        ] {
            assert_eq!(parse_bool(v).unwrap(), b, "{v:?}");
        }
        assert!(parse_bool("x").is_err());
    }

    fn settings(env: &[(&str, &str)]) -> Settings {
        let mut args = vec!["electrumx-server".to_string()];
        for (k, v) in env {
            args.push(format!(
                "--{}={v}",
                k.to_ascii_lowercase().replace('_', "-")
            ));
        }
        Settings::try_parse_from(args).unwrap()
    }

    const BASE: &[(&str, &str)] = &[
        ("DAEMON_URL", "http://u:p@127.0.0.1:1/"),
        ("DB_DIRECTORY", "/tmp/x"),
    ];

    fn resolve(extra: &[(&str, &str)]) -> Result<Resolved, String> {
        let env: Vec<(&str, &str)> = BASE.iter().chain(extra).copied().collect();
        settings(&env).resolve()
    }

    #[test]
    fn peer_settings() {
        let r = resolve(&[]).unwrap();
        assert_eq!(r.peers.discovery, crate::discovery::peers::Discovery::On);
        assert!(r.peers.announce);
        assert_eq!(
            r.peers.blacklist_url.as_deref(),
            Some("https://electrum.org/blacklist.json")
        );
        assert!(!r.peers.seeds.is_empty());
        let r = resolve(&[
            ("BLACKLIST_URL", ""),
            ("PEER_DISCOVERY", "SELF"),
            ("NET", "regtest"),
        ])
        .unwrap();
        assert_eq!(r.peers.blacklist_url, None);
        assert_eq!(
            r.peers.discovery,
            crate::discovery::peers::Discovery::SelfOnly
        );
        assert!(r.peers.seeds.is_empty());
        let e = resolve(&[("PEER_DISCOVERY", "maybe")]).err().unwrap();
        assert!(e.contains("PEER_DISCOVERY"), "{e}");
        let e = resolve(&[("BLACKLIST_URL", "ftp://x")]).err().unwrap();
        assert!(e.contains("BLACKLIST_URL"), "{e}");
        assert!(parse_bool("Yes").unwrap() && !parse_bool("off").unwrap());
        assert!(parse_bool("flase").is_err());
    }

    #[test]
    fn trusted_proxies_are_addresses_or_subnets() {
        assert!(resolve(&[]).unwrap().limits.trusted_proxies.is_empty());
        let r = resolve(&[("TRUSTED_PROXIES", "10.0.0.5, 192.168.0.0/16,::1")]).unwrap();
        let nets = r.limits.trusted_proxies;
        assert_eq!(nets.len(), 3);
        assert!(nets[1].contains("192.168.7.7".parse().unwrap()));
        for bad in ["haproxy.local", "10.0.0.0/40", "10.0.0.5;10.0.0.6"] {
            let e = resolve(&[("TRUSTED_PROXIES", bad)]).err().unwrap();
            assert!(e.starts_with("TRUSTED_PROXIES: "), "{e}");
        }
    }

    #[test]
    fn the_cookie_comes_from_the_node_datadir_without_credentials() {
        let parse = |args: &[&str]| {
            let mut all = vec!["electrumx-server", "--db-directory=/tmp/x", "--net=regtest"];
            all.extend_from_slice(args);
            Settings::try_parse_from(all).unwrap().resolve().unwrap()
        };
        let r = parse(&[
            "--daemon-url=http://127.0.0.1:1/",
            "--daemon-datadir=/data/node",
        ]);
        assert_eq!(
            r.cookie_file,
            Some(PathBuf::from("/data/node/regtest/.cookie"))
        );
        let r = parse(&[
            "--daemon-url=http://u:p@127.0.0.1:1/",
            "--daemon-datadir=/data/node",
        ]);
        assert_eq!(
            r.cookie_file,
            Some(PathBuf::from("/data/node/regtest/.cookie")),
            "resolved also with credentials, for a later switch to a URL without"
        );
        let r = parse(&[
            "--daemon-url=http://127.0.0.1:1/",
            "--daemon-cookie-file=/c",
        ]);
        assert_eq!(r.cookie_file, Some(PathBuf::from("/c")));
    }

    #[test]
    fn block_files_come_from_the_node_datadir_unless_off() {
        let datadir = tempfile::tempdir().unwrap();
        let blocks = datadir.path().join("regtest").join("blocks");
        std::fs::create_dir_all(&blocks).unwrap();
        let dd = format!("--daemon-datadir={}", datadir.path().display());
        let parse = |args: &[&str]| {
            let mut all = vec!["electrumx-server", "--db-directory=/tmp/x", "--net=regtest"];
            all.extend_from_slice(args);
            Settings::try_parse_from(all).unwrap().resolve()
        };
        let url = "--daemon-url=http://u:p@127.0.0.1:1/";
        let r = parse(&[url, &dd]).unwrap();
        assert_eq!(r.node_blocks_dir.as_deref(), Some(blocks.as_path()));
        for off in [
            "--block-files=off",
            "--block-files=0",
            "--block-files=false",
        ] {
            assert_eq!(parse(&[url, &dd, off]).unwrap().node_blocks_dir, None);
        }
        // BLOCKS_DIR with a node names the node's blocks directory.
        let other = tempfile::tempdir().unwrap();
        let bd = format!("--blocks-dir={}", other.path().display());
        let r = parse(&[url, &dd, &bd]).unwrap();
        assert_eq!(r.node_blocks_dir.as_deref(), Some(other.path()));
        // Without a node, BLOCKS_DIR is the offline source, not a node's directory.
        let r = parse(&[&bd]).unwrap();
        assert!(r.daemon_urls.is_empty() && r.node_blocks_dir.is_none());
        // `auto` without a readable directory: RPC; `on`: refused.
        let missing = "--daemon-datadir=/nonexistent/node";
        assert_eq!(parse(&[url, missing]).unwrap().node_blocks_dir, None);
        let Err(err) = parse(&[url, missing, "--block-files=on"]) else {
            panic!("BLOCK_FILES=on without a directory is refused")
        };
        assert!(
            err.contains("BLOCK_FILES") && err.contains("/nonexistent/node/regtest/blocks"),
            "{err}"
        );
        assert!(
            Settings::try_parse_from([
                "electrumx-server",
                "--db-directory=/x",
                "--block-files=maybe"
            ])
            .is_err()
        );
    }

    #[test]
    fn report_services_follow_electrumx_rules() {
        let ok = |v: &str, extra: &[(&str, &str)]| {
            let mut env = vec![("REPORT_SERVICES", v)];
            env.extend_from_slice(extra);
            resolve(&env).map(|_| ())
        };
        assert!(ok("tcp://example.com:50001,ssl://example.com:50002", &[]).is_ok());
        assert!(
            ok("rpc://example.com:8000", &[])
                .unwrap_err()
                .contains("REPORT_SERVICES")
        );
        assert!(
            ok("tcp://127.0.0.1:50001", &[])
                .unwrap_err()
                .contains("REPORT_SERVICES")
        );
        assert!(ok("tcp://127.0.0.1:50001", &[("PEER_ANNOUNCE", "false")]).is_ok());
        assert!(ok("tcp://127.0.0.1:50001", &[("PEER_ALLOW_PRIVATE", "1")]).is_ok());
        assert!(ok("tcp://0.0.0.0:50001", &[("PEER_ANNOUNCE", "false")]).is_err());
        assert!(ok("tcp://localhost:50001", &[]).is_err());
        assert!(ok("tcp://:50001", &[]).is_err());
        let r = resolve(&[
            ("REPORT_SERVICES", "tcp://example.com:50001"),
            ("SERVICES", "tcp://10.0.0.5:50001"),
        ])
        .unwrap();
        assert_eq!(r.peers.local_addr, Some("10.0.0.5".parse().unwrap()));
        // Admin services and loopback never choose the source of outgoing connections.
        let r = resolve(&[
            ("REPORT_SERVICES", "tcp://example.com:50001"),
            ("SERVICES", "tcp://:50001,rpc://,metrics://127.0.0.1:4224"),
        ])
        .unwrap();
        assert_eq!(r.peers.local_addr, None);
        let r = resolve(&[
            ("REPORT_SERVICES", "tcp://example.com:50001"),
            ("SERVICES", "tcp://127.0.0.1:50001"),
        ])
        .unwrap();
        assert_eq!(r.peers.local_addr, None);
        assert_eq!(
            r.peers.our_features["hosts"]["example.com"]["tcp_port"],
            serde_json::json!(50001)
        );
    }
}
