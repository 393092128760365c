//! Peer discovery, as ElectrumX does it: learn of other servers (the coin's seed list, our
//! own `REPORT_SERVICES`, `server.add_peer` calls, LocalRPC, IRC, the lists verified peers
//! return), verify each before listing it (same chain, near the same tip, lists the host we
//! dialed), re-verify on a schedule, forget the unreachable, and announce ourselves to peers
//! that do not list us. [`PeerManager`] owns the records; one scheduler task runs the
//! verifications, a bounded number at a time.
//!
//! Differences from ElectrumX 2.0.0, each deliberate: the bucket rule is re-checked when a
//! verification completes (ElectrumX has a race there); a bad peer that later verifies is
//! good again; our own identities are never forgotten; `server.add_peer` from IP-literal hosts
//! is rate-limited per /16 (/56) instead of in one shared bucket; `PEER_DISCOVERY=self`
//! verifies and lists only ourselves (ElectrumX's code lists nothing); known peers are kept
//! in `DB_DIRECTORY/peers.json` across restarts; `PEER_ALLOW_PRIVATE` (ours) accepts private
//! addresses, for test networks.

pub mod blacklist;
pub mod client;
pub mod dial;
pub mod http;
pub mod netaddr;
pub mod peer;
pub mod rules;
pub mod socks;
pub mod store;
pub mod verify;

use blacklist::Blacklist;
use client::RpcConn;
use dial::Dialer;
use parking_lot::Mutex;
use peer::Transport;
pub use peer::{Peer, Status};
use rand::Rng;
use rand::seq::SliceRandom;
pub use rules::{ELECTRUMX_SCHEDULE, Schedule};
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;
pub use verify::OurChain;
use verify::{Expect, Failure};

/// Most peers known at once; further candidates are ignored.
pub const MAX_PEERS: usize = 1000;
/// Most verifications running at once.
pub const MAX_CONCURRENT: usize = 8;
/// New peers accepted from one peer's list.
pub const MAX_NEW_PER_SOURCE: usize = 2;
/// Time allowed per connection and per request to a clearnet peer.
pub const CLEARNET_TIMEOUT: Duration = Duration::from_secs(30);
/// Time allowed per connection and per request to an onion peer.
pub const ONION_TIMEOUT: Duration = Duration::from_secs(120);
/// Time between attempts to find a SOCKS proxy.
const PROXY_RETRY: Duration = Duration::from_secs(900);
/// Ports tried for the proxy when `TOR_PROXY_PORT` is unset.
const PROXY_PORTS: [u16; 3] = [9050, 9150, 1080];
/// Longest a `server.add_peer` host name resolution may take.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(10);
/// Time between saves of known peers (when they changed).
const SAVE_INTERVAL: Duration = Duration::from_secs(60);
/// Most `server.add_peer` rate-limit buckets remembered.
const MAX_ADD_BUCKETS: usize = 10_000;

/// `PEER_DISCOVERY`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Discovery {
    /// Discover, verify and list peers.
    On,
    /// Verify and list only ourselves.
    SelfOnly,
    /// Nothing: `server.peers.subscribe` answers `[]`.
    Off,
}

impl Discovery {
    /// Parses `on`, `self` or `off` (empty: off), any case.
    pub fn parse(s: &str) -> Result<Discovery, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "on" => Ok(Discovery::On),
            "self" => Ok(Discovery::SelfOnly),
            "off" | "" => Ok(Discovery::Off),
            other => Err(format!(
                "PEER_DISCOVERY: {other:?} is not one of on, self, off"
            )),
        }
    }

    /// The setting's spelling.
    pub fn name(&self) -> &'static str {
        match self {
            Discovery::On => "on",
            Discovery::SelfOnly => "self",
            Discovery::Off => "off",
        }
    }
}

/// Peer discovery settings.
#[derive(Clone, Debug)]
pub struct PeerConfig {
    /// `PEER_DISCOVERY`.
    pub discovery: Discovery,
    /// `PEER_ANNOUNCE`: call `server.add_peer` on peers that do not list us.
    pub announce: bool,
    /// `PEER_ALLOW_PRIVATE` (ours): private and loopback addresses count as public.
    pub allow_private: bool,
    /// `FORCE_PROXY`: reach every peer through the proxy.
    pub force_proxy: bool,
    /// `TOR_PROXY_HOST`.
    pub proxy_host: String,
    /// `TOR_PROXY_PORT` (unset: try 9050, 9150, 1080).
    pub proxy_port: Option<u16>,
    /// `BLACKLIST_URL` (`None`: no blacklist).
    pub blacklist_url: Option<String>,
    /// Our genesis hash, display hex.
    pub genesis_hash: String,
    /// The coin's default TCP port (a bare `t` in real names).
    pub default_tcp_port: u16,
    /// The coin's default SSL port (a bare `s`).
    pub default_ssl_port: u16,
    /// The coin's seed peers, as real names.
    pub seeds: Vec<String>,
    /// Our `server.features`, announced with `server.add_peer`; its hosts are our identities.
    pub our_features: Value,
    /// Source address for outgoing connections (our listening IP).
    pub local_addr: Option<IpAddr>,
    /// Where known peers are kept (`None`: not kept).
    pub state_file: Option<PathBuf>,
    /// Timing.
    pub schedule: Schedule,
}

