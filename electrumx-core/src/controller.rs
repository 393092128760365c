//! The controller: opens the database, runs the sync loop (prefetcher → block processor)
//! on its own thread, follows the node's tip, handles reorgs, publishes events and stops
//! cleanly with a flush.

use crate::coin::CoinParams;
use crate::daemon::Daemon;
use crate::error::{BuildError, IndexError, LifecycleError, Result};
use crate::hash::{BlockHash, HashX, Txid};
use crate::index::processor::Advance;
use crate::index::{BlockProcessor, Index, ProcessorOptions};
use crate::prefetch::{PrefetchOptions, Prefetched, Prefetcher};
use crate::snapshot::SnapshotInfo;
use crate::store::{DbStats, Store, StoreOptions};
use parking_lot::Mutex;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::{Notify, broadcast, watch};
use tokio_util::sync::CancellationToken;

/// Something that changed in the index, published once caught up with the node.
///
/// Non-exhaustive: more kinds of events, and more fields of each, may come; match with a
/// wildcard arm and `..`.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum IndexEvent {
    /// A new tip was committed (after new blocks or a reorg).
    #[non_exhaustive]
    NewTip {
        /// Height of the tip.
        height: u32,
        /// Hash of the tip.
        hash: BlockHash,
        /// Scripts whose confirmed history changed.
        touched: Arc<HashSet<HashX>>,
        /// Outpoints spent (or unspent by a reorg).
        spent_outpoints: Arc<Vec<(Txid, u32)>>,
        /// Height of the fork point if this tip came from a reorg.
        reorg_from: Option<u32>,
    },
}

/// Where the sync stands.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SyncStatus {
    /// Height of the committed index tip (`None`: empty).
    pub height: Option<u32>,
    /// Height of the node's tip, as last seen.
    pub daemon_height: Option<u32>,
    /// True once the index has caught up with the node at least once in this run.
    pub caught_up: bool,
    /// Set if the sync loop stopped with an error: its message, with its causes
    /// ([`Controller::stop`] returns the typed error).
    pub error: Option<String>,
    /// True once the sync loop has ended (stopped or failed).
    pub stopped: bool,
}

/// Sync progress as the block processor sees it (blocks applied in memory, possibly not yet
/// flushed), for progress bars and metrics. Cheap to read at any time.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SyncProgress {
    /// Blocks applied (the processed height is this minus one).
    pub blocks: u32,
    /// Transactions applied.
    pub txs: u64,
    /// The node's height as last seen.
    pub daemon_height: u32,
    /// Bytes held in the sync caches.
    pub cache_bytes: u64,
    /// Blocks applied since this process started.
    pub blocks_this_run: u64,
    /// Transactions applied since this process started.
    pub txs_this_run: u64,
    /// Flushes of the sync caches since this process started.
    pub flushes: u64,
    /// Reorgs handled since this process started.
    pub reorgs: u64,
}

#[derive(Default)]
struct ProgressCounters {
    blocks: AtomicU64,
    txs: AtomicU64,
    daemon_height: AtomicU64,
    cache_bytes: AtomicU64,
    blocks_this_run: AtomicU64,
    txs_this_run: AtomicU64,
    flushes: AtomicU64,
    reorgs: AtomicU64,
}

/// Builder of a [`Controller`].
///
/// Each method sets a setting of its own: none overwrites what another set (the poll
/// interval, for one, is not part of [`PrefetchOptions`]). Calling the same method twice
/// keeps the later value. [`ControllerBuilder::build`] fails with [`BuildError`] if a
/// required setting is missing or a value cannot be used.
pub struct ControllerBuilder {
    coin: Option<CoinParams>,
    db_dir: Option<PathBuf>,
    daemon: Option<Arc<dyn Daemon>>,
    cache_mb: usize,
    reorg_limit: Option<u32>,
    poll_interval: Duration,
    prefetch: PrefetchOptions,
    store: StoreOptions,
    progress_interval: Duration,
}

