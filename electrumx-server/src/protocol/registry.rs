//! The live sessions, each with its one record ([`SessionEntry`]): identity, the queue of
//! messages to it, its counters. What LocalRPC's `sessions`, `groups`, `disconnect`, `log`,
//! `inspect_session` and `getinfo` report, what the metrics service exports, and what the
//! subscriptions deliver notifications through.
//!
//! Sessions update their own counters (atomics, no lock on the request path); the registry's
//! lock is taken only when a session opens or closes and when an operator asks.

use crate::protocol::outgoing::Outbox;
use crate::services::Protocol;
use parking_lot::Mutex;
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Instant, SystemTime};
use tokio_util::sync::CancellationToken;

/// Counters of one session.
#[derive(Default, Debug)]
pub struct SessionCounters {
    /// Messages received.
    pub recv_count: AtomicU64,
    /// Bytes received.
    pub recv_size: AtomicU64,
    /// Messages sent (replies and notifications).
    pub send_count: AtomicU64,
    /// Bytes sent.
    pub send_size: AtomicU64,
    /// Requests answered.
    pub requests: AtomicU64,
    /// Requests answered with an error.
    pub errors: AtomicU64,
    /// Transactions broadcast.
    pub txs_sent: AtomicU64,
    /// Requests being processed.
    pub pending: AtomicU64,
    /// Requests the session may have in progress at once (`INITIAL_CONCURRENT`, lowered
    /// by the cost model); 0 until its first request.
    pub concurrency: AtomicU64,
    /// Current cost, as `f64` bits.
    cost_bits: AtomicU64,
    /// Cost borne from the session's group, as `f64` bits.
    extra_cost_bits: AtomicU64,
    /// Scripts subscribed to (kept by [`crate::protocol::subscriptions`]).
    pub script_subs: AtomicU64,
    /// Outpoints subscribed to (kept by [`crate::protocol::subscriptions`]).
    pub outpoint_subs: AtomicU64,
}

impl SessionCounters {
    /// Records the session's current cost.
    pub fn set_cost(&self, cost: f64) {
        self.cost_bits.store(cost.to_bits(), Ordering::Relaxed);
    }

    /// The session's cost as last recorded.
    pub fn cost(&self) -> f64 {
        f64::from_bits(self.cost_bits.load(Ordering::Relaxed))
    }

    /// Records the cost borne from the session's group.
    pub fn set_extra_cost(&self, cost: f64) {
        self.extra_cost_bits
            .store(cost.to_bits(), Ordering::Relaxed);
    }

    /// The cost borne from the session's group, as last recorded (ElectrumX's `XCost`).
    pub fn extra_cost(&self) -> f64 {
        f64::from_bits(self.extra_cost_bits.load(Ordering::Relaxed))
    }

    /// Script and outpoint subscriptions.
    pub fn subscription_counts(&self) -> (usize, usize) {
        (
            self.script_subs.load(Ordering::Relaxed) as usize,
            self.outpoint_subs.load(Ordering::Relaxed) as usize,
        )
    }

    /// Script and outpoint subscriptions together (what the cost model charges for).
    pub fn subscriptions(&self) -> usize {
        let (scripts, outpoints) = self.subscription_counts();
        scripts + outpoints
    }
}

/// One connected client: the one record of a session, shared by its reader, its running
/// requests, the subscriptions (which notify through its outbox) and the registry.
#[derive(Debug)]
pub struct SessionEntry {
    /// Session id (LocalRPC `sessions`, logs).
    pub id: u64,
    /// Transport it came in on.
    pub protocol: Protocol,
    /// Remote address.
    pub peer: SocketAddr,
    /// Cost group (subnet) name, `None` for exempt addresses.
    pub group: Option<String>,
    /// When it connected.
    pub started: Instant,
    /// Client name from `server.version` (empty before).
    pub client: Mutex<String>,
    /// Negotiated protocol version (empty before).
    pub protocol_version: Mutex<String>,
    /// Whether its requests are logged (LocalRPC `log`).
    pub log_me: AtomicBool,
    /// Cancelled to close the session.
    pub kill: CancellationToken,
    /// Its queue of messages (replies and notifications) to the writer.
    pub outbox: Outbox,
    /// Traffic and request counters.
    pub counters: SessionCounters,
    /// Requests per method.
    pub method_counts: Mutex<HashMap<&'static str, u64>>,
}