/// One known peer and its scheduling.
struct Entry {
    peer: Peer,
    /// One of our own identities.
    myself: bool,
    next_try: Instant,
    /// A verification is running.
    busy: bool,
}

struct Inner {
    entries: BTreeMap<u64, Entry>,
    next_id: u64,
    /// `server.add_peer` rate-limit buckets and when each was last used.
    recent_adds: HashMap<String, f64>,
    blacklist: Blacklist,
    proxy: Option<SocketAddr>,
    permit_onion_at: f64,
    onion_skip_logged: bool,
    dirty: bool,
}

/// A verification to run.
struct Job {
    id: u64,
    peer: Peer,
    myself: bool,
    attempts: Vec<(Transport, u16)>,
}

/// How a verification ended.
enum Outcome {
    Good {
        ip: Option<IpAddr>,
        verified: Box<verify::Verified>,
        text: String,
        started: f64,
    },
    Bad,
    Failed,
    NoProxy,
}

/// The peers we know and the discovery that maintains them.
pub struct PeerManager {
    cfg: Option<PeerConfig>,
    inner: Mutex<Inner>,
    wake: Notify,
}

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

impl PeerManager {
    /// A manager with discovery off: no peers, `server.add_peer` refused.
    pub fn disabled() -> PeerManager {
        PeerManager::build(None)
    }

    /// A manager with these settings; [`PeerManager::run`] does the work.
    pub fn new(cfg: PeerConfig) -> PeerManager {
        PeerManager::build(Some(cfg))
    }

    fn build(cfg: Option<PeerConfig>) -> PeerManager {
        PeerManager {
            cfg,
            inner: Mutex::new(Inner {
                entries: BTreeMap::new(),
                next_id: 1,
                recent_adds: HashMap::new(),
                blacklist: Blacklist::default(),
                proxy: None,
                permit_onion_at: 0.0,
                onion_skip_logged: false,
                dirty: false,
            }),
            wake: Notify::new(),
        }
    }

    /// The `PEER_DISCOVERY` mode.
    pub fn discovery(&self) -> Discovery {
        self.cfg.as_ref().map_or(Discovery::Off, |c| c.discovery)
    }

    fn schedule(&self) -> Schedule {
        self.cfg.as_ref().map_or(ELECTRUMX_SCHEDULE, |c| c.schedule)
    }

    fn allow_private(&self) -> bool {
        self.cfg.as_ref().is_some_and(|c| c.allow_private)
    }

    fn default_ports(&self) -> (u16, u16) {
        self.cfg
            .as_ref()
            .map_or((50001, 50002), |c| (c.default_tcp_port, c.default_ssl_port))
    }

    /// Our identities, from the hosts of our features.
    fn myselves(&self) -> Vec<Peer> {
        self.cfg
            .as_ref()
            .map(|c| Peer::from_features(&c.our_features, "env"))
            .unwrap_or_default()
    }

    /// Our clearnet identity's real name (`host v1.7 s50002 t50001`), if we report one.
    pub fn real_name(&self) -> Option<String> {
        self.myselves()
            .into_iter()
            .find(|p| !p.is_tor())
            .map(|p| p.real_name())
    }

    // ----- what LocalRPC, IRC and sessions call -----

    /// ElectrumX's LocalRPC `peers` result: each peer's record plus its `status`, bad ones
    /// last, the most recently good first.
    pub fn rpc_data(&self) -> Value {
        let now = unix_now();
        let stale = self.schedule().stale_secs;
        let inner = self.inner.lock();
        let mut peers: Vec<&Peer> = inner.entries.values().map(|e| &e.peer).collect();
        peers.sort_by(|a, b| {
            (a.bad, -a.last_good)
                .partial_cmp(&(b.bad, -b.last_good))
                .unwrap_or(std::cmp::Ordering::Equal)
        });
        Value::Array(
            peers
                .into_iter()
                .map(|p| {
                    let mut v = p.serialize();
                    v["status"] = json!(p.status(now, stale).name());
                    v
                })
                .collect(),
        )
    }