impl Default for ControllerBuilder {
    fn default() -> Self {
        ControllerBuilder {
            coin: None,
            db_dir: None,
            daemon: None,
            cache_mb: 1200,
            reorg_limit: None,
            poll_interval: Duration::from_secs(5),
            prefetch: PrefetchOptions::default(),
            store: StoreOptions::default(),
            progress_interval: Duration::from_secs(10),
        }
    }
}

impl ControllerBuilder {
    /// Coin and network (required).
    pub fn coin(mut self, coin: CoinParams) -> Self {
        self.coin = Some(coin);
        self
    }

    /// Database directory (required; `DB_DIRECTORY`).
    pub fn db_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.db_dir = Some(dir.into());
        self
    }

    /// Block source (required).
    pub fn daemon(mut self, daemon: Arc<dyn Daemon>) -> Self {
        self.daemon = Some(daemon);
        self
    }

    /// Memory for sync caches in MB (`CACHE_MB`, default 1200).
    pub fn cache_mb(mut self, mb: usize) -> Self {
        self.cache_mb = mb;
        self
    }

    /// Undo depth (`REORG_LIMIT`; default: the coin's).
    pub fn reorg_limit(mut self, limit: u32) -> Self {
        self.reorg_limit = Some(limit);
        self
    }

    /// Poll interval once caught up (`DAEMON_POLL_INTERVAL_BLOCKS`; default 5 s).
    pub fn poll_interval(mut self, d: Duration) -> Self {
        self.poll_interval = d;
        self
    }

    /// Prefetcher tuning (the memory it may hold ahead of indexing, request sizes).
    pub fn prefetch_options(mut self, o: PrefetchOptions) -> Self {
        self.prefetch = o;
        self
    }

    /// Database tuning.
    pub fn store_options(mut self, o: StoreOptions) -> Self {
        self.store = o;
        self
    }

    /// How often sync progress is logged.
    pub fn progress_interval(mut self, d: Duration) -> Self {
        self.progress_interval = d;
        self
    }

    /// Opens the database and returns a controller ready to [`Controller::start`].
    ///
    /// Fails with [`IndexError::Build`] for a missing or unusable setting (before the
    /// database is opened), or with the error of opening the database.
    pub fn build(self) -> Result<Controller> {
        let coin = self.coin.ok_or(BuildError::Missing("coin"))?;
        let db_dir = self.db_dir.ok_or(BuildError::Missing("db_dir"))?;
        let daemon = self.daemon.ok_or(BuildError::Missing("daemon"))?;
        if self.cache_mb == 0 {
            return Err(BuildError::Invalid("cache_mb must be positive".into()).into());
        }
        if self.prefetch.memory_budget == 0 {
            return Err(BuildError::Invalid(
                "prefetch_options: memory_budget must be positive".into(),
            )
            .into());
        }
        let store = Arc::new(Store::open(&db_dir, &coin, &self.store)?);
        let reorg_limit = self.reorg_limit.unwrap_or(coin.reorg_limit);
        let (events, _) = broadcast::channel(1024);
        let (status_tx, _) = watch::channel(SyncStatus {
            height: store.chain().read().tip_height(),
            ..Default::default()
        });
        Ok(Controller {
            inner: Arc::new(Inner {
                coin,
                daemon,
                store,
                proc_opts: ProcessorOptions {
                    cache_bytes: self.cache_mb << 20,
                    reorg_limit,
                },
                prefetch: self.prefetch,
                poll_interval: self.poll_interval,
                progress_interval: self.progress_interval,
                events,
                status: status_tx,
                cancel: CancellationToken::new(),
                wake: Arc::new(Notify::new()),
                reorg_request: Mutex::new(None),
                counters: ProgressCounters::default(),
                failure: Mutex::new(None),
            }),
            thread: Mutex::new(Lifecycle::Built),
        })
    }
}

struct Inner {
    coin: CoinParams,
    daemon: Arc<dyn Daemon>,
    store: Arc<Store>,
    proc_opts: ProcessorOptions,
    prefetch: PrefetchOptions,
    poll_interval: Duration,
    progress_interval: Duration,
    events: broadcast::Sender<IndexEvent>,
    status: watch::Sender<SyncStatus>,
    cancel: CancellationToken,
    wake: Arc<Notify>,
    reorg_request: Mutex<Option<u32>>,
    counters: ProgressCounters,
    /// The error the sync loop stopped with, until [`Controller::stop`] returns it.
    failure: Mutex<Option<IndexError>>,
}