impl SessionEntry {
    /// ElectrumX's flags column: the transport's letter, `C` if closing, `L` if logged, then
    /// the requests it may have in flight.
    pub fn flags(&self) -> String {
        let mut f = String::new();
        f.push(match self.protocol {
            Protocol::Tcp => 'T',
            Protocol::Ssl => 'S',
            Protocol::Ws | Protocol::Wss => 'W',
            Protocol::Rpc | Protocol::Metrics => 'R',
        });
        if self.kill.is_cancelled() {
            f.push('C');
        }
        if self.log_me.load(Ordering::Relaxed) {
            f.push('L');
        }
        let n = self.counters.concurrency.load(Ordering::Relaxed).max(1);
        f.push_str(&n.to_string());
        f
    }
}

/// Every live session, plus server-wide request totals.
pub struct SessionRegistry {
    sessions: Mutex<BTreeMap<u64, Arc<SessionEntry>>>,
    log_new: AtomicBool,
    txs_sent: AtomicU64,
    accepted: AtomicU64,
    started: Instant,
    started_unix: SystemTime,
}

impl Default for SessionRegistry {
    fn default() -> Self {
        SessionRegistry {
            sessions: Mutex::new(BTreeMap::new()),
            log_new: AtomicBool::new(false),
            txs_sent: AtomicU64::new(0),
            accepted: AtomicU64::new(0),
            started: Instant::now(),
            started_unix: SystemTime::now(),
        }
    }
}

impl SessionRegistry {
    /// Registers a new session and returns its entry.
    pub fn open(
        &self,
        id: u64,
        protocol: Protocol,
        peer: SocketAddr,
        group: Option<String>,
        kill: CancellationToken,
        outbox: Outbox,
    ) -> Arc<SessionEntry> {
        let entry = Arc::new(SessionEntry {
            id,
            protocol,
            peer,
            group,
            started: Instant::now(),
            client: Mutex::new(String::new()),
            protocol_version: Mutex::new(String::new()),
            log_me: AtomicBool::new(self.log_new.load(Ordering::Relaxed)),
            kill,
            outbox,
            counters: SessionCounters::default(),
            method_counts: Mutex::new(HashMap::new()),
        });
        self.accepted.fetch_add(1, Ordering::Relaxed);
        self.sessions.lock().insert(id, entry.clone());
        entry
    }

    /// Forgets a closed session.
    pub fn close(&self, id: u64) {
        self.sessions.lock().remove(&id);
    }