    /// Peer counts by status, for `getinfo`: `{"bad","good","never","stale","total"}`.
    pub fn info(&self) -> Value {
        let now = unix_now();
        let stale = self.schedule().stale_secs;
        let inner = self.inner.lock();
        let mut counts = [0usize; 4];
        for e in inner.entries.values() {
            counts[e.peer.status(now, stale) as usize] += 1;
        }
        json!({
            "good": counts[Status::Good as usize],
            "stale": counts[Status::Stale as usize],
            "never": counts[Status::Never as usize],
            "bad": counts[Status::Bad as usize],
            "total": inner.entries.len(),
        })
    }

    /// LocalRPC `add_peer`: parses a real name (`"host.tld v1.4 s50002 t50001"`) and
    /// schedules its verification (source `RPC`); a known peer with other ports is retried.
    pub async fn add_local_rpc_peer(&self, real_name: &str) -> Result<(), String> {
        if self.discovery() != Discovery::On {
            return Err(format!("peer discovery is {}", self.discovery().name()));
        }
        let name = real_name.trim();
        if name.is_empty() {
            return Err("empty real name".into());
        }
        let (tcp, ssl) = self.default_ports();
        let peer = Peer::from_real_name(name, "RPC", tcp, ssl);
        if !netaddr::is_valid_host(&peer.host) {
            return Err(format!("invalid host {:?}", peer.host));
        }
        if !peer.is_public(self.allow_private()) {
            return Err(format!(
                "{} is not a public address (PEER_ALLOW_PRIVATE accepts private ones)",
                peer.host
            ));
        }
        if peer.is_tor() && self.inner.lock().proxy.is_none() {
            return Err(format!(
                "{}: onion peers need a Tor proxy, and none was found",
                peer.host
            ));
        }
        if peer.ssl_port().is_none() && peer.tcp_port().is_none() {
            return Err(format!("{name:?} names no port (s or t)"));
        }
        self.note_peers(vec![peer], None, true, "RPC");
        Ok(())
    }

    /// A candidate heard on IRC (`nick`, real name without the hop count): verified like any
    /// other candidate, with the nick as its source.
    pub fn add_irc_peer(&self, nick: &str, real_name: &str) {
        if self.discovery() != Discovery::On {
            tracing::debug!(
                "IRC peer {nick} ignored: peer discovery is {}",
                self.discovery().name()
            );
            return;
        }
        let (tcp, ssl) = self.default_ports();
        let peer = Peer::from_real_name(real_name, nick, tcp, ssl);
        self.note_peers(vec![peer], None, true, nick);
    }

    /// The answer to `server.peers.subscribe` for a client at `remote`.
    pub fn subscribe_result(&self, remote: Option<IpAddr>) -> Value {
        let discovery = self.discovery();
        if discovery == Discovery::Off {
            return json!([]);
        }
        let now = unix_now();
        let cutoff = now - self.schedule().stale_secs;
        let allow_private = self.allow_private();
        let inner = self.inner.lock();
        let mine: Vec<&Peer> = inner
            .entries
            .values()
            .filter(|e| e.myself && !e.peer.bad && e.peer.last_good > cutoff)
            .map(|e| &e.peer)
            .collect();
        if discovery == Discovery::SelfOnly {
            return Value::Array(mine.iter().map(|p| p.to_tuple()).collect());
        }
        let recent: Vec<&Peer> = inner
            .entries
            .values()
            .filter(|e| {
                (e.myself && mine.iter().any(|m| std::ptr::eq(*m, &e.peer)))
                    || Self::recent_good(&inner, &e.peer, cutoff, allow_private)
            })
            .map(|e| &e.peer)
            .collect();
        let mine_idx: Vec<usize> = recent
            .iter()
            .enumerate()
            .filter(|(_, p)| mine.iter().any(|m| std::ptr::eq(*m, **p)))
            .map(|(i, _)| i)
            .collect();
        let requester_is_tor = match (remote, inner.proxy) {
            (Some(r), Some(p)) => r.to_canonical() == p.ip().to_canonical(),
            _ => false,
        };
        let chosen =
            rules::select_for_subscribe(&recent, &mine_idx, requester_is_tor, &mut rand::rng());
        Value::Array(chosen.into_iter().map(|i| recent[i].to_tuple()).collect())
    }