/// Where a controller is in its life.
enum Lifecycle {
    /// Built, not started.
    Built,
    /// The sync loop runs on this thread.
    Running(std::thread::JoinHandle<()>),
    /// Stopped (or being stopped): not to be started again.
    Stopped,
}

/// Owns the index's lifecycle (see the module docs).
///
/// Stop it with [`Controller::stop`], which flushes and reports how the sync ended. A
/// controller dropped without it stops the same way, blocking the dropping thread until
/// the sync thread has flushed and ended (this does not need the runtime to make progress,
/// so it neither deadlocks on a current-thread runtime nor in a runtime's shutdown). The
/// database closes once the controller and every [`Index`] handle taken from it are gone.
pub struct Controller {
    inner: Arc<Inner>,
    thread: Mutex<Lifecycle>,
}

impl Controller {
    /// A builder.
    pub fn builder() -> ControllerBuilder {
        ControllerBuilder::default()
    }

    /// The query side of the index.
    pub fn index(&self) -> Index {
        Index::new(self.inner.store.clone())
    }

    /// Coin parameters in use.
    pub fn coin(&self) -> &CoinParams {
        &self.inner.coin
    }

    /// The block source.
    pub fn daemon(&self) -> Arc<dyn Daemon> {
        self.inner.daemon.clone()
    }

    /// Events published after each commit at the tip.
    pub fn subscribe(&self) -> broadcast::Receiver<IndexEvent> {
        self.inner.events.subscribe()
    }

    /// The sync status, as a watch channel.
    pub fn status(&self) -> watch::Receiver<SyncStatus> {
        self.inner.status.subscribe()
    }

    /// Asks the sync loop to poll the node now (e.g. on a block notification).
    pub fn notify_new_block(&self) {
        self.inner.wake.notify_one();
    }

    /// Takes back the last `blocks` blocks and syncs them again (testing; admin `reorg`).
    pub fn request_reorg(&self, blocks: u32) {
        *self.inner.reorg_request.lock() = Some(blocks);
        self.inner.wake.notify_one();
    }

