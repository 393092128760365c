//! The prefetcher: fetches raw blocks ahead of the block processor within a memory budget,
//! parses them (and hashes their output scripts) on the blocking pool, and hands them over
//! in height order, so fetching, parsing and indexing overlap. Once it has delivered the
//! node's tip it says so, then polls for new blocks.

use crate::coin::CoinParams;
use crate::daemon::Daemon;
use crate::error::{DaemonError, IndexError};
use crate::hash::BlockHash;
use crate::index::PreparedBlock;
use crate::parse::ParsedBlock;
use futures_util::StreamExt;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_util::sync::CancellationToken;

/// What the prefetcher delivers, in order.
pub(crate) enum Prefetched {
    /// The next block. The permit returns its bytes to the budget when dropped.
    Block(PreparedBlock, OwnedSemaphorePermit),
    /// Every block up to this height (the node's tip) has been delivered.
    CaughtUp(u32),
    /// Fetching failed for good (not a temporary daemon failure, which is retried).
    Failed(IndexError),
}

/// Tuning of the prefetcher ([`crate::ControllerBuilder::prefetch_options`]); start from
/// `PrefetchOptions::default()` and change the fields wanted. The poll interval at the
/// tip is a setting of its own ([`crate::ControllerBuilder::poll_interval`]).
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct PrefetchOptions {
    /// Bytes of fetched blocks (parsed, with their lists) held ahead of indexing.
    pub memory_budget: usize,
    /// Most blocks asked for in one batch request.
    pub max_blocks_per_request: u32,
    /// Requests in flight at once.
    pub concurrent_requests: usize,
}

impl Default for PrefetchOptions {
    fn default() -> Self {
        PrefetchOptions {
            memory_budget: 64 << 20,
            max_blocks_per_request: 100,
            concurrent_requests: 2,
        }
    }
}

/// A running prefetcher; dropping it stops the task.
pub(crate) struct Prefetcher {
    rx: mpsc::Receiver<Prefetched>,
    cancel: CancellationToken,
    runtime: tokio::runtime::Handle,
}

impl Drop for Prefetcher {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

impl Prefetcher {
    /// Starts fetching from `start_height` on `runtime`, polling every `poll_interval` once
    /// at the tip. `wake` cuts a poll wait short.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn start(
        runtime: &tokio::runtime::Handle,
        daemon: Arc<dyn Daemon>,
        coin: CoinParams,
        start_height: u32,
        opts: PrefetchOptions,
        poll_interval: Duration,
        wake: Arc<Notify>,
        parent: &CancellationToken,
    ) -> Prefetcher {
        let (tx, rx) = mpsc::channel(4096);
        let cancel = parent.child_token();
        let task = FetchTask {
            daemon,
            coin,
            opts,
            poll_interval,
            tx,
            wake,
            cancel: cancel.clone(),
        };
        runtime.spawn(async move {
            let next = task.tx.clone();
            match task.run(start_height).await {
                Ok(()) | Err(IndexError::ShuttingDown) => {}
                Err(e) => {
                    let _ = next.send(Prefetched::Failed(e)).await;
                }
            }
        });
        Prefetcher {
            rx,
            cancel,
            runtime: runtime.clone(),
        }
    }

    /// The next item, waiting for it (from a thread outside the runtime); `None` once the
    /// prefetcher stopped or was cancelled. A cancellation ends the wait even when the
    /// runtime's threads are all blocked (a `Controller` dropped on a current-thread
    /// runtime joins the sync thread there), which a wait for the task to end would not.
    pub(crate) fn blocking_next(&mut self) -> Option<Prefetched> {
        let (rx, cancel) = (&mut self.rx, &self.cancel);
        // Neither the channel nor the token needs the runtime's drivers: `Handle::block_on`
        // completes on any runtime, running or blocked.
        self.runtime.block_on(async {
            tokio::select! {
                biased;
                _ = cancel.cancelled() => None,
                item = rx.recv() => item,
            }
        })
    }
}

struct FetchTask {
    daemon: Arc<dyn Daemon>,
    coin: CoinParams,
    opts: PrefetchOptions,
    poll_interval: Duration,
    tx: mpsc::Sender<Prefetched>,
    wake: Arc<Notify>,
    cancel: CancellationToken,
}

fn daemon_err(e: DaemonError) -> IndexError {
    match e {
        DaemonError::Cancelled => IndexError::ShuttingDown,
        e => IndexError::Daemon(e),
    }
}

