//! What every session shares: the index, the mempool, the node, the limits, the server's
//! identity, and the subscription registry.

use crate::protocol::subscriptions::Subscriptions;
use electrumx_core::daemon::Daemon;
use electrumx_core::{CoinParams, Index, Mempool};
use std::sync::Arc;
use std::time::Duration;

/// Explicit limits, named after ElectrumX's settings.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Longest incoming message in bytes (`MAX_RECV`).
    pub max_recv: usize,
    /// Longest response in bytes (`MAX_SEND`).
    pub max_send: usize,
    /// Most requests in one batch.
    pub max_batch: usize,
    /// Most concurrent sessions (`MAX_SESSIONS`).
    pub max_sessions: usize,
    /// Idle time after which a session is closed (`SESSION_TIMEOUT`).
    pub session_timeout: Duration,
    /// Longest time one request may take (`REQUEST_TIMEOUT`).
    pub request_timeout: Duration,
    /// Messages queued for a session before it counts as not reading and is dropped.
    pub send_queue: usize,
    /// Requests of one session handled at once, before cost throttling
    /// (`INITIAL_CONCURRENT`).
    pub initial_concurrent: usize,
    /// Most sessions from one address (an IPv4 address, an IPv6 /64), 0 for no limit
    /// (`MAX_SESSIONS_PER_IP`).
    pub max_sessions_per_ip: usize,
    /// Addresses the per-address limit does not apply to (`SESSIONS_PER_IP_EXEMPT`).
    pub per_ip_exempt: Vec<crate::protocol::netmask::Cidr>,
    /// Addresses whose connections may start with a PROXY header naming the real client
    /// (`TRUSTED_PROXIES`); empty: no PROXY protocol.
    pub trusted_proxies: Vec<crate::protocol::netmask::Cidr>,
}

/// Default `MAX_SESSIONS_PER_IP` (Fulcrum's default is 12; a household or an office behind
/// one address rarely runs more wallets than this at once).
pub const DEFAULT_MAX_SESSIONS_PER_IP: usize = 20;

impl Limits {
    /// The longest history a `get_history` answer may carry (ElectrumX's rule: about 99
    /// bytes of JSON per entry).
    pub fn max_history(&self) -> usize {
        (self.max_send.saturating_sub(100) / 99).max(1)
    }

    /// Bytes queued for one session before it counts as not reading and is dropped. A
    /// session stops starting requests once a megabyte is queued, so past that only the
    /// answers already in progress (at most `INITIAL_CONCURRENT`, each at most `MAX_SEND`)
    /// and notifications add to it: a client that reads slowly is slowed down and never
    /// dropped for its own answers; one that does not read at all is dropped by the writer's
    /// timeout, or here by a flood of notifications.
    pub fn send_queue_bytes(&self) -> usize {
        self.max_send
            .saturating_mul(self.initial_concurrent + 1)
            .saturating_add(2 << 20)
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_recv: 1_000_000,
            max_send: 8_100_000,
            max_batch: 100,
            max_sessions: 1000,
            session_timeout: Duration::from_secs(600),
            request_timeout: Duration::from_secs(30),
            send_queue: 1000,
            initial_concurrent: 10,
            max_sessions_per_ip: DEFAULT_MAX_SESSIONS_PER_IP,
            per_ip_exempt: crate::protocol::netmask::Cidr::loopback(),
            trusted_proxies: Vec::new(),
        }
    }
}

/// How the server describes itself to clients.
#[derive(Clone, Debug, Default)]
pub struct Identity {
    /// `BANNER_FILE`: read at every `server.banner`, as ElectrumX does, so edits show
    /// without a restart (`None`: a default line).
    pub banner_file: Option<std::path::PathBuf>,
    /// `DONATION_ADDRESS`.
    pub donation_address: String,
    /// Services reported in `server.features` (`REPORT_SERVICES`), as `proto://host:port`.
    pub report_services: Vec<String>,
    /// The node's `version` and `subversion` for the banner, once the node told them.
    pub daemon_version: Arc<parking_lot::RwLock<Option<(String, String)>>>,
}

impl Identity {
    /// The banner: `BANNER_FILE` with `$SERVER_VERSION`, `$SERVER_SUBVERSION`,
    /// `$DAEMON_VERSION`, `$DAEMON_SUBVERSION` and `$DONATION_ADDRESS` substituted, or
    /// ElectrumX's default line.
    pub fn banner(&self) -> String {
        let version = crate::protocol::version::server_version();
        let Some(path) = &self.banner_file else {
            return format!("You are connected to an {version} server.");
        };
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!("BANNER_FILE {}: {e}", path.display());
                return format!("You are connected to an {version} server.");
            }
        };
        let (dv, dsv) = self.daemon_version.read().clone().unwrap_or_default();
        text.replace("$SERVER_VERSION", env!("CARGO_PKG_VERSION"))
            .replace("$SERVER_SUBVERSION", &version)
            .replace("$DAEMON_VERSION", &dv)
            .replace("$DAEMON_SUBVERSION", &dsv)
            .replace("$DONATION_ADDRESS", &self.donation_address)
    }

    /// Asks the node for its version once (bounded by `timeout`), for the banner.
    pub async fn learn_daemon_version(&self, daemon: &dyn Daemon, timeout: std::time::Duration) {
        let call = daemon.call_json("getnetworkinfo", serde_json::json!([]));
        let Ok(Ok(info)) = tokio::time::timeout(timeout, call).await else {
            return;
        };
        let field = |k: &str| {
            info.get(k)
                .map(|v| v.to_string().trim_matches('"').to_string())
                .unwrap_or_default()
        };
        *self.daemon_version.write() = Some((field("version"), field("subversion")));
    }
}

