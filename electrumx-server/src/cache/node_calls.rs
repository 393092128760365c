//! Calls to the node made on behalf of clients: fee estimates, the relay fee, mempool
//! information, verbose transactions, broadcasts, and transactions or blocks the index
//! cannot serve.
//!
//! They are limited server-wide ([`NodeCalls::new`]'s `limit`, below the node client's
//! own in-flight limit), so clients can never hold every slot of the node client the
//! index's sync and the mempool mirror need; and answers that only change with the chain
//! are kept until the tip moves: `estimatefee` per target, `relayfee`, verbose
//! transactions (their confirmations count), and `getmempoolinfo` for a few seconds.

use electrumx_core::daemon::Daemon;
use electrumx_core::{BlockHash, DaemonError, Txid};
use parking_lot::Mutex;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

/// How long a `getmempoolinfo` answer is reused.
const MEMPOOL_INFO_TTL: Duration = Duration::from_secs(5);

/// Bytes of verbose transaction JSON kept for the current tip.
const VERBOSE_CACHE_BYTES: usize = 16 << 20;

/// Answers cached for one tip.
#[derive(Default)]
struct PerTip {
    tip: Option<BlockHash>,
    fees: HashMap<u32, Option<f64>>,
    relay_fee: Option<f64>,
    verbose: HashMap<Txid, Arc<Value>>,
    verbose_bytes: usize,
}

/// The client-driven node calls (see the module docs).
pub struct NodeCalls {
    daemon: Arc<dyn Daemon>,
    limit: Semaphore,
    cache: Mutex<PerTip>,
    mempool_info: Mutex<Option<(Instant, Value)>>,
}

impl NodeCalls {
    /// Calls to `daemon` for clients, at most `limit` at once.
    pub fn new(daemon: Arc<dyn Daemon>, limit: usize) -> Self {
        NodeCalls {
            daemon,
            limit: Semaphore::new(limit.max(1)),
            cache: Mutex::new(PerTip::default()),
            mempool_info: Mutex::new(None),
        }
    }

    /// Runs `call` within the limit.
    async fn limited<T>(
        &self,
        call: impl std::future::Future<Output = Result<T, DaemonError>>,
    ) -> Result<T, DaemonError> {
        let _permit = self
            .limit
            .acquire()
            .await
            .map_err(|_| DaemonError::Cancelled)?;
        call.await
    }

    /// The cache for `tip` (emptied if the tip moved).
    fn at<R>(&self, tip: Option<BlockHash>, f: impl FnOnce(&mut PerTip) -> R) -> R {
        let mut c = self.cache.lock();
        if c.tip != tip {
            *c = PerTip {
                tip,
                ..PerTip::default()
            };
        }
        f(&mut c)
    }

    /// `estimatesmartfee`/`estimatefee` for `blocks`, once per tip.
    pub async fn estimate_fee(
        &self,
        tip: Option<BlockHash>,
        blocks: u32,
    ) -> Result<Option<f64>, DaemonError> {
        if let Some(fee) = self.at(tip, |c| c.fees.get(&blocks).copied()) {
            return Ok(fee);
        }
        let fee = self.limited(self.daemon.estimate_fee(blocks)).await?;
        self.at(tip, |c| c.fees.insert(blocks, fee));
        Ok(fee)
    }

    /// The node's relay fee, once per tip.
    pub async fn relay_fee(&self, tip: Option<BlockHash>) -> Result<f64, DaemonError> {
        if let Some(fee) = self.at(tip, |c| c.relay_fee) {
            return Ok(fee);
        }
        let fee = self.limited(self.daemon.relay_fee()).await?;
        self.at(tip, |c| c.relay_fee = Some(fee));
        Ok(fee)
    }

    /// `getmempoolinfo`, reused for a few seconds.
    pub async fn mempool_info(&self) -> Result<Value, DaemonError> {
        if let Some((at, v)) = self.mempool_info.lock().as_ref()
            && at.elapsed() < MEMPOOL_INFO_TTL
        {
            return Ok(v.clone());
        }
        let v = self
            .limited(
                self.daemon
                    .call_json("getmempoolinfo", serde_json::json!([])),
            )
            .await?;
        *self.mempool_info.lock() = Some((Instant::now(), v.clone()));
        Ok(v)
    }

    /// `getrawtransaction txid 1`, once per tip.
    pub async fn verbose_transaction(
        &self,
        tip: Option<BlockHash>,
        txid: Txid,
    ) -> Result<Arc<Value>, DaemonError> {
        if let Some(v) = self.at(tip, |c| c.verbose.get(&txid).cloned()) {
            return Ok(v);
        }
        let v = self
            .limited(self.daemon.call_json(
                "getrawtransaction",
                serde_json::json!([txid.to_display_hex(), 1]),
            ))
            .await?;
        let v = Arc::new(v);
        let size = v.to_string().len();
        self.at(tip, |c| {
            if c.verbose_bytes + size > VERBOSE_CACHE_BYTES {
                c.verbose.clear();
                c.verbose_bytes = 0;
            }
            if size <= VERBOSE_CACHE_BYTES / 4 {
                c.verbose_bytes += size;
                c.verbose.insert(txid, v.clone());
            }
        });
        Ok(v)
    }

    /// Broadcasts a raw transaction.
    pub async fn broadcast(&self, raw: &[u8]) -> Result<Txid, DaemonError> {
        self.limited(self.daemon.broadcast(raw)).await
    }

    /// Any other call (uncached), within the limit.
    pub async fn call_json(&self, method: &str, params: Value) -> Result<Value, DaemonError> {
        self.limited(self.daemon.call_json(method, params)).await
    }

    /// Raw transactions by txid (`None` for unknown ones), within the limit.
    pub async fn raw_transactions(
        &self,
        txids: &[Txid],
    ) -> Result<Vec<Option<Vec<u8>>>, DaemonError> {
        self.limited(self.daemon.raw_transactions(txids)).await
    }

    /// Raw blocks by hash, within the limit.
    pub async fn raw_blocks(&self, hashes: &[BlockHash]) -> Result<Vec<Vec<u8>>, DaemonError> {
        self.limited(self.daemon.raw_blocks(hashes)).await
    }
}
