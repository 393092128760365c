//! Readiness and liveness for load balancers and orchestrators (`GET /health` and
//! `GET /health/live` on the `metrics://` service).
//!
//! A server is ready while it serves clients (its client services listen), its index is
//! caught up with its node, it has heard from its node recently, and it is not stopping.
//! On a stop it turns unready first and keeps serving for `SHUTDOWN_GRACE`, so that a
//! balancer drains it before its sessions close.

use electrumx_core::SyncStatus;
use serde_json::{Value, json};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Blocks the index may trail its node by and still be ready (a block just found is
/// indexed within moments).
pub const MAX_LAG: u32 = 2;

/// What the server reports of its own health.
#[derive(Debug)]
pub struct Health {
    started: Instant,
    /// Client services are listening.
    serving: AtomicBool,
    /// Stopping: unready while established sessions are still served.
    draining: AtomicBool,
    /// When the node last answered (milliseconds since `started`, plus one; 0: never).
    node_ok_ms: AtomicU64,
    /// How long without an answer from the node makes the server unready.
    node_timeout: Duration,
}

/// A health report: whether the server is ready, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// Ready to serve clients (HTTP 200) or not (503).
    pub ready: bool,
    /// The report as JSON: `state` (`serving`, `starting`, `syncing`, `node_lost`,
    /// `stopping`, `failed`), `height`, `node_height`, `lag`, and `reason` when unready.
    pub body: Value,
}

impl Health {
    /// A server that is not serving yet; unready after `node_timeout` without its node.
    pub fn new(node_timeout: Duration) -> Health {
        Health {
            started: Instant::now(),
            serving: AtomicBool::new(false),
            draining: AtomicBool::new(false),
            node_ok_ms: AtomicU64::new(0),
            node_timeout,
        }
    }

    /// Client services are listening (`true`) or closed (`false`).
    pub fn set_serving(&self, serving: bool) {
        self.serving.store(serving, Ordering::Relaxed);
    }

    /// The server is stopping: report unready from now on.
    pub fn set_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    /// Whether the server is stopping.
    pub fn draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// The node just answered.
    pub fn node_answered(&self) {
        let ms = self.started.elapsed().as_millis() as u64 + 1;
        self.node_ok_ms.store(ms, Ordering::Relaxed);
    }

    /// Time since the node last answered (`None`: it never has).
    fn node_silence(&self) -> Option<Duration> {
        match self.node_ok_ms.load(Ordering::Relaxed) {
            0 => None,
            ms => Some(
                self.started
                    .elapsed()
                    .saturating_sub(Duration::from_millis(ms - 1)),
            ),
        }
    }

    /// The readiness report given the index's sync status.
    pub fn report(&self, sync: &SyncStatus) -> Report {
        let height = sync.height;
        let node_height = sync.daemon_height;
        let lag = match (height, node_height) {
            (Some(h), Some(n)) => Some(n.saturating_sub(h)),
            (None, Some(n)) => Some(n.saturating_add(1)),
            _ => None,
        };
        let silence = self.node_silence();
        let unready = |state: &str, reason: String| (false, state.to_string(), Some(reason));
        let (ready, state, reason) = if sync.stopped || sync.error.is_some() {
            let why = sync
                .error
                .clone()
                .unwrap_or_else(|| "the index stopped".into());
            unready("failed", why)
        } else if self.draining() {
            unready("stopping", "the server is stopping".into())
        } else if !sync.caught_up {
            unready("syncing", "the index is catching up with its node".into())
        } else if !self.serving.load(Ordering::Relaxed) {
            unready("starting", "client services are not listening yet".into())
        } else if lag.is_some_and(|l| l > MAX_LAG) {
            let l = lag.unwrap_or(0);
            unready(
                "syncing",
                format!("the index is {l} blocks behind its node"),
            )
        } else if silence.is_none_or(|s| s > self.node_timeout) {
            let why = match silence {
                Some(s) => format!("no answer from the node for {} s", s.as_secs()),
                None => "no answer from the node yet".into(),
            };
            unready("node_lost", why)
        } else {
            (true, "serving".to_string(), None)
        };
        let mut body = json!({
            "state": state,
            "height": height,
            "node_height": node_height,
            "lag": lag,
            "node_silence_secs": silence.map(|s| s.as_secs()),
        });
        if let Some(r) = reason {
            body["reason"] = json!(r);
        }
        Report { ready, body }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(height: u32, node: u32, caught_up: bool) -> SyncStatus {
        let mut s = SyncStatus::default();
        s.height = Some(height);
        s.daemon_height = Some(node);
        s.caught_up = caught_up;
        s
    }

    #[test]
    fn ready_only_when_caught_up_serving_and_hearing_from_the_node() {
        let h = Health::new(Duration::from_secs(60));
        let r = h.report(&status(5, 100, false));
        assert_eq!(
            (r.ready, r.body["state"].as_str()),
            (false, Some("syncing"))
        );
        assert_eq!(r.body["lag"], json!(95));
        let r = h.report(&status(100, 100, true));
        assert_eq!(r.body["state"], "starting");
        h.set_serving(true);
        assert_eq!(h.report(&status(100, 100, true)).body["state"], "node_lost");
        h.node_answered();
        let r = h.report(&status(100, 101, true));
        assert!(r.ready, "{}", r.body);
        assert_eq!(r.body["state"], "serving");
        assert!(r.body.get("reason").is_none());
        assert_eq!(h.report(&status(90, 101, true)).body["state"], "syncing");
        h.set_draining();
        let r = h.report(&status(100, 100, true));
        assert_eq!(
            (r.ready, r.body["state"].as_str()),
            (false, Some("stopping"))
        );
    }

    #[test]
    fn unready_after_the_node_is_silent_too_long() {
        let h = Health::new(Duration::from_millis(1));
        h.set_serving(true);
        h.node_answered();
        std::thread::sleep(Duration::from_millis(20));
        let r = h.report(&status(100, 100, true));
        assert_eq!(
            (r.ready, r.body["state"].as_str()),
            (false, Some("node_lost"))
        );
    }

    #[test]
    fn a_failed_index_is_unready() {
        let h = Health::new(Duration::from_secs(60));
        h.set_serving(true);
        h.node_answered();
        let mut s = status(100, 100, true);
        s.error = Some("disk full".into());
        let r = h.report(&s);
        assert_eq!(
            (r.ready, r.body["reason"].as_str()),
            (false, Some("disk full"))
        );
    }
}
