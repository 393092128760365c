//! The subscription registry: which session follows headers, which scripts (and through
//! which method: `scripthash` before protocol 1.7, `scriptpubkey` from it) and which
//! outpoints, with the status each was last sent, so a notification goes out only when a
//! status changed. A session whose queue is full is disconnected.

use crate::protocol::registry::SessionEntry;
use electrumx_core::{HashX, ScriptHash, Txid};
use parking_lot::Mutex;
use serde_json::Value;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;

/// An outpoint (funding txid, output index).
pub type Outpoint = (Txid, u32);

/// Which method a script subscription came through (decides the notification's name).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScriptMethod {
    /// `blockchain.scripthash.subscribe` (protocol ≤ 1.6).
    ScriptHash,
    /// `blockchain.scriptpubkey.subscribe` (protocol 1.7).
    ScriptPubKey,
}

impl ScriptMethod {
    /// The notification method name.
    pub fn notification(&self) -> &'static str {
        match self {
            ScriptMethod::ScriptHash => "blockchain.scripthash.subscribe",
            ScriptMethod::ScriptPubKey => "blockchain.scriptpubkey.subscribe",
        }
    }
}

/// A session's subscriptions; notifications go out through its record.
struct SessionSubs {
    entry: Arc<SessionEntry>,
    headers: bool,
    scripts: HashMap<ScriptHash, (Option<String>, ScriptMethod)>,
    outpoints: HashMap<Outpoint, Value>,
}

impl SessionSubs {
    fn send(&self, msg: String) {
        if self.entry.outbox.push(msg.into()).is_err() {
            self.entry.kill.cancel();
        }
    }

    /// Publishes the counts on the session's record (the cost model and LocalRPC read
    /// them there, without this registry's lock).
    fn recount(&self) {
        let c = &self.entry.counters;
        c.script_subs
            .store(self.scripts.len() as u64, Ordering::Relaxed);
        c.outpoint_subs
            .store(self.outpoints.len() as u64, Ordering::Relaxed);
    }
}

#[derive(Default)]
struct Registry {
    sessions: HashMap<u64, SessionSubs>,
    by_hashx: HashMap<HashX, HashSet<(u64, ScriptHash)>>,
    /// Notification rounds begun (see [`Subscriptions::begin_round`]).
    rounds: u64,
    /// Sessions subscribed to each outpoint.
    by_outpoint: HashMap<Outpoint, HashSet<u64>>,
    /// Subscribed outpoints whose funding transaction was last seen nowhere (status `{}`):
    /// re-checked every round, since it may appear in a block without passing through
    /// the mempool.
    unfunded: HashSet<Outpoint>,
}

/// Subscriptions of all sessions (see the module docs).
#[derive(Default)]
pub struct Subscriptions {
    inner: Mutex<Registry>,
}

impl Subscriptions {
    /// Registers a session; its `kill` is cancelled if it stops reading its messages.
    pub fn add_session(&self, entry: Arc<SessionEntry>) {
        let id = entry.id;
        let subs = SessionSubs {
            entry,
            headers: false,
            scripts: HashMap::new(),
            outpoints: HashMap::new(),
        };
        self.inner.lock().sessions.insert(id, subs);
    }

    /// Forgets a session and its subscriptions.
    pub fn remove_session(&self, id: u64) {
        let mut reg = self.inner.lock();
        if let Some(s) = reg.sessions.remove(&id) {
            for sh in s.scripts.keys() {
                unlink(&mut reg, id, sh);
            }
            for op in s.outpoints.keys() {
                unlink_outpoint(&mut reg, id, op);
            }
        }
    }

    /// Subscribes a session to header notifications.
    pub fn subscribe_headers(&self, id: u64) {
        if let Some(s) = self.inner.lock().sessions.get_mut(&id) {
            s.headers = true;
        }
    }

    /// The number of notification rounds begun so far: read it before computing a status
    /// to subscribe with.
    pub fn round(&self) -> u64 {
        self.inner.lock().rounds
    }

    /// Starts sending a round of notifications. A subscription whose status was computed
    /// before this and is recorded after it could have missed the round's change: its
    /// [`Subscriptions::subscribe_script`] is refused, and the status computed again.
    pub fn begin_round(&self) {
        self.inner.lock().rounds += 1;
    }

    /// Subscribes a session to a script, recording the status it is given, computed after
    /// [`Subscriptions::round`] returned `round`. False (nothing recorded) if a round of
    /// notifications began since: compute the status again.
    pub fn subscribe_script(
        &self,
        id: u64,
        sh: ScriptHash,
        status: Option<String>,
        method: ScriptMethod,
        round: u64,
    ) -> bool {
        let mut reg = self.inner.lock();
        if reg.rounds != round {
            return false;
        }
        if let Some(s) = reg.sessions.get_mut(&id) {
            s.scripts.insert(sh, (status, method));
            s.recount();
            reg.by_hashx.entry(sh.hashx()).or_default().insert((id, sh));
        }
        true
    }

    /// Unsubscribes; true if the session was subscribed.
    pub fn unsubscribe_script(&self, id: u64, sh: &ScriptHash) -> bool {
        let mut reg = self.inner.lock();
        let was = reg.sessions.get_mut(&id).is_some_and(|s| {
            let was = s.scripts.remove(sh).is_some();
            s.recount();
            was
        });
        if was {
            unlink(&mut reg, id, sh);
        }
        was
    }

    /// Subscribes a session to an outpoint with the status it was given.
    pub fn subscribe_outpoint(&self, id: u64, op: Outpoint, status: Value) {
        let mut reg = self.inner.lock();
        let unfunded = is_unfunded(&status);
        if let Some(s) = reg.sessions.get_mut(&id) {
            s.outpoints.insert(op, status);
            s.recount();
            reg.by_outpoint.entry(op).or_default().insert(id);
            if unfunded {
                reg.unfunded.insert(op);
            }
        }
    }