    /// `server.add_peer(features)` from a client at `remote`: accepted (true) when discovery
    /// is on, the first host is public, its bucket has not added a peer in the last 10
    /// minutes, and a clearnet host resolves to the caller's address (onion hosts: one per
    /// random 0–20 min window). The peer is listed only once verified.
    pub async fn add_peer(&self, features: &Value, remote: Option<IpAddr>) -> bool {
        if self.discovery() != Discovery::On {
            return false;
        }
        let Some(source_ip) = remote.map(|r| r.to_canonical()) else {
            tracing::info!("ignored add_peer request: no source info");
            return false;
        };
        let source = source_ip.to_string();
        let Some(peer) = Peer::from_features(features, &source).into_iter().next() else {
            tracing::info!("ignored add_peer request from {source}: no peers given");
            return false;
        };
        let host = peer.host.clone();
        if !peer.is_public(self.allow_private()) {
            tracing::info!(
                "ignored add_peer request from {source} for {host:?}: not a public host"
            );
            return false;
        }
        let now = unix_now();
        let pause = self.schedule().add_pause_secs;
        let bucket = netaddr::add_peer_bucket(&host);
        {
            let mut inner = self.inner.lock();
            if inner.recent_adds.len() >= MAX_ADD_BUCKETS {
                inner.recent_adds.retain(|_, t| *t + pause >= now);
            }
            let last = inner.recent_adds.insert(bucket.clone(), now).unwrap_or(0.0);
            if last + pause >= now {
                tracing::info!(
                    "ignored add_peer request from {source} for {host}: bucket {bucket} added a peer in the last {pause} s"
                );
                return false;
            }
        }
        let (permit, reason) = if peer.is_tor() {
            let mut inner = self.inner.lock();
            if inner.proxy.is_none() {
                (false, "no Tor proxy")
            } else if now < inner.permit_onion_at {
                (false, "rate limiting")
            } else {
                inner.permit_onion_at = now + rand::rng().random_range(0.0..1200.0);
                (true, "")
            }
        } else {
            match tokio::time::timeout(
                RESOLVE_TIMEOUT,
                tokio::net::lookup_host((host.as_str(), 80)),
            )
            .await
            {
                Ok(Ok(addrs)) => {
                    let ok = addrs.take(32).any(|a| a.ip().to_canonical() == source_ip);
                    (ok, "source-destination mismatch")
                }
                _ => (false, "address resolution failure"),
            }
        };
        if permit {
            tracing::info!("accepted add_peer request from {source} for {host:?}");
            self.note_peers(vec![peer], None, true, &source);
        } else {
            tracing::warn!("rejected add_peer request from {source} for {host:?} ({reason})");
        }
        permit
    }

    // ----- the record -----

    fn recent_good(inner: &Inner, p: &Peer, cutoff: f64, allow_private: bool) -> bool {
        p.last_good > cutoff
            && !p.bad
            && p.is_public(allow_private)
            && !inner.blacklist.contains(&p.host, p.ip_addr)
    }

    /// Adds the candidates not known yet (at most `limit`, chosen at random), each to be
    /// verified at once; known ones with other ports are retried when `check_ports`.
    fn note_peers(
        &self,
        peers: Vec<Peer>,
        limit: Option<usize>,
        check_ports: bool,
        source: &str,
    ) -> usize {
        let allow_private = self.allow_private();
        let now = Instant::now();
        let mut inner = self.inner.lock();
        let mut new: Vec<Peer> = Vec::new();
        for p in peers {
            if !p.is_public(allow_private) {
                continue;
            }
            if p.is_tor() && inner.proxy.is_none() {
                if !inner.onion_skip_logged {
                    tracing::info!(
                        "onion peers are skipped: no Tor proxy found (TOR_PROXY_HOST, TOR_PROXY_PORT)"
                    );
                    inner.onion_skip_logged = true;
                }
                continue;
            }
            let matching: Vec<u64> = inner
                .entries
                .iter()
                .filter(|(_, e)| p.matches(&e.peer))
                .map(|(id, _)| *id)
                .collect();
            if !matching.is_empty() {
                if check_ports {
                    for id in matching {
                        if let Some(e) = inner.entries.get_mut(&id)
                            && e.peer.check_ports(&p)
                        {
                            tracing::info!("ports changed for {}", e.peer);
                            e.next_try = now;
                        }
                    }
                }
            } else if !new.iter().any(|n| n.matches(&p)) {
                new.push(p);
            }
        }
        if let Some(limit) = limit {
            new.shuffle(&mut rand::rng());
            new.truncate(limit);
        }
        let mut added = 0;
        for p in new {
            if inner.entries.len() >= MAX_PEERS {
                tracing::debug!("peer {p} from {source} ignored: {MAX_PEERS} peers known");
                break;
            }
            tracing::info!("accepted new peer {p} from {source}");
            Self::insert(&mut inner, p, false, now);
            added += 1;
        }
        if added > 0 {
            inner.dirty = true;
            drop(inner);
            self.wake.notify_one();
        }
        added
    }