/// Node calls made for clients at once, server-wide: fewer than the node client's own
/// in-flight limit (10 by default), so the sync and the mempool mirror always have room.
const CLIENT_NODE_CALLS: usize = 4;

/// The shared state of all sessions.
pub struct ServerState {
    /// Coin parameters.
    pub coin: CoinParams,
    /// The chain index.
    pub index: Index,
    /// The mempool mirror.
    pub mempool: Arc<Mempool>,
    /// The node.
    pub daemon: Arc<dyn Daemon>,
    /// Calls to the node made for clients: limited, and cached per block where possible.
    pub node: crate::cache::node_calls::NodeCalls,
    /// Limits.
    pub limits: Limits,
    /// Identity.
    pub identity: Identity,
    /// Subscriptions of all sessions.
    pub subs: Subscriptions,
    /// Wakes the mempool loop (after a broadcast).
    pub mempool_wake: tokio::sync::Notify,
    /// The cost model's settings.
    pub cost: Arc<crate::protocol::cost::CostConfig>,
    /// Cost groups (per subnet) of all sessions.
    pub cost_groups: Arc<crate::protocol::cost::CostGroups>,
    /// `DROP_CLIENT`: client names to refuse.
    pub drop_client: Option<regex::Regex>,
    /// Recently asked confirmed histories, UTXO lists and balances.
    pub script_cache: crate::cache::ScriptCache,
    /// Where the status hashing of long histories stands (for incremental statuses).
    pub status_midstates: crate::cache::StatusMidstates,
    /// Recently asked confirmed transactions (`blockchain.transaction.get`).
    pub tx_cache: crate::cache::TxCache,
    /// Live sessions and their counters.
    pub sessions: crate::protocol::registry::SessionRegistry,
    /// Live sessions per client address (`MAX_SESSIONS_PER_IP`).
    pub sessions_per_ip: crate::protocol::netmask::SessionsPerIp,
    /// Readiness for load balancers (`GET /health`).
    pub health: Arc<crate::admin::health::Health>,
    /// Request counts, errors and latencies per method.
    pub requests: crate::admin::metrics::RequestMetrics,
    /// `ANON_LOGS`: client addresses are redacted in logs.
    pub anon_logs: bool,
    /// Merkle trees of recently asked blocks (`get_merkle`, `id_from_pos`).
    pub merkle_cache: crate::cache::merkle::MerkleCache,
    /// Rendered header chunks (`blockchain.block.headers`).
    pub header_chunks: crate::cache::header_chunks::HeaderChunkCache,
    /// Cached levels of the block-hash tree, for `cp_height` proofs.
    pub header_tree: crate::cache::header_tree::HeaderTree,
    /// Known peer servers and their discovery (`PeerManager::disabled()` for none).
    pub peers: Arc<crate::discovery::peers::PeerManager>,
}

impl ServerState {
    /// State with default limits, identity and cost model; adjust the public fields before
    /// sharing it.
    pub fn new(
        coin: CoinParams,
        index: Index,
        mempool: Arc<Mempool>,
        daemon: Arc<dyn Daemon>,
    ) -> Self {
        ServerState {
            coin,
            index,
            mempool,
            node: crate::cache::node_calls::NodeCalls::new(daemon.clone(), CLIENT_NODE_CALLS),
            daemon,
            limits: Limits::default(),
            identity: Identity::default(),
            subs: Default::default(),
            mempool_wake: Default::default(),
            cost: Default::default(),
            cost_groups: Default::default(),
            drop_client: None,
            script_cache: crate::cache::ScriptCache::new(2_000_000),
            status_midstates: crate::cache::StatusMidstates::new(100_000),
            // 64 MB of hex: some 100,000 typical transactions.
            tx_cache: crate::cache::TxCache::new(64 << 20),
            sessions: Default::default(),
            sessions_per_ip: Default::default(),
            health: Arc::new(crate::admin::health::Health::new(
                std::time::Duration::from_secs(60),
            )),
            requests: Default::default(),
            anon_logs: false,
            // 4M hashes: 128 MB at most, a few hundred full blocks.
            merkle_cache: crate::cache::merkle::MerkleCache::new(4_000_000),
            // 32 MB of JSON: about 100 chunks of 2,016 headers, 200,000 blocks.
            header_chunks: crate::cache::header_chunks::HeaderChunkCache::new(32 << 20),
            header_tree: Default::default(),
            peers: Arc::new(crate::discovery::peers::PeerManager::disabled()),
        }
    }

    /// A client address as logs show it: redacted under `ANON_LOGS`, as ElectrumX does.
    pub fn log_addr(&self, addr: &std::net::SocketAddr) -> String {
        if self.anon_logs {
            "xx.xx.xx.xx:xx".to_string()
        } else {
            addr.to_string()
        }
    }
}