    /// Counts one request of a session to `method` (a known method name or `"unknown"`).
    /// Server-wide counts are in [`crate::admin::metrics::RequestMetrics`].
    pub fn count_request(&self, entry: &SessionEntry, method: &'static str, error: bool) {
        *entry.method_counts.lock().entry(method).or_default() += 1;
        entry.counters.requests.fetch_add(1, Ordering::Relaxed);
        if error {
            entry.counters.errors.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Counts one transaction broadcast.
    pub fn count_tx_sent(&self, entry: &SessionEntry) {
        self.txs_sent.fetch_add(1, Ordering::Relaxed);
        entry.counters.txs_sent.fetch_add(1, Ordering::Relaxed);
    }

    /// The live sessions, oldest first.
    pub fn list(&self) -> Vec<Arc<SessionEntry>> {
        self.sessions.lock().values().cloned().collect()
    }

    /// One session by id.
    pub fn get(&self, id: u64) -> Option<Arc<SessionEntry>> {
        self.sessions.lock().get(&id).cloned()
    }

    /// Number of live sessions.
    pub fn len(&self) -> usize {
        self.sessions.lock().len()
    }

    /// True if no session is connected.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Sessions accepted since start.
    pub fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
    }

    /// Transactions broadcast since start.
    pub fn txs_sent(&self) -> u64 {
        self.txs_sent.load(Ordering::Relaxed)
    }

    /// Whether sessions opened from now on are logged.
    pub fn log_new(&self) -> bool {
        self.log_new.load(Ordering::Relaxed)
    }

    /// Sets whether new sessions are logged.
    pub fn set_log_new(&self, on: bool) {
        self.log_new.store(on, Ordering::Relaxed);
    }

    /// Time since the server started.
    pub fn uptime(&self) -> std::time::Duration {
        self.started.elapsed()
    }

    /// When the server started (unix time).
    pub fn started_unix(&self) -> SystemTime {
        self.started_unix
    }

    /// Live sessions grouped by cost group, groups sorted by name.
    pub fn groups(&self) -> BTreeMap<String, Vec<Arc<SessionEntry>>> {
        let mut out: BTreeMap<String, Vec<Arc<SessionEntry>>> = BTreeMap::new();
        for s in self.list() {
            if let Some(g) = &s.group {
                out.entry(g.clone()).or_default().push(s);
            }
        }
        out
    }
}

/// Formats a duration as ElectrumX does: `1d 02h 03m`, `01h 39m 04s`, `04s` (leading zero
/// units left out; seconds only when fewer than three units precede them).
pub fn formatted_time(secs: u64, sep: &str) -> String {
    let mut t = secs;
    let mut parts = Vec::new();
    for (n, unit) in [(86400, 'd'), (3600, 'h'), (60, 'm')] {
        let v = t / n;
        if !parts.is_empty() || v > 0 {
            parts.push(if unit == 'd' {
                format!("{v}d")
            } else {
                format!("{v:02}{unit}")
            });
        }
        t %= n;
    }
    if parts.len() < 3 {
        parts.push(format!("{t:02}s"));
    }
    parts.join(sep)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formatted_time_matches_electrumx() {
        assert_eq!(formatted_time(4, " "), "04s");
        assert_eq!(formatted_time(5944, " "), "01h 39m 04s");
        assert_eq!(formatted_time(86400 + 61, " "), "1d 00h 01m");
        assert_eq!(formatted_time(125, ""), "02m05s");
    }

    #[test]
    fn registry_tracks_sessions_and_groups() {
        let reg = SessionRegistry::default();
        let peer: SocketAddr = "203.0.113.7:5000".parse().unwrap();
        let a = reg.open(
            1,
            Protocol::Tcp,
            peer,
            Some("203.0.113.0/24".into()),
            CancellationToken::new(),
            crate::protocol::outgoing::queue(1, 1).0,
        );
        let outbox = crate::protocol::outgoing::queue(1, 1).0;
        reg.open(
            2,
            Protocol::Ssl,
            peer,
            None,
            CancellationToken::new(),
            outbox,
        );
        reg.count_request(&a, "server.ping", false);
        reg.count_request(&a, "server.ping", true);
        assert_eq!(reg.len(), 2);
        assert_eq!(a.method_counts.lock()["server.ping"], 2);
        assert_eq!(a.counters.errors.load(Ordering::Relaxed), 1);
        assert_eq!(reg.groups()["203.0.113.0/24"].len(), 1);
        assert_eq!(a.flags(), "T1");
        a.log_me.store(true, Ordering::Relaxed);
        a.kill.cancel();
        assert_eq!(a.flags(), "TCL1");
        a.counters.concurrency.store(10, Ordering::Relaxed);
        assert_eq!(a.flags(), "TCL10");
        reg.close(1);
        assert_eq!(reg.len(), 1);
    }
}