    fn insert(inner: &mut Inner, peer: Peer, myself: bool, next_try: Instant) {
        let id = inner.next_id;
        inner.next_id += 1;
        inner.entries.insert(
            id,
            Entry {
                peer,
                myself,
                next_try,
                busy: false,
            },
        );
    }

    /// Our identities, then (discovery on) saved peers and the coin's seeds.
    fn import(&self) {
        let Some(cfg) = &self.cfg else { return };
        let now = Instant::now();
        {
            let mut inner = self.inner.lock();
            for me in self.myselves() {
                // An onion identity waits for the proxy (retried when one is found).
                if !me.is_public(cfg.allow_private) {
                    continue;
                }
                Self::insert(&mut inner, me, true, now);
            }
        }
        if cfg.discovery != Discovery::On {
            return;
        }
        if let Some(path) = &cfg.state_file {
            let saved = store::load(path);
            let count = saved.len();
            let mut inner = self.inner.lock();
            let mut restored = 0;
            for p in saved {
                let usable = p.is_public(cfg.allow_private)
                    && (!p.is_tor() || inner.proxy.is_some())
                    && !inner.entries.values().any(|e| p.matches(&e.peer));
                if usable && inner.entries.len() < MAX_PEERS {
                    Self::insert(&mut inner, p, false, now);
                    restored += 1;
                }
            }
            if count > 0 {
                tracing::info!(
                    "{restored} of {count} saved peers restored from {}",
                    path.display()
                );
            }
        }
        let (tcp, ssl) = (cfg.default_tcp_port, cfg.default_ssl_port);
        let seeds: Vec<Peer> = cfg
            .seeds
            .iter()
            .map(|s| Peer::from_real_name(s, "coins.py", tcp, ssl))
            .collect();
        self.note_peers(seeds, None, false, "coins.py");
        self.wake.notify_one();
    }

    /// Takes the peers due for verification (at most `max`), and the time the next one is due.
    fn take_due(&self, max: usize) -> (Vec<Job>, Option<Instant>) {
        let now = Instant::now();
        let mut inner = self.inner.lock();
        let mut jobs = Vec::new();
        let mut next: Option<Instant> = None;
        for (id, e) in inner.entries.iter_mut() {
            if e.busy {
                continue;
            }
            if e.next_try <= now && jobs.len() < max {
                e.busy = true;
                e.peer.try_count = e.peer.try_count.saturating_add(1);
                let attempts = e.peer.connection_attempts();
                jobs.push(Job {
                    id: *id,
                    peer: e.peer.clone(),
                    myself: e.myself,
                    attempts,
                });
            } else {
                next = Some(next.map_or(e.next_try, |n| n.min(e.next_try)));
            }
        }
        (jobs, next)
    }

    /// Records the address reached and applies the rules that need it; `Err(reason)` marks
    /// the peer bad.
    fn pre_check(&self, id: u64, host: &str, ip: Option<IpAddr>) -> Result<(), String> {
        let now = unix_now();
        let cutoff = now - self.schedule().stale_secs;
        let allow_private = self.allow_private();
        let mut inner = self.inner.lock();
        let Some(e) = inner.entries.get_mut(&id) else {
            return Err("forgotten meanwhile".into());
        };
        if !netaddr::is_onion(host) {
            e.peer.ip_addr = ip;
            e.peer.last_try = now;
        }
        let peer = e.peer.clone();
        if inner.blacklist.contains(host, ip) {
            return Err("blacklisted".into());
        }
        let others: Vec<&Peer> = inner
            .entries
            .iter()
            .filter(|(other, e)| {
                **other != id && Self::recent_good(&inner, &e.peer, cutoff, allow_private)
            })
            .map(|(_, e)| &e.peer)
            .collect();
        rules::bucket_rule(&peer, &others)
    }

    /// What to register with a peer that listed `their_peers`: our features, when announcing
    /// and our clearnet identity is public and not listed there with the same ports.
    fn features_to_register(&self, myself: bool, their_peers: &[Peer]) -> Option<Value> {
        let cfg = self.cfg.as_ref()?;
        if cfg.discovery != Discovery::On || !cfg.announce || myself {
            return None;
        }
        let my = {
            let inner = self.inner.lock();
            inner
                .entries
                .values()
                .find(|e| e.myself && !e.peer.is_tor())
                .map(|e| e.peer.clone())
        }
        .or_else(|| self.myselves().into_iter().find(|p| !p.is_tor()))?;
        if !my.is_public(cfg.allow_private) {
            return None;
        }
        let listed = their_peers.iter().any(|p| {
            p.matches(&my) && p.tcp_port() == my.tcp_port() && p.ssl_port() == my.ssl_port()
        });
        (!listed).then(|| cfg.our_features.clone())
    }