    /// Starts the sync loop on its own thread, driving async work on the current runtime.
    ///
    /// Fails with [`LifecycleError`] if called twice, after a stop, or outside a Tokio
    /// runtime.
    pub fn start(&self) -> Result<()> {
        let mut slot = self.thread.lock();
        match &*slot {
            Lifecycle::Built => {}
            Lifecycle::Running(_) => return Err(LifecycleError::AlreadyStarted.into()),
            Lifecycle::Stopped => return Err(LifecycleError::Stopped.into()),
        }
        let runtime =
            tokio::runtime::Handle::try_current().map_err(|_| LifecycleError::NoRuntime)?;
        let inner = self.inner.clone();
        let handle = std::thread::Builder::new()
            .name("block-processor".into())
            .spawn(move || {
                let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    SyncLoop::new(inner.clone(), runtime).and_then(|l| l.run())
                }));
                let result = match run {
                    // Stopped while waiting on the node: nothing was left unflushed.
                    Ok(Err(IndexError::ShuttingDown)) => Ok(()),
                    Ok(r) => r,
                    Err(payload) => Err(IndexError::panic("sync loop", &*payload)),
                };
                let message = result.as_ref().err().map(|e| crate::error::error_chain(e));
                if let Err(e) = result {
                    *inner.failure.lock() = Some(e);
                }
                inner.status.send_modify(|s| {
                    s.stopped = true;
                    s.error = message.clone();
                });
                match message {
                    None => tracing::info!("sync loop stopped"),
                    Some(e) => tracing::error!("sync stopped: {e}"),
                }
            })?;
        *slot = Lifecycle::Running(handle);
        Ok(())
    }

    /// Waits until the index has caught up with the node; fails if the sync loop stopped first.
    pub async fn wait_caught_up(&self) -> Result<u32> {
        let mut rx = self.status();
        loop {
            {
                let s = rx.borrow_and_update();
                if s.caught_up {
                    return Ok(s.height.unwrap_or(0));
                }
                if s.stopped {
                    return Err(match &s.error {
                        Some(e) => IndexError::SyncStopped(e.clone()),
                        None => IndexError::ShuttingDown,
                    });
                }
            }
            rx.changed().await.map_err(|_| IndexError::ShuttingDown)?;
        }
    }

    /// Waits until the index tip is at least `height`.
    pub async fn wait_for_height(&self, height: u32) -> Result<()> {
        let mut rx = self.status();
        loop {
            {
                let s = rx.borrow_and_update();
                if s.height.is_some_and(|h| h >= height) && s.caught_up {
                    return Ok(());
                }
                if s.stopped {
                    return Err(IndexError::ShuttingDown);
                }
            }
            rx.changed().await.map_err(|_| IndexError::ShuttingDown)?;
        }
    }

    /// Stops the sync loop, flushing what was indexed, and waits for it.
    ///
    /// Returns the error the sync loop stopped with, if it failed (typed, the first time;
    /// [`IndexError::SyncStopped`] with its message on later calls). A stopped controller
    /// cannot be started again; stopping it again is harmless.
    pub async fn stop(&self) -> Result<()> {
        self.inner.cancel.cancel();
        let state = std::mem::replace(&mut *self.thread.lock(), Lifecycle::Stopped);
        if let Lifecycle::Running(h) = state {
            tokio::task::spawn_blocking(move || h.join())
                .await
                .map_err(|e| IndexError::join("joining the sync thread", e))?
                .map_err(|payload| IndexError::panic("sync loop", &*payload))?;
        }
        if let Some(e) = self.inner.failure.lock().take() {
            return Err(e);
        }
        match self.inner.status.borrow().error.clone() {
            Some(e) => Err(IndexError::SyncStopped(e)),
            None => Ok(()),
        }
    }

    /// The deepest reorg the index can undo.
    pub fn reorg_limit(&self) -> u32 {
        self.inner.proc_opts.reorg_limit
    }

    /// Where the sync stands right now (updated after every block).
    pub fn progress(&self) -> SyncProgress {
        let c = &self.inner.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        SyncProgress {
            blocks: get(&c.blocks) as u32,
            txs: get(&c.txs),
            daemon_height: get(&c.daemon_height) as u32,
            cache_bytes: get(&c.cache_bytes),
            blocks_this_run: get(&c.blocks_this_run),
            txs_this_run: get(&c.txs_this_run),
            flushes: get(&c.flushes),
            reorgs: get(&c.reorgs),
        }
    }

    /// The database directory.
    pub fn db_dir(&self) -> &std::path::Path {
        self.inner.store.path()
    }

    /// The database's size on disk, in bytes.
    pub fn db_size(&self) -> u64 {
        self.inner.store.disk_size()
    }

    /// Sizes of the database: per column family (SST and memtable bytes, estimated keys),
    /// on disk, and in memory. Cheap (no file is read); it may block briefly on the
    /// database engine, so call it from a blocking context in async code.
    pub fn db_stats(&self) -> DbStats {
        self.inner.store.db_stats(false)
    }

    /// Takes a consistent snapshot of the index into `dir` while the controller runs and
    /// serves: a copy of the database at a block boundary (a RocksDB checkpoint: hard links
    /// to the database's files when `dir` is on the same filesystem, copies otherwise), plus
    /// a metadata file ([`SnapshotInfo::FILE_NAME`]) with its height, tip, format, chain and
    /// the time it was taken. `dir` must not exist, or be an empty directory; its parent
    /// is created if needed.
    ///
    /// The copy is taken between two commits of the sync loop (its next commit waits for
    /// the copy; queries do not), so it holds exactly the state of one committed block,
    /// and its state record is read back from the copy to be sure. A server (or controller)
    /// opened on the directory, or on a copy of it made on another host, checks its format
    /// and genesis and resumes from its height. A snapshot taken while the compaction that
    /// ends the initial sync is still running is valid but larger; the server seeded from it
    /// finishes that compaction.
    ///
    /// Fails with [`SnapshotError::TargetExists`](crate::SnapshotError::TargetExists) if `dir` exists and is not an empty
    /// directory, with [`SnapshotError::InitialSync`](crate::SnapshotError::InitialSync) until the initial sync has caught up
    /// once (nothing is written then), with [`LifecycleError::Stopped`] after a stop, or
    /// with the I/O or database error that cut it short (the partial copy is removed).
    ///
    /// It blocks for as long as the copy takes (milliseconds with hard links; a copy runs at
    /// disk speed): call it from a blocking context in async code
    /// (`tokio::task::spawn_blocking`).
    pub fn snapshot(&self, dir: impl AsRef<Path>) -> Result<SnapshotInfo> {
        if matches!(*self.thread.lock(), Lifecycle::Stopped) {
            return Err(LifecycleError::Stopped.into());
        }
        crate::snapshot::take(&self.inner.store, &self.inner.coin, dir.as_ref())
    }

    /// A token cancelled when the controller stops.
    pub fn cancellation(&self) -> CancellationToken {
        self.inner.cancel.clone()
    }
}

