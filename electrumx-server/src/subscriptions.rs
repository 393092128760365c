//! The subscription registry: which session follows headers and which scripts, and the
//! status each was last sent, so a notification goes out only when a status changed.

use electrumx_core::{HashX, ScriptHash};
use parking_lot::Mutex;
use std::collections::{HashMap, HashSet};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// A session's outgoing message queue.
pub type Outbox = mpsc::Sender<String>;

struct SessionSubs {
    outbox: Outbox,
    kill: CancellationToken,
    headers: bool,
    scripts: HashMap<ScriptHash, Option<String>>,
}

#[derive(Default)]
struct Registry {
    sessions: HashMap<u64, SessionSubs>,
    by_hashx: HashMap<HashX, HashSet<(u64, ScriptHash)>>,
}

/// Subscriptions of all sessions (see the module docs).
#[derive(Default)]
pub struct Subscriptions {
    inner: Mutex<Registry>,
}

impl Subscriptions {
    /// Registers a session; `kill` is cancelled if the session stops reading its messages.
    pub fn add_session(&self, id: u64, outbox: Outbox, kill: CancellationToken) {
        self.inner.lock().sessions.insert(
            id,
            SessionSubs {
                outbox,
                kill,
                headers: false,
                scripts: HashMap::new(),
            },
        );
    }

    /// Forgets a session and its subscriptions.
    pub fn remove_session(&self, id: u64) {
        let mut reg = self.inner.lock();
        if let Some(s) = reg.sessions.remove(&id) {
            for sh in s.scripts.keys() {
                let hx = sh.hashx();
                if let Some(set) = reg.by_hashx.get_mut(&hx) {
                    set.remove(&(id, *sh));
                    if set.is_empty() {
                        reg.by_hashx.remove(&hx);
                    }
                }
            }
        }
    }

    /// Subscribes a session to header notifications.
    pub fn subscribe_headers(&self, id: u64) {
        if let Some(s) = self.inner.lock().sessions.get_mut(&id) {
            s.headers = true;
        }
    }

    /// Subscribes a session to a script, recording the status it was given.
    pub fn subscribe_script(&self, id: u64, sh: ScriptHash, status: Option<String>) {
        let mut reg = self.inner.lock();
        if let Some(s) = reg.sessions.get_mut(&id) {
            s.scripts.insert(sh, status);
            reg.by_hashx.entry(sh.hashx()).or_default().insert((id, sh));
        }
    }

    /// Unsubscribes; true if the session was subscribed.
    pub fn unsubscribe_script(&self, id: u64, sh: &ScriptHash) -> bool {
        let mut reg = self.inner.lock();
        let was = reg
            .sessions
            .get_mut(&id)
            .is_some_and(|s| s.scripts.remove(sh).is_some());
        if was && let Some(set) = reg.by_hashx.get_mut(&sh.hashx()) {
            set.remove(&(id, *sh));
            if set.is_empty() {
                reg.by_hashx.remove(&sh.hashx());
            }
        }
        was
    }

    /// Number of script subscriptions of a session.
    pub fn script_count(&self, id: u64) -> usize {
        self.inner
            .lock()
            .sessions
            .get(&id)
            .map_or(0, |s| s.scripts.len())
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

    /// Sends `message` for `sh` to each subscribed session whose last status differs from
    /// `status`. A session whose queue is full is disconnected.
    pub fn notify_script(&self, sh: &ScriptHash, status: &Option<String>, message: &str) {
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
            match s.scripts.get_mut(sh) {
                Some(last) if last != status => {
                    *last = status.clone();
                    if s.outbox.try_send(message.to_string()).is_err() {
                        s.kill.cancel();
                    }
                }
                _ => {}
            }
        }
    }

    /// Sends a header notification to every session that subscribed to headers.
    pub fn notify_headers(&self, message: &str) {
        let reg = self.inner.lock();
        for s in reg.sessions.values() {
            if s.headers && s.outbox.try_send(message.to_string()).is_err() {
                s.kill.cancel();
            }
        }
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

    /// Number of sessions and of script subscriptions.
    pub fn counts(&self) -> (usize, usize) {
        let reg = self.inner.lock();
        (
            reg.sessions.len(),
            reg.sessions.values().map(|s| s.scripts.len()).sum(),
        )
    }
}