    fn proxy(&self) -> Option<SocketAddr> {
        self.inner.lock().proxy
    }

    // ----- the work -----

    /// Runs discovery until `shutdown`: finds the proxy, imports peers, fetches the
    /// blacklist, and verifies peers on their schedule. Returns at once when discovery is
    /// off. `chain` is our index (tip and headers).
    pub async fn run(self: Arc<Self>, chain: Arc<dyn OurChain>, shutdown: CancellationToken) {
        let Some(cfg) = self.cfg.clone() else { return };
        tracing::info!("peer discovery: {}", cfg.discovery.name());
        if cfg.discovery == Discovery::Off {
            tracing::info!("peer discovery is disabled");
            return;
        }
        tracing::info!("announce ourself: {}", cfg.announce);
        tracing::info!(
            "my clearnet self: {}",
            self.real_name().unwrap_or_else(|| "none".into())
        );
        tracing::info!("force use of proxy: {}", cfg.force_proxy);
        let _save = SaveOnDrop(self.clone());
        let mut tasks = tokio::task::JoinSet::new();
        if !self.detect_proxy(&cfg).await {
            tasks.spawn(self.clone().proxy_loop(cfg.clone(), shutdown.clone()));
        }
        if cfg.discovery == Discovery::On
            && let Some(url) = cfg.blacklist_url.clone()
        {
            tasks.spawn(self.clone().blacklist_loop(url, shutdown.clone()));
        }
        self.import();
        tracing::info!("beginning peer discovery...");
        let dialer = Arc::new(Dialer::new(cfg.local_addr, cfg.allow_private));
        self.schedule_loop(&cfg, chain, dialer, shutdown).await;
        tasks.shutdown().await;
    }

    async fn detect_proxy(&self, cfg: &PeerConfig) -> bool {
        let ports: Vec<u16> = match cfg.proxy_port {
            Some(p) => vec![p],
            None => PROXY_PORTS.to_vec(),
        };
        tracing::info!(
            "trying to detect proxy on \"{}\" ports {ports:?}",
            cfg.proxy_host
        );
        match socks::detect(&cfg.proxy_host, &ports).await {
            Some(addr) => {
                tracing::info!("detected SOCKS5 proxy at {addr}");
                let now = Instant::now();
                let mut inner = self.inner.lock();
                inner.proxy = Some(addr);
                for e in inner.entries.values_mut() {
                    if e.peer.is_tor() || cfg.force_proxy {
                        e.next_try = now;
                    }
                }
                drop(inner);
                self.wake.notify_one();
                true
            }
            None => {
                tracing::info!("no proxy detected, will try later");
                false
            }
        }
    }