impl Drop for Controller {
    /// Stops the sync loop as [`Controller::stop`] does and waits for its thread: after
    /// this, only [`Index`] handles taken from the controller keep the database open.
    fn drop(&mut self) {
        self.inner.cancel.cancel();
        let state = std::mem::replace(&mut *self.thread.lock(), Lifecycle::Stopped);
        if let Lifecycle::Running(h) = state {
            // The sync thread ends without the runtime's help once cancelled (its waits
            // race the cancellation token), so joining here cannot deadlock, even on the
            // thread of a current-thread runtime.
            if h.join().is_err() {
                tracing::error!("the sync thread panicked");
            }
        }
    }
}

/// The sync loop state, on the block-processor thread.
struct SyncLoop {
    inner: Arc<Inner>,
    runtime: tokio::runtime::Handle,
    processor: BlockProcessor,
    caught_up: bool,
    progress: Progress,
}

struct Progress {
    last_log: Instant,
    last_height: u32,
    last_txs: u64,
    started: Instant,
}

impl SyncLoop {
    fn new(inner: Arc<Inner>, runtime: tokio::runtime::Handle) -> Result<Self> {
        let processor = BlockProcessor::new(
            inner.store.clone(),
            inner.coin.clone(),
            inner.proc_opts.clone(),
        )?;
        let progress = Progress {
            last_log: Instant::now(),
            last_height: processor.block_count(),
            last_txs: processor.tx_count(),
            started: Instant::now(),
        };
        let c = &inner.counters;
        c.blocks
            .store(processor.block_count() as u64, Ordering::Relaxed);
        c.txs.store(processor.tx_count(), Ordering::Relaxed);
        Ok(SyncLoop {
            inner,
            runtime,
            processor,
            caught_up: false,
            progress,
        })
    }

    /// Publishes the processor's counters after a block was applied.
    fn count_block(&self) {
        let c = &self.inner.counters;
        let txs = self.processor.tx_count();
        let before = c.txs.swap(txs, Ordering::Relaxed);
        c.txs_this_run
            .fetch_add(txs.saturating_sub(before), Ordering::Relaxed);
        c.blocks
            .store(self.processor.block_count() as u64, Ordering::Relaxed);
        c.blocks_this_run.fetch_add(1, Ordering::Relaxed);
        c.cache_bytes
            .store(self.processor.cache_bytes() as u64, Ordering::Relaxed);
    }

    /// Publishes the processor's position after blocks were taken back.
    fn count_block_range(&self) {
        let c = &self.inner.counters;
        c.blocks
            .store(self.processor.block_count() as u64, Ordering::Relaxed);
        c.txs.store(self.processor.tx_count(), Ordering::Relaxed);
    }

    fn set_daemon_height(&mut self, height: u32) {
        self.processor.set_daemon_height(height);
        self.inner
            .counters
            .daemon_height
            .store(height as u64, Ordering::Relaxed);
    }