    /// Unsubscribes an outpoint; true if the session was subscribed.
    pub fn unsubscribe_outpoint(&self, id: u64, op: &Outpoint) -> bool {
        let mut reg = self.inner.lock();
        let was = reg.sessions.get_mut(&id).is_some_and(|s| {
            let was = s.outpoints.remove(op).is_some();
            s.recount();
            was
        });
        if was {
            unlink_outpoint(&mut reg, id, op);
        }
        was
    }

    /// The subscribed outpoints whose status may have changed: those among `touched`, and
    /// those whose funding transaction has not been seen yet.
    pub fn outpoints_among(&self, touched: &HashSet<Outpoint>) -> Vec<Outpoint> {
        let reg = self.inner.lock();
        let mut out: HashSet<Outpoint> = reg.unfunded.iter().copied().collect();
        if touched.len() < reg.by_outpoint.len() {
            out.extend(touched.iter().filter(|op| reg.by_outpoint.contains_key(op)));
        } else {
            out.extend(reg.by_outpoint.keys().filter(|op| touched.contains(op)));
        }
        out.into_iter().collect()
    }

    /// The subscribed scripts among `touched`.
    pub fn subscribed_among(&self, touched: &HashSet<HashX>) -> Vec<ScriptHash> {
        let reg = self.inner.lock();
        let mut out: HashSet<ScriptHash> = HashSet::new();
        for hx in touched {
            if let Some(set) = reg.by_hashx.get(hx) {
                out.extend(set.iter().map(|(_, sh)| *sh));
            }
        }
        out.into_iter().collect()
    }

    /// Every subscribed script.
    pub fn all_scripts(&self) -> Vec<ScriptHash> {
        let reg = self.inner.lock();
        let set: HashSet<ScriptHash> = reg
            .sessions
            .values()
            .flat_map(|s| s.scripts.keys().copied())
            .collect();
        set.into_iter().collect()
    }

    /// Every subscribed outpoint.
    pub fn all_outpoints(&self) -> Vec<Outpoint> {
        self.inner.lock().by_outpoint.keys().copied().collect()
    }

    /// Notifies each session subscribed to `sh` whose last status differs from `status`.
    pub fn notify_script(&self, sh: &ScriptHash, status: &Option<String>) {
        let mut reg = self.inner.lock();
        let ids: Vec<u64> = reg
            .by_hashx
            .get(&sh.hashx())
            .map(|set| {
                set.iter()
                    .filter(|(_, s)| s == sh)
                    .map(|(id, _)| *id)
                    .collect()
            })
            .unwrap_or_default();
        for id in ids {
            let Some(s) = reg.sessions.get_mut(&id) else {
                continue;
            };
            let Some((last, method)) = s.scripts.get_mut(sh) else {
                continue;
            };
            if last != status {
                *last = status.clone();
                let msg = crate::protocol::jsonrpc::notification(
                    method.notification(),
                    serde_json::json!([sh.to_hex(), status]),
                );
                s.send(msg.to_string());
            }
        }
    }

    /// Notifies each session subscribed to `op` whose last status differs from `status`.
    pub fn notify_outpoint(&self, op: &Outpoint, status: &Value) {
        let mut reg = self.inner.lock();
        if reg.by_outpoint.contains_key(op) {
            if is_unfunded(status) {
                reg.unfunded.insert(*op);
            } else {
                reg.unfunded.remove(op);
            }
        }
        let ids: Vec<u64> = reg
            .by_outpoint
            .get(op)
            .map(|ids| ids.iter().copied().collect())
            .unwrap_or_default();
        for id in ids {
            let Some(s) = reg.sessions.get_mut(&id) else {
                continue;
            };
            let Some(last) = s.outpoints.get_mut(op) else {
                continue;
            };
            if last != status {
                *last = status.clone();
                let params = serde_json::json!([op.0.to_display_hex(), op.1, status]);
                let msg =
                    crate::protocol::jsonrpc::notification("blockchain.outpoint.subscribe", params);
                s.send(msg.to_string());
            }
        }
    }

    /// Sends a header notification to every session that subscribed to headers.
    pub fn notify_headers(&self, message: &str) {
        let reg = self.inner.lock();
        for s in reg.sessions.values().filter(|s| s.headers) {
            s.send(message.to_string());
        }
    }

    /// Number of sessions and of subscriptions.
    pub fn counts(&self) -> (usize, usize) {
        let reg = self.inner.lock();
        (
            reg.sessions.len(),
            reg.sessions
                .values()
                .map(|s| s.scripts.len() + s.outpoints.len())
                .sum(),
        )
    }
}

/// Whether an outpoint status says its funding transaction was seen nowhere (`{}`).
fn is_unfunded(status: &Value) -> bool {
    status.as_object().is_some_and(|o| o.is_empty())
}

fn unlink_outpoint(reg: &mut Registry, id: u64, op: &Outpoint) {
    if let Some(set) = reg.by_outpoint.get_mut(op) {
        set.remove(&id);
        if set.is_empty() {
            reg.by_outpoint.remove(op);
            reg.unfunded.remove(op);
        }
    }
}

fn unlink(reg: &mut Registry, id: u64, sh: &ScriptHash) {
    let hx = sh.hashx();
    if let Some(set) = reg.by_hashx.get_mut(&hx) {
        set.remove(&(id, *sh));
        if set.is_empty() {
            reg.by_hashx.remove(&hx);
        }
    }
}