    async fn proxy_loop(self: Arc<Self>, cfg: PeerConfig, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(PROXY_RETRY) => {}
            }
            if self.detect_proxy(&cfg).await {
                return;
            }
        }
    }

    async fn blacklist_loop(self: Arc<Self>, url: String, shutdown: CancellationToken) {
        loop {
            match Blacklist::fetch(&url).await {
                Ok(list) => {
                    tracing::info!("blacklist from {url} has {} entries", list.len());
                    let now = Instant::now();
                    let mut inner = self.inner.lock();
                    let Inner {
                        entries, blacklist, ..
                    } = &mut *inner;
                    *blacklist = list;
                    for e in entries.values_mut() {
                        if blacklist.contains(&e.peer.host, e.peer.ip_addr) {
                            e.next_try = now;
                        }
                    }
                    drop(inner);
                    self.wake.notify_one();
                }
                Err(e) => tracing::error!("could not retrieve blacklist from {url}: {e}"),
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(blacklist::REFRESH) => {}
            }
        }
    }

    async fn schedule_loop(
        self: &Arc<Self>,
        cfg: &PeerConfig,
        chain: Arc<dyn OurChain>,
        dialer: Arc<Dialer>,
        shutdown: CancellationToken,
    ) {
        let permits = Arc::new(Semaphore::new(MAX_CONCURRENT));
        let mut running = tokio::task::JoinSet::new();
        let mut save_tick = tokio::time::interval(SAVE_INTERVAL);
        save_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let version_args = json!([
            crate::protocol::version::server_version(),
            [
                crate::protocol::version::MIN.to_string(),
                crate::protocol::version::MAX.to_string()
            ]
        ]);
        loop {
            let free = permits.available_permits();
            let (jobs, next) = self.take_due(free);
            for job in jobs {
                let Ok(permit) = permits.clone().try_acquire_owned() else {
                    break;
                };
                let (mgr, chain, dialer) = (self.clone(), chain.clone(), dialer.clone());
                let expect_args = (version_args.clone(), cfg.genesis_hash.clone());
                running.spawn(async move {
                    let _permit = permit;
                    mgr.check(job, chain.as_ref(), &dialer, expect_args).await;
                });
            }
            let wait = match next {
                Some(t) if permits.available_permits() > 0 => {
                    t.saturating_duration_since(Instant::now())
                }
                _ => Duration::from_secs(3600),
            };
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(wait) => {}
                Some(_) = running.join_next(), if !running.is_empty() => {}
                _ = save_tick.tick() => self.save().await,
            }
        }
        running.abort_all();
        while running.join_next().await.is_some() {}
    }

    /// Verifies one peer: each (transport, port) in turn until one answers.
    async fn check(
        &self,
        job: Job,
        chain: &dyn OurChain,
        dialer: &Dialer,
        (version_args, genesis): (Value, String),
    ) {
        let Some(cfg) = &self.cfg else { return };
        let peer = &job.peer;
        let tor = peer.is_tor();
        let timeout = if tor { ONION_TIMEOUT } else { CLEARNET_TIMEOUT };
        let expect = Expect {
            host: &peer.host,
            genesis: &genesis,
            version_args,
            default_ports: (cfg.default_tcp_port, cfg.default_ssl_port),
        };
        let mut outcome = Outcome::Failed;
        for (transport, port) in job.attempts.iter().copied() {
            let started = unix_now();
            if let Some(e) = self.inner.lock().entries.get_mut(&job.id) {
                e.peer.last_try = started;
            }
            let proxy = if cfg.force_proxy || tor {
                match self.proxy() {
                    Some(p) => Some(p),
                    None => {
                        tracing::debug!("[{peer}] not tried: no proxy");
                        outcome = Outcome::NoProxy;
                        break;
                    }
                }
            } else {
                None
            };
            let text = format!("[{peer}:{port} {}]", transport.name());
            let (stream, ip) = match tokio::time::timeout(
                timeout,
                dialer.dial(&peer.host, port, transport, proxy),
            )
            .await
            {
                Ok(Ok(d)) => d,
                Ok(Err(e)) => {
                    tracing::info!("{text} {e}");
                    continue;
                }
                Err(_) => {
                    tracing::info!("{text} connection timed out");
                    continue;
                }
            };
            if let Err(reason) = self.pre_check(job.id, &peer.host, ip) {
                tracing::error!("{text} marking bad: ({reason})");
                outcome = Outcome::Bad;
                break;
            }
            let mut conn = RpcConn::new(stream, timeout);
            match verify::verify(&mut conn, &expect, chain).await {
                Ok(verified) => {
                    if cfg.discovery == Discovery::On {
                        self.note_peers(
                            verified.peers.clone(),
                            Some(MAX_NEW_PER_SOURCE),
                            false,
                            &peer.host,
                        );
                    }
                    if let Some(features) = self.features_to_register(job.myself, &verified.peers) {
                        tracing::info!("registering ourself with {peer}");
                        match conn.call("server.add_peer", json!([features])).await {
                            Ok(answer) => tracing::debug!("{text} server.add_peer: {answer}"),
                            Err(e) => tracing::info!("{text} server.add_peer failed: {e}"),
                        }
                    }
                    outcome = Outcome::Good {
                        ip,
                        verified: Box::new(verified),
                        text,
                        started,
                    };
                    break;
                }
                Err(Failure::Bad(reason)) => {
                    tracing::error!("{text} marking bad: ({reason})");
                    outcome = Outcome::Bad;
                    break;
                }
                Err(Failure::Rpc(m)) => tracing::error!("{text} RPC error: {m}"),
                Err(Failure::Net(m)) => tracing::info!("{text} {m}"),
            }
        }
        self.finish(job.id, outcome);
    }

    /// Applies a verification's outcome to the record and schedules the next attempt.
    fn finish(&self, id: u64, outcome: Outcome) {
        let schedule = self.schedule();
        let allow_private = self.allow_private();
        let now = unix_now();
        let cutoff = now - schedule.stale_secs;
        let mut inner = self.inner.lock();
        inner.dirty = true;
        let Some(e) = inner.entries.get(&id) else {
            return;
        };
        let myself = e.myself;
        let mut good = false;
        // Without a proxy nothing was tried: ElectrumX does not count that towards forgetting.
        let untried = matches!(outcome, Outcome::NoProxy);
        match outcome {
            Outcome::Good {
                ip,
                verified,
                text,
                started,
            } => {
                // Another peer of the same bucket may have been verified meanwhile.
                let mut candidate = e.peer.clone();
                candidate.ip_addr = if candidate.is_tor() { None } else { ip };
                let others: Vec<&Peer> = inner
                    .entries
                    .iter()
                    .filter(|(other, e)| {
                        **other != id && Self::recent_good(&inner, &e.peer, cutoff, allow_private)
                    })
                    .map(|(_, e)| &e.peer)
                    .collect();
                if let Err(reason) = rules::bucket_rule(&candidate, &others) {
                    tracing::error!("{text} marking bad: ({reason})");
                    if let Some(e) = inner.entries.get_mut(&id) {
                        e.peer.bad = true;
                    }
                } else {
                    tracing::info!("{text} verified in {:.1}s", now - started);
                    let mut features = verified.features;
                    if features.server_version.is_none() {
                        features.server_version = Some(verified.server_version);
                    }
                    if let Some(e) = inner.entries.get_mut(&id) {
                        let p = &mut e.peer;
                        p.ip_addr = candidate.ip_addr;
                        p.try_count = 0;
                        p.last_good = now;
                        p.bad = false;
                        if !myself {
                            p.source = "peer".into();
                        }
                        p.update_features(features);
                    }
                    good = true;
                    Self::merge_matches(&mut inner, id);
                    let pause = schedule.add_pause_secs;
                    inner.recent_adds.retain(|_, t| *t + pause >= now);
                }
            }
            Outcome::Bad => {
                if let Some(e) = inner.entries.get_mut(&id) {
                    e.peer.bad = true;
                }
            }
            Outcome::Failed | Outcome::NoProxy => {}
        }
        let Some(e) = inner.entries.get_mut(&id) else {
            return;
        };
        e.busy = false;
        if !good && !myself && !untried && rules::should_forget(&e.peer) {
            let desc = if e.peer.bad { "bad" } else { "unreachable" };
            tracing::info!("forgetting {desc} peer: {}", e.peer);
            inner.entries.remove(&id);
            return;
        }
        e.next_try = Instant::now() + schedule.pause(e.peer.try_count);
    }

    /// After verifying `id`: drops IP-literal duplicates of it (a host name wins over its
    /// address) and shares its features with other records of the same host.
    fn merge_matches(inner: &mut Inner, id: u64) {
        let Some(me) = inner.entries.get(&id).map(|e| e.peer.clone()) else {
            return;
        };
        let matches: Vec<u64> = inner
            .entries
            .iter()
            .filter(|(_, e)| me.matches(&e.peer))
            .map(|(i, _)| *i)
            .collect();
        if matches.len() > 1 {
            for m in &matches {
                let literal = inner
                    .entries
                    .get(m)
                    .is_some_and(|e| e.peer.ip_literal().is_some() && !e.myself);
                if literal
                    && inner.entries.len() > 1
                    && let Some(e) = inner.entries.remove(m)
                {
                    tracing::info!("dropping {} in favour of {}", e.peer, me);
                }
            }
        }
        for m in matches {
            if m == id {
                continue;
            }
            if let Some(e) = inner.entries.get_mut(&m)
                && e.peer.ip_literal().is_none()
                && me.features.hosts.contains_key(&e.peer.host)
            {
                e.peer.update_features(me.features.clone());
            }
        }
    }

    /// What to save: known peers (good once, not bad, not ourselves), when they changed or
    /// `force`, and discovery is on with a state file.
    fn to_save(&self, force: bool) -> Option<(PathBuf, Vec<Peer>)> {
        let path = self.cfg.as_ref().and_then(|c| c.state_file.clone())?;
        if self.discovery() != Discovery::On {
            return None;
        }
        let mut inner = self.inner.lock();
        if !inner.dirty && !force {
            return None;
        }
        inner.dirty = false;
        let peers = inner
            .entries
            .values()
            .filter(|e| !e.myself && !e.peer.bad && e.peer.last_good > 0.0)
            .map(|e| e.peer.clone())
            .collect();
        Some((path, peers))
    }

    fn write(path: &std::path::Path, peers: &[Peer]) {
        match store::save(path, peers) {
            Ok(()) => tracing::debug!("{} peers saved to {}", peers.len(), path.display()),
            Err(e) => tracing::warn!("cannot save peers to {}: {e}", path.display()),
        }
    }

    /// Saves known peers when they changed, off the runtime's threads.
    async fn save(&self) {
        if let Some((path, peers)) = self.to_save(false) {
            let _ = tokio::task::spawn_blocking(move || Self::write(&path, &peers)).await;
        }
    }
}

/// Saves known peers when discovery ends, however it ends (the task may be dropped at
/// shutdown rather than return).
struct SaveOnDrop(Arc<PeerManager>);

impl Drop for SaveOnDrop {
    fn drop(&mut self) {
        if let Some((path, peers)) = self.0.to_save(true) {
            PeerManager::write(&path, &peers);
        }
    }
}

#[cfg(test)]
mod tests;