    fn start_prefetcher(&self) -> Prefetcher {
        Prefetcher::start(
            &self.runtime,
            self.inner.daemon.clone(),
            self.inner.coin.clone(),
            self.processor.block_count(),
            self.inner.prefetch.clone(),
            self.inner.poll_interval,
            self.inner.wake.clone(),
            &self.inner.cancel,
        )
    }

    fn run(mut self) -> Result<()> {
        let daemon_height = self.block_on(self.inner.daemon.height())?;
        self.set_daemon_height(daemon_height);
        let meta = self.inner.store.meta();
        tracing::info!(
            coin = %self.inner.coin,
            height = ?self.inner.store.chain().read().tip_height(),
            txs = meta.tx_count,
            daemon_height,
            reorg_limit = self.inner.proc_opts.reorg_limit,
            cache_mb = self.inner.proc_opts.cache_bytes >> 20,
            "index opened; syncing with {}",
            self.inner.daemon.describe()
        );
        self.update_status(Some(daemon_height));
        let mut prefetcher = self.start_prefetcher();
        loop {
            let requested = self.inner.reorg_request.lock().take();
            if let Some(n) = requested {
                let tip = self.processor.block_count().saturating_sub(1);
                let fork = tip.saturating_sub(n);
                tracing::info!("reorg requested: backing up {n} blocks to height {fork}");
                drop(prefetcher);
                self.processor.collect_touched(self.caught_up);
                self.processor.backup_to(fork)?;
                self.inner.counters.reorgs.fetch_add(1, Ordering::Relaxed);
                self.count_block_range();
                self.publish(Some(fork));
                prefetcher = self.start_prefetcher();
            }
            let Some(item) = prefetcher.blocking_next() else {
                // The prefetcher stopped: shutdown.
                break;
            };
            match item {
                Prefetched::Block(pb, _permit) => {
                    let height = pb.height;
                    match self.processor.advance(&pb)? {
                        Advance::Applied => self.count_block(),
                        Advance::Reorg => {
                            self.inner.counters.reorgs.fetch_add(1, Ordering::Relaxed);
                            drop(prefetcher);
                            let fork = self.handle_reorg(height)?;
                            self.publish(Some(fork));
                            prefetcher = self.start_prefetcher();
                            continue;
                        }
                    }
                    if self.caught_up {
                        self.processor.flush(true)?;
                        self.publish(None);
                    } else if self.processor.should_flush() {
                        self.flush_logged()?;
                    }
                    self.log_progress(false);
                }
                Prefetched::CaughtUp(h) => {
                    self.set_daemon_height(h);
                    if !self.caught_up {
                        self.flush_logged()?;
                        self.processor.mark_synced()?;
                        self.caught_up = true;
                        self.processor.collect_touched(true);
                        self.log_progress(true);
                        tracing::info!(height = h, "caught up with the node");
                    }
                    self.update_status(Some(h));
                }
                Prefetched::Failed(e) => {
                    self.processor.flush(true)?;
                    return Err(e);
                }
            }
        }
        drop(prefetcher);
        self.flush_logged()?;
        self.processor.wait_inflight()?;
        Ok(())
    }

    fn block_on<T>(
        &self,
        f: impl std::future::Future<Output = Result<T, crate::error::DaemonError>>,
    ) -> Result<T> {
        let cancel = self.inner.cancel.clone();
        self.runtime.block_on(async move {
            tokio::select! {
                _ = cancel.cancelled() => Err(IndexError::ShuttingDown),
                r = f => r.map_err(|e| match e {
                    // The node client was cancelled: the process is shutting down.
                    crate::error::DaemonError::Cancelled => IndexError::ShuttingDown,
                    e => IndexError::from(e),
                }),
            }
        })
    }

    fn flush_logged(&mut self) -> Result<()> {
        if !self.processor.has_pending() {
            return Ok(());
        }
        let started = Instant::now();
        let bytes = self.processor.cache_bytes();
        // Waits for the previous flush (it is reported here), then starts this one; at the
        // tip the flush is synchronous.
        self.processor.flush(self.caught_up)?;
        let c = &self.inner.counters;
        c.flushes.fetch_add(1, Ordering::Relaxed);
        c.cache_bytes
            .store(self.processor.cache_bytes() as u64, Ordering::Relaxed);
        tracing::info!(
            height = self.processor.block_count().saturating_sub(1),
            cache_mb = bytes >> 20,
            waited_secs = format!("{:.2}", started.elapsed().as_secs_f64()),
            "flush to disk started (the previous one is committed)"
        );
        self.update_status(None);
        Ok(())
    }