impl FetchTask {
    async fn run(self, mut next: u32) -> Result<(), IndexError> {
        let budget = Arc::new(Semaphore::new(self.opts.memory_budget));
        // Average raw block size seen so far, to size requests to the budget.
        let mut avg_size: usize = 1 << 10;
        let mut announced_tip: Option<u32> = None;
        loop {
            let tip = tokio::select! {
                _ = self.cancel.cancelled() => return Err(IndexError::ShuttingDown),
                h = self.daemon.height() => h.map_err(daemon_err)?,
            };
            if next > tip {
                if announced_tip != Some(tip) {
                    announced_tip = Some(tip);
                    if self.tx.send(Prefetched::CaughtUp(tip)).await.is_err() {
                        return Ok(());
                    }
                }
                tokio::select! {
                    _ = self.cancel.cancelled() => return Err(IndexError::ShuttingDown),
                    _ = tokio::time::sleep(self.poll_interval) => {}
                    // Woken on purpose (a block notification, an admin reorg request): say
                    // where the tip is again so the sync loop runs and sees the request.
                    _ = self.wake.notified() => announced_tip = None,
                }
                continue;
            }
            // Plan requests up to the tip. A request's replies take about four times the raw
            // block bytes while in flight (hex text, decoded bytes, parsed lists), so each
            // asks for about a sixteenth of the budget.
            let per_request = (self.opts.memory_budget / 16 / avg_size.max(1))
                .clamp(1, self.opts.max_blocks_per_request as usize)
                as u32;
            let mut ranges = Vec::new();
            let mut h = next;
            while h <= tip && ranges.len() < 64 {
                let count = per_request.min(tip - h + 1);
                ranges.push((h, count));
                h += count;
            }
            let daemon = &self.daemon;
            let coin = &self.coin;
            let mut fetches = futures_util::stream::iter(ranges)
                .map(|(first, count)| async move {
                    let hashes = daemon
                        .block_hashes(first, count)
                        .await
                        .map_err(daemon_err)?;
                    let raws = daemon.raw_blocks(&hashes).await.map_err(daemon_err)?;
                    let c = coin.clone();
                    let prepared =
                        tokio::task::spawn_blocking(move || prepare(first, hashes, raws, &c))
                            .await
                            .map_err(|e| IndexError::join("block parser", e))?;
                    let mut out = Vec::with_capacity(prepared.len());
                    for item in prepared {
                        match item {
                            Ok(block) => out.push(block),
                            Err(bad) => out.push(refetch(daemon.as_ref(), coin, bad).await?),
                        }
                    }
                    Ok::<_, IndexError>(out)
                })
                .buffered(self.opts.concurrent_requests.max(1));
            loop {
                let item = tokio::select! {
                    _ = self.cancel.cancelled() => return Err(IndexError::ShuttingDown),
                    item = fetches.next() => item,
                };
                let Some(result) = item else { break };
                let blocks = result?;
                for (pb, size) in blocks {
                    avg_size = (avg_size * 7 + size) / 8;
                    let footprint = pb.memory_size().clamp(1, self.opts.memory_budget);
                    let permit = tokio::select! {
                        _ = self.cancel.cancelled() => return Err(IndexError::ShuttingDown),
                        p = budget.clone().acquire_many_owned(footprint as u32) => p.expect("semaphore never closed"),
                    };
                    next = pb.height + 1;
                    if self.tx.send(Prefetched::Block(pb, permit)).await.is_err() {
                        return Ok(());
                    }
                }
            }
        }
    }
}

/// A fetched block that failed its checks.
struct Rejected {
    height: u32,
    hash: BlockHash,
    error: IndexError,
}

/// Parses fetched blocks and checks each is the block asked for.
fn prepare(
    first: u32,
    hashes: Vec<BlockHash>,
    raws: Vec<Vec<u8>>,
    coin: &CoinParams,
) -> Vec<Result<(PreparedBlock, usize), Rejected>> {
    hashes
        .into_iter()
        .zip(raws)
        .enumerate()
        .map(|(i, (hash, raw))| {
            let height = first + i as u32;
            prepare_one(height, hash, raw, coin).map_err(|error| Rejected {
                height,
                hash,
                error,
            })
        })
        .collect()
}

fn prepare_one(
    height: u32,
    hash: BlockHash,
    raw: Vec<u8>,
    coin: &CoinParams,
) -> Result<(PreparedBlock, usize), IndexError> {
    let size = raw.len();
    let block = ParsedBlock::parse(raw).map_err(|source| IndexError::Parse { height, source })?;
    if block.hash != hash {
        return Err(IndexError::Daemon(DaemonError::bad_response(format!(
            "asked for block {hash} at height {height}, got {}",
            block.hash
        ))));
    }
    Ok((PreparedBlock::new(height, block, coin), size))
}

/// Asks the daemon again for a block that failed its checks ([`Daemon::refetch_block`]);
/// without a second source, or if the second copy fails too, the error stands.
async fn refetch(
    daemon: &dyn Daemon,
    coin: &CoinParams,
    bad: Rejected,
) -> Result<(PreparedBlock, usize), IndexError> {
    let Some(raw) = daemon.refetch_block(&bad.hash).await.map_err(daemon_err)? else {
        return Err(bad.error);
    };
    let coin = coin.clone();
    let (height, hash) = (bad.height, bad.hash);
    tokio::task::spawn_blocking(move || prepare_one(height, hash, raw, &coin))
        .await
        .map_err(|e| IndexError::join("block parser", e))?
}