    /// Finds where our chain and the node's part, and takes our blocks back to there.
    fn handle_reorg(&mut self, failed_height: u32) -> Result<u32> {
        self.processor.flush(true)?;
        let tip = self.processor.block_count().saturating_sub(1);
        let mut window = 8u32;
        let fork = loop {
            let start = tip.saturating_sub(window - 1);
            let count = tip - start + 1;
            let theirs = self.block_on(self.inner.daemon.block_hashes(start, count))?;
            let mut fork = None;
            for (i, h) in theirs.iter().enumerate().rev() {
                let height = start + i as u32;
                if self.processor.hash_at(height) == Some(*h) {
                    fork = Some(height);
                    break;
                }
            }
            match fork {
                Some(f) => break f,
                None if start == 0 => {
                    return Err(IndexError::ChainMismatch(
                        "the node's chain shares no block with the index".into(),
                    ));
                }
                None => {
                    if window > self.inner.proc_opts.reorg_limit.saturating_add(8) {
                        return Err(IndexError::ReorgTooDeep {
                            tip,
                            depth: window,
                            limit: self.inner.proc_opts.reorg_limit,
                        });
                    }
                    window = window.saturating_mul(2);
                }
            }
        };
        tracing::warn!(
            fork_height = fork,
            depth = tip - fork,
            "chain reorganisation detected at height {failed_height}"
        );
        self.processor.collect_touched(self.caught_up);
        self.processor.backup_to(fork)?;
        self.count_block_range();
        self.update_status(None);
        Ok(fork)
    }

    fn publish(&mut self, reorg_from: Option<u32>) {
        self.update_status(None);
        let touched = self.processor.take_touched();
        if !self.caught_up {
            return;
        }
        let chain = self.inner.store.chain().read();
        let Some(height) = chain.tip_height() else {
            return;
        };
        let hash = chain.hashes[height as usize];
        drop(chain);
        let _ = self.inner.events.send(IndexEvent::NewTip {
            height,
            hash,
            touched: Arc::new(touched.hashxs),
            spent_outpoints: Arc::new(touched.spent_outpoints),
            reorg_from,
        });
    }

    fn update_status(&self, daemon_height: Option<u32>) {
        let height = self.inner.store.chain().read().tip_height();
        let caught_up = self.caught_up;
        self.inner.status.send_modify(|s| {
            s.height = height;
            s.caught_up = caught_up;
            if let Some(d) = daemon_height {
                s.daemon_height = Some(d);
            }
        });
    }

    fn log_progress(&mut self, force: bool) {
        let p = &mut self.progress;
        let elapsed = p.last_log.elapsed();
        if !force && elapsed < self.inner.progress_interval {
            return;
        }
        let height = self.processor.block_count();
        let txs = self.processor.tx_count();
        let secs = elapsed.as_secs_f64().max(1e-3);
        let bps = (height - p.last_height.min(height)) as f64 / secs;
        let tps = (txs - p.last_txs.min(txs)) as f64 / secs;
        let daemon = self.inner.status.borrow().daemon_height.unwrap_or(0);
        let remaining = daemon.saturating_sub(height.saturating_sub(1));
        let eta = if bps > 0.0 {
            format!("{:.0}s", remaining as f64 / bps)
        } else {
            "-".into()
        };
        tracing::info!(
            "sync: height {}/{} {:.1} blocks/s {:.0} tx/s, {} txs, cache {} MB, rocksdb {} MB, ETA {}, elapsed {:.0}s",
            height.saturating_sub(1),
            daemon,
            bps,
            tps,
            txs,
            self.processor.cache_bytes() >> 20,
            self.inner.store.memory_usage() >> 20,
            eta,
            p.started.elapsed().as_secs_f64()
        );
        p.last_log = Instant::now();
        p.last_height = height;
        p.last_txs = txs;
    }
}
