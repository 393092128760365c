//! The RocksDB database: column families, the metadata record that is the commit point of
//! every write, and the in-memory chain state (headers, hashes, cumulative tx counts) that
//! readers and the block processor share.
//!
//! Invariant: every change to the index is one atomic `WriteBatch` that also rewrites the
//! `state` record, or (a flush of the initial sync) a set of ingested SST files committed
//! by the `state` record written after them and completed at the next open if a crash cut
//! it short ([`sink`]); so after a crash at any instant the database is exactly the state
//! of some completed commit: a prefix of the chain.

pub mod keys;
pub mod sink;

use crate::coin::CoinParams;
use crate::error::DbResultExt;
use crate::error::{IndexError, Result};
use crate::hash::{BlockHash, Hash32};
use crate::parse::HEADER_LEN;
use parking_lot::RwLock;
use rocksdb::{
    BlockBasedOptions, ColumnFamilyDescriptor, DB, DBCompressionType, Options, SliceTransform,
};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Format version of the database; a mismatch refuses to open.
pub const DB_FORMAT_VERSION: u32 = 4;

/// Column family names.
pub mod cf {
    /// The `state` record.
    pub const META: &str = "meta";
    /// height → header ‖ cumulative tx count.
    pub const HEADERS: &str = "headers";
    /// txnum → txid.
    pub const TXIDS: &str = "txids";
    /// txid prefix ‖ txnum → ().
    pub const TXID_INDEX: &str = "txid_index";
    /// txid prefix ‖ vout ‖ txnum → hashX ‖ value (unspent).
    pub const OUTPOINTS: &str = "outpoints";
    /// hashX ‖ txnum ‖ vout → value (unspent).
    pub const UTXOS: &str = "utxos";
    /// hashX ‖ txnum → ().
    pub const HISTORY: &str = "history";
    /// funding txnum ‖ vout → spending txnum.
    pub const SPENDERS: &str = "spenders";
    /// height → undo record.
    pub const UNDO: &str = "undo";
    /// Bulk-loaded during the initial sync, without compactions until it ends (see
    /// [`super::Store::finish_bulk_load`]). Of these only `outpoints` is read while syncing,
    /// through the prefix filters of its L0 files.
    pub const BULK: [&str; 8] = [
        HEADERS, TXIDS, TXID_INDEX, OUTPOINTS, UTXOS, HISTORY, SPENDERS, UNDO,
    ];
    /// All of them.
    pub const ALL: [&str; 9] = [
        META, HEADERS, TXIDS, TXID_INDEX, OUTPOINTS, UTXOS, HISTORY, SPENDERS, UNDO,
    ];
}

const STATE_KEY: &[u8] = b"state";

/// The committed state, stored in `meta` and rewritten by every batch.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct DbState {
    /// Database format version.
    pub db_version: u32,
    /// Genesis hash (display hex) of the chain indexed.
    pub genesis: String,
    /// Coin and network names.
    pub coin: String,
    /// Number of blocks indexed (tip height + 1; 0 for an empty database).
    pub block_count: u32,
    /// Transactions indexed.
    pub tx_count: u64,
    /// Completed flushes.
    pub flush_count: u64,
    /// True until the first catch-up with the node.
    pub first_sync: bool,
}

/// Chain data kept in memory: one entry per indexed block.
#[derive(Default, Debug)]
pub struct ChainState {
    /// Headers by height.
    pub headers: Vec<[u8; HEADER_LEN]>,
    /// Block hashes by height.
    pub hashes: Vec<BlockHash>,
    /// Cumulative tx count after each height (tx numbers of block h are
    /// `tx_counts[h-1] .. tx_counts[h]`). Shared with readers' views: a query takes a
    /// reference, not a copy (on mainnet the list is several megabytes); writers go through
    /// `Arc::make_mut`, which copies only while a view of the old list is alive.
    pub tx_counts: std::sync::Arc<Vec<u64>>,
}

impl ChainState {
    /// Height of the tip, or `None` for an empty chain.
    pub fn tip_height(&self) -> Option<u32> {
        (self.headers.len() as u32).checked_sub(1)
    }

    /// Total transactions indexed.
    pub fn tx_count(&self) -> u64 {
        self.tx_counts.last().copied().unwrap_or(0)
    }

    /// First tx number of the block at `height`.
    pub fn first_txnum(&self, height: u32) -> u64 {
        if height == 0 {
            0
        } else {
            self.tx_counts[height as usize - 1]
        }
    }
}

/// The open database plus the shared in-memory chain state.
pub struct Store {
    db: DB,
    path: PathBuf,
    state: RwLock<ChainState>,
    meta: RwLock<DbState>,
    /// Bulk-load mode (the initial sync): flushes are ingested as SST files, the `BULK`
    /// families but `outpoints` are not compacted. See [`Store::finish_bulk_load`].
    bulk: std::sync::atomic::AtomicBool,
    /// Set by [`Store::stop_background_work`]: no compaction is to start any more.
    stopping: std::sync::atomic::AtomicBool,
    /// Bulk-loaded families handed back to automatic compactions during the bulk load.
    crowded: parking_lot::Mutex<Vec<&'static str>>,
    /// SST writer options of the bulk-loaded families ([`sink::SstSink`]).
    writer_opts: Vec<(&'static str, Options)>,
    /// Held by every commit ([`Store::commit`], [`Store::commit_files`]) and by
    /// [`Store::checkpoint`]: a checkpoint is taken between two commits, never during one.
    /// Readers do not take it.
    commit_gate: parking_lot::Mutex<()>,
}

/// L0 files one bulk-loaded family may gather before it is compacted anyway (bounds the
/// files a query would have to look at, and the final compaction's fan-in).
const BULK_MAX_L0_FILES: u64 = 200;

/// Tuning of the database ([`crate::ControllerBuilder::store_options`]); start from
/// `StoreOptions::default()` and change the fields wanted.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct StoreOptions {
    /// RocksDB block cache size in bytes.
    pub block_cache_bytes: usize,
    /// Maximum open files (`-1`: unlimited).
    pub max_open_files: i32,
    /// Memtable memory across all column families.
    pub memtable_bytes: usize,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            block_cache_bytes: 128 << 20,
            max_open_files: 1024,
            memtable_bytes: 128 << 20,
        }
    }
}

fn cf_options(name: &str, cache: &rocksdb::Cache) -> Options {
    cf_options_with(name, cache, true)
}

/// [`cf_options`], with or without the family's prefix bloom filters in the files written.
fn cf_options_with(name: &str, cache: &rocksdb::Cache, filters: bool) -> Options {
    let mut o = Options::default();
    o.set_compression_type(DBCompressionType::Lz4);
    o.set_bottommost_compression_type(DBCompressionType::Zstd);
    // The bottom level holds nearly all the data and is rewritten rarely (once after the
    // initial sync, then as it grows): ZSTD level 9 there costs compaction time, not query
    // time, and takes the database about 5 % below level 3.
    o.set_bottommost_compression_options(-14, 9, 0, 0, true);
    // Lookups in these families are for keys that exist (a spent output, a confirmed txid),
    // so the bottom level, where a lookup ends anyway, needs no filter.
    if matches!(name, cf::OUTPOINTS | cf::TXID_INDEX) {
        o.set_optimize_filters_for_hits(true);
    }
    let small = matches!(name, cf::META | cf::HEADERS);
    // Memtables of several families fill at once during the initial sync; each may have a
    // second one waiting to be written, so they are kept moderate.
    o.set_write_buffer_size(if small { 4 << 20 } else { 32 << 20 });
    o.set_target_file_size_base(64 << 20);
    o.set_level_compaction_dynamic_level_bytes(true);
    let mut t = BlockBasedOptions::default();
    t.set_block_cache(cache);
    t.set_block_size(16 << 10);
    t.set_format_version(5);
    // Partitioned index and filters: a lookup loads a small partition, not a whole
    // multi-megabyte filter block (which the LRU cache evicted and re-read on every seek
    // once the database outgrew the cache).
    t.set_index_type(rocksdb::BlockBasedIndexType::TwoLevelIndexSearch);
    t.set_partition_filters(true);
    t.set_metadata_block_size(4096);
    t.set_cache_index_and_filter_blocks(true);
    t.set_cache_index_and_filter_blocks_with_high_priority(true);
    t.set_pin_top_level_index_and_filter(true);
    t.set_pin_l0_filter_and_index_blocks_in_cache(true);
    let prefix = match name {
        cf::OUTPOINTS => Some(keys::OUTPOINT_PREFIX_LEN),
        cf::TXID_INDEX => Some(keys::TXID_PREFIX_LEN),
        cf::HISTORY | cf::UTXOS => Some(crate::hash::HASHX_LEN),
        _ => None,
    };
    if let Some(len) = prefix {
        o.set_prefix_extractor(SliceTransform::create_fixed_prefix(len));
        if filters {
            t.set_bloom_filter(10.0, false);
        }
        t.set_whole_key_filtering(false);
    }
    o.set_block_based_table_factory(&t);
    o
}

impl Store {
    /// Opens (or creates) the database at `path` for `coin`, checking format and chain.
    pub fn open(path: &Path, coin: &CoinParams, opts: &StoreOptions) -> Result<Store> {
        std::fs::create_dir_all(path)?;
        let cache = rocksdb::Cache::new_lru_cache(opts.block_cache_bytes);
        let mut db_opts = Options::default();
        db_opts.create_if_missing(true);
        db_opts.create_missing_column_families(true);
        db_opts.set_max_open_files(opts.max_open_files);
        db_opts.set_max_background_jobs(2);
        db_opts.set_max_subcompactions(2);
        // Memtables of all families are flushed together.
        db_opts.set_atomic_flush(true);
        db_opts.set_bytes_per_sync(1 << 20);
        db_opts.set_max_total_wal_size(256 << 20);
        // Bound memtables across all column families (each would otherwise grow to its own
        // write buffer size before flushing).
        db_opts.set_db_write_buffer_size(opts.memtable_bytes);
        let cfs = cf::ALL
            .iter()
            .map(|n| ColumnFamilyDescriptor::new(*n, cf_options(n, &cache)));
        let db = DB::open_cf_descriptors(&db_opts, path, cfs).db()?;
        let writer_opts = sink::writer_options(&cache);
        let genesis = coin.genesis_hash.to_display_hex();
        let meta_cf = db.cf_handle(cf::META).expect("meta cf");
        let meta = match db.get_cf(meta_cf, STATE_KEY).db()? {
            Some(bytes) => {
                let st: DbState = serde_json::from_slice(&bytes)
                    .map_err(|e| IndexError::Corrupt(format!("unreadable state record: {e}")))?;
                if st.db_version != DB_FORMAT_VERSION {
                    return Err(IndexError::FormatVersion {
                        path: path.into(),
                        found: st.db_version,
                        expected: DB_FORMAT_VERSION,
                    });
                }
                if st.genesis != genesis {
                    return Err(IndexError::WrongChain {
                        path: path.into(),
                        found: st.genesis,
                        expected: genesis,
                    });
                }
                st
            }
            None => DbState {
                db_version: DB_FORMAT_VERSION,
                genesis,
                coin: coin.to_string(),
                block_count: 0,
                tx_count: 0,
                flush_count: 0,
                first_sync: true,
            },
        };
        let meta = sink::recover(&db, path, meta)?;
        let store = Store {
            db,
            path: path.into(),
            state: RwLock::new(ChainState::default()),
            meta: RwLock::new(meta),
            bulk: std::sync::atomic::AtomicBool::new(false),
            stopping: std::sync::atomic::AtomicBool::new(false),
            crowded: parking_lot::Mutex::new(Vec::new()),
            writer_opts,
            commit_gate: parking_lot::Mutex::new(()),
        };
        store.load_chain_state()?;
        if store.meta().first_sync {
            store.set_bulk_load(true)?;
        }
        Ok(store)
    }

    fn load_chain_state(&self) -> Result<()> {
        let meta = self.meta.read().clone();
        let mut st = ChainState::default();
        let cf = self.cf(cf::HEADERS);
        let mut it = self.db.raw_iterator_cf(cf);
        it.seek_to_first();
        while it.valid() {
            let (Some(k), Some(v)) = (it.key(), it.value()) else {
                break;
            };
            let height = u32::from_be_bytes(
                k.try_into()
                    .map_err(|_| IndexError::Corrupt("header key".into()))?,
            );
            if height >= meta.block_count {
                // Written by no committed batch: cannot happen with atomic batches.
                return Err(IndexError::Corrupt(format!(
                    "header at {height} beyond committed tip"
                )));
            }
            if height as usize != st.headers.len() || v.len() != HEADER_LEN + 8 {
                return Err(IndexError::Corrupt(format!(
                    "header record at height {height}"
                )));
            }
            let mut h = [0u8; HEADER_LEN];
            h.copy_from_slice(&v[..HEADER_LEN]);
            st.hashes.push(Hash32::sha256d(&h));
            st.headers.push(h);
            std::sync::Arc::make_mut(&mut st.tx_counts).push(u64::from_be_bytes(
                v[HEADER_LEN..].try_into().expect("8 bytes"),
            ));
            it.next();
        }
        it.status().db()?;
        if st.headers.len() as u32 != meta.block_count || st.tx_count() != meta.tx_count {
            return Err(IndexError::Corrupt(format!(
                "state says {} blocks / {} txs, headers give {} / {}",
                meta.block_count,
                meta.tx_count,
                st.headers.len(),
                st.tx_count()
            )));
        }
        *self.state.write() = st;
        Ok(())
    }

    /// The RocksDB handle.
    pub fn db(&self) -> &DB {
        &self.db
    }

    /// A column family handle.
    pub fn cf(&self, name: &str) -> &rocksdb::ColumnFamily {
        self.db
            .cf_handle(name)
            .expect("column family created at open")
    }

    /// The database directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The shared in-memory chain state.
    pub fn chain(&self) -> &RwLock<ChainState> {
        &self.state
    }

    /// A copy of the committed state record.
    pub fn meta(&self) -> DbState {
        self.meta.read().clone()
    }

    /// Commits `batch` together with the new state record, then lets `update` change the
    /// in-memory chain state while readers are held off, so that they never see one without
    /// the other.
    pub fn commit(
        &self,
        mut batch: rocksdb::WriteBatch,
        mut new_meta: DbState,
        sync: bool,
        update: impl FnOnce(&mut ChainState),
    ) -> Result<()> {
        new_meta.flush_count = self.meta.read().flush_count + 1;
        let bytes = serde_json::to_vec(&new_meta).expect("state serializes");
        batch.put_cf(self.cf(cf::META), STATE_KEY, bytes);
        // Through the WAL, every committed batch survives a crash of the process; `sync`
        // (at the tip) makes it survive a power loss too. The initial sync's large flushes
        // do not come this way but as ingested files ([`Store::commit_files`]).
        let mut wo = rocksdb::WriteOptions::default();
        wo.set_sync(sync);
        let _gate = self.commit_gate.lock();
        let mut chain = self.state.write();
        let t0 = std::time::Instant::now();
        self.db.write_opt(batch, &wo).db()?;
        tracing::debug!(secs = t0.elapsed().as_secs_f64(), "flush: batch written");
        update(&mut chain);
        debug_assert_eq!(chain.headers.len() as u32, new_meta.block_count);
        *self.meta.write() = new_meta;
        Ok(())
    }

    /// Writes a RocksDB checkpoint of the committed state into `dir` (which must not exist;
    /// its parent must): hard links to the SST files on the same filesystem, copies
    /// otherwise, the memtables written out first. It is taken between two commits (the
    /// commit gate is held, so the sync loop's next commit waits; readers do not), and
    /// refused during the initial sync, whose flushes are committed in several steps
    /// (invariant 9). Returns the state record the checkpoint holds (read back from the
    /// copy) and its tip's hash.
    pub fn checkpoint(&self, dir: &Path) -> Result<(DbState, BlockHash)> {
        self.snapshot_allowed()?;
        let gate = self.commit_gate.lock();
        // Under the gate no commit is in progress: the state record in the database, the
        // in-memory copy and the chain state agree, and stay so until it is released.
        self.snapshot_allowed()?;
        let meta = self.meta();
        let tip = *self
            .state
            .read()
            .hashes
            .last()
            .ok_or_else(|| IndexError::Corrupt("no tip in a synced index".into()))?;
        rocksdb::checkpoint::Checkpoint::new(&self.db)
            .and_then(|c| c.create_checkpoint(dir))
            .db()?;
        drop(gate);
        // Read the copy's own state record back: it must be the one committed.
        let copied = read_state(dir)?;
        if copied != meta {
            return Err(IndexError::Corrupt(format!(
                "the checkpoint at {} holds state {copied:?}, expected {meta:?}",
                dir.display()
            )));
        }
        Ok((meta, tip))
    }

    /// Fails with [`crate::SnapshotError::InitialSync`] while a snapshot cannot be taken:
    /// during the initial sync (its first catch-up is not committed yet) or with nothing
    /// indexed.
    pub fn snapshot_allowed(&self) -> Result<()> {
        let meta = self.meta();
        if meta.first_sync || meta.block_count == 0 {
            return Err(crate::error::SnapshotError::InitialSync {
                height: meta.block_count.checked_sub(1),
            }
            .into());
        }
        Ok(())
    }

    /// Starts a flush of the bulk load: an empty directory for its SST files.
    pub fn start_bulk_flush(&self) -> Result<()> {
        sink::prepare_dir(&self.path)
    }

    /// A sink writing SST files for the flush started by [`Store::start_bulk_flush`];
    /// sinks of one flush need distinct `tag`s and disjoint families.
    pub fn sst_sink(&self, tag: &'static str) -> sink::SstSink<'_> {
        sink::SstSink::new(self, tag)
    }

    fn writer_options(&self, family: &str) -> &Options {
        &self
            .writer_opts
            .iter()
            .find(|(name, _)| *name == family)
            .unwrap_or_else(|| panic!("{family} is not a bulk-loaded family"))
            .1
    }

    fn ingest_dir(&self) -> PathBuf {
        sink::ingest_dir(&self.path)
    }

    /// Commits a bulk flush's `files` (written by [`Store::sst_sink`]) with the new state
    /// record, crash-safely (see [`sink`]), then lets `update` change the in-memory chain
    /// state as [`Store::commit`] does.
    pub fn commit_files(
        &self,
        files: &[sink::FamilyFile],
        new_meta: DbState,
        update: impl FnOnce(&mut ChainState),
    ) -> Result<()> {
        let _gate = self.commit_gate.lock();
        let mut chain = self.state.write();
        let t0 = std::time::Instant::now();
        let new_meta = self.ingest_files(files, new_meta, None)?;
        tracing::debug!(secs = t0.elapsed().as_secs_f64(), "flush: files ingested");
        update(&mut chain);
        debug_assert_eq!(chain.headers.len() as u32, new_meta.block_count);
        *self.meta.write() = new_meta;
        drop(chain);
        sink::clear(&self.path)
    }

    /// Steps (2)–(4) of a bulk flush's commit; `stop_after` (tests) stops after ingesting
    /// that many files, as a crash would.
    fn ingest_files(
        &self,
        files: &[sink::FamilyFile],
        mut new_meta: DbState,
        stop_after: Option<usize>,
    ) -> Result<DbState> {
        new_meta.flush_count = self.meta.read().flush_count + 1;
        sink::write_intent_and_ingest(&self.db, &self.path, &new_meta, files, stop_after)?;
        if stop_after.is_some() {
            return Ok(new_meta);
        }
        let mut batch = rocksdb::WriteBatch::default();
        let bytes = serde_json::to_vec(&new_meta).expect("state serializes");
        batch.put_cf(self.cf(cf::META), STATE_KEY, bytes);
        // Synced: the intent that could replay this flush is deleted next, so after a
        // power loss the state record must be on disk, not only in the page cache.
        let mut wo = rocksdb::WriteOptions::default();
        wo.set_sync(true);
        self.db.write_opt(batch, &wo).db()?;
        Ok(new_meta)
    }

    /// [`Store::commit_files`] cut short after `stop_after` files, as by a crash: the
    /// in-memory state and the state record stay as they were.
    #[cfg(test)]
    fn commit_files_interrupted(
        &self,
        files: &[sink::FamilyFile],
        new_meta: DbState,
        stop_after: Option<usize>,
    ) -> Result<()> {
        self.ingest_files(files, new_meta, stop_after.or(Some(files.len())))
            .map(|_| ())
    }

    /// Whether the store is in bulk-load mode (the initial sync).
    pub fn is_bulk_load(&self) -> bool {
        self.bulk.load(std::sync::atomic::Ordering::Acquire)
    }

    fn set_bulk_load(&self, on: bool) -> Result<()> {
        // L0 files of the bulk load are written uncompressed: the compaction after it reads
        // them once and writes the bottom level with ZSTD. Automatic compactions of these
        // families stay off until that compaction has been through each of them: with them
        // on, RocksDB would stop writes at 36 L0 files (`level0_stop_writes_trigger`).
        //
        // `outpoints` is the exception: the sync reads it (every spend of an output flushed
        // and no longer cached is a prefix seek there), and each flush ingests one more
        // file into its L0, so uncompacted, a seek consults every flush's file: a tenth of
        // mainnet gathered a hundred of them, and the sync slowed in proportion to its
        // length. It is compacted as it goes (once 8 files gather in L0), its L0 write
        // triggers far above what compactions leave, so that ingestion never waits on them.
        for name in cf::BULK {
            let opts: &[(&str, &str)] = match (on, name) {
                (true, cf::OUTPOINTS) => &[
                    ("disable_auto_compactions", "false"),
                    ("level0_file_num_compaction_trigger", "8"),
                    ("level0_slowdown_writes_trigger", "800"),
                    ("level0_stop_writes_trigger", "1200"),
                ],
                (true, _) => &[
                    ("disable_auto_compactions", "true"),
                    ("compression", "kNoCompression"),
                ],
                (false, _) => &[("compression", "kLZ4Compression")],
            };
            self.db.set_options_cf(self.cf(name), opts).db()?;
        }
        // Compactions during the bulk load (of `outpoints`, and of crowded bulk families)
        // rewrite the bottom level again and again: LZ4 there, ZSTD again once the sync is
        // done (the compaction after it writes every family's bottom level with ZSTD).
        let bottom = if on { "kLZ4Compression" } else { "kZSTD" };
        for name in cf::ALL {
            self.db
                .set_options_cf(self.cf(name), &[("bottommost_compression", bottom)])
                .db()?;
        }
        self.bulk.store(on, std::sync::atomic::Ordering::Release);
        Ok(())
    }

    fn l0_files(&self, name: &str) -> u64 {
        self.db
            .property_int_value_cf(self.cf(name), "rocksdb.num-files-at-level0")
            .ok()
            .flatten()
            .unwrap_or(0)
    }

    /// During the bulk load: a bulk-loaded family that has gathered too many L0 files (only
    /// a very long initial sync, such as mainnet's, gets there) goes back to RocksDB's own
    /// leveled compaction for the rest of the sync, in the background, with its L0 write
    /// triggers raised above what it holds so that writes go on meanwhile.
    pub fn compact_if_crowded(&self) {
        if !self.is_bulk_load() {
            return;
        }
        for name in cf::BULK {
            let l0 = self.l0_files(name);
            if l0 > BULK_MAX_L0_FILES && !self.crowded.lock().contains(&name) {
                self.crowded.lock().push(name);
                tracing::info!(
                    cf = name,
                    l0_files = l0,
                    "compacting in the background during the initial sync"
                );
                let slowdown = (4 * BULK_MAX_L0_FILES).to_string();
                let stop = (6 * BULK_MAX_L0_FILES).to_string();
                let set = self.db.set_options_cf(
                    self.cf(name),
                    &[
                        ("level0_slowdown_writes_trigger", slowdown.as_str()),
                        ("level0_stop_writes_trigger", stop.as_str()),
                        ("disable_auto_compactions", "false"),
                    ],
                );
                if let Err(e) = set {
                    tracing::warn!(cf = name, "cannot turn compactions on: {e}");
                }
            }
        }
    }

    /// Compacts one family over its whole key range, rewriting its bottom level too.
    pub fn compact_cf(&self, name: &str) {
        // Not exclusive: the families compacted automatically (`outpoints`, those already
        // handed back) go on being compacted meanwhile.
        let mut o = rocksdb::CompactOptions::default();
        o.set_exclusive_manual_compaction(false);
        o.set_bottommost_level_compaction(rocksdb::BottommostLevelCompaction::ForceOptimized);
        self.db
            .compact_range_cf_opt(self.cf(name), None::<&[u8]>, None::<&[u8]>, &o);
    }

    /// Hands a family back to RocksDB's automatic compactions, with its default L0 write
    /// triggers.
    fn enable_auto_compactions(&self, name: &str) {
        let set = self.db.set_options_cf(
            self.cf(name),
            &[
                ("level0_file_num_compaction_trigger", "4"),
                ("level0_slowdown_writes_trigger", "20"),
                ("level0_stop_writes_trigger", "36"),
                ("disable_auto_compactions", "false"),
            ],
        );
        if let Err(e) = set {
            tracing::warn!(cf = name, "cannot turn compactions on: {e}");
        }
    }

    /// Whether bulk-loaded families still wait for the compaction that ends the bulk load
    /// (it was cut short by a stop): more L0 files than RocksDB's write slowdown trigger.
    pub fn needs_bulk_compaction(&self) -> bool {
        !self.meta().first_sync && cf::BULK.iter().any(|n| self.l0_files(n) >= 20)
    }

    /// Before a post-sync compaction resumed after a restart: keeps RocksDB from compacting
    /// (and stopping writes to) the families the compaction will go through.
    pub fn hold_bulk_compactions(&self) -> Result<()> {
        for name in cf::BULK {
            self.db
                .set_options_cf(self.cf(name), &[("disable_auto_compactions", "true")])
                .db()?;
        }
        Ok(())
    }

    /// Ends the bulk load of the initial sync: writes the memtables to disk and turns
    /// automatic compactions back on. [`Store::compact_after_bulk_load`] then merges
    /// each family's files in the background; queries are correct meanwhile, only slower.
    pub fn finish_bulk_load(&self) -> Result<()> {
        if !self.is_bulk_load() {
            return Ok(());
        }
        self.flush_memtables()?;
        self.set_bulk_load(false)?;
        tracing::info!(
            db_mb = self.disk_size() >> 20,
            "initial sync's bulk load done; compacting in the background"
        );
        Ok(())
    }

    /// Compacts every family once, one after the other, in one pass down to the bottom level
    /// (ZSTD; spent outputs' entries and tombstones go away): the end of the initial sync's
    /// bulk load, run on a thread of its own. It holds the store only while one family is
    /// being compacted, so a shutdown is not held up for long.
    pub fn compact_after_bulk_load(store: std::sync::Weak<Store>) {
        let t0 = std::time::Instant::now();
        let stopped = |s: &Store| s.stopping.load(std::sync::atomic::Ordering::Acquire);
        for name in cf::ALL {
            let Some(s) = store.upgrade() else { return };
            if stopped(&s) {
                return;
            }
            s.compact_cf(name);
            if stopped(&s) {
                return;
            }
            if cf::BULK.contains(&name) {
                s.enable_auto_compactions(name);
            }
        }
        if let Some(s) = store.upgrade()
            && !stopped(&s)
        {
            tracing::info!(
                secs = format!("{:.1}", t0.elapsed().as_secs_f64()),
                db_mb = s.disk_size() >> 20,
                "database compacted after the initial sync"
            );
        }
    }

    /// Stops RocksDB's background work for good (a compaction in progress is abandoned, to
    /// be redone after the next open) and waits for it: the index is shutting down, and the
    /// store is not written to again (a stopped `Controller` is not restarted).
    pub fn stop_background_work(&self) {
        self.stopping
            .store(true, std::sync::atomic::Ordering::Release);
        self.db.cancel_all_background_work(true);
    }

    /// Writes every memtable to SST files (all families atomically) and waits for it.
    pub fn flush_memtables(&self) -> Result<()> {
        let handles: Vec<_> = cf::ALL.iter().map(|n| self.cf(n)).collect();
        let mut fo = rocksdb::FlushOptions::default();
        fo.set_wait(true);
        self.db.flush_cfs_opt(&handles, &fo).db()?;
        Ok(())
    }

    /// Sizes of the database: per column family, SST and memtable bytes and an estimate of
    /// the number of keys (with `detailed`, also the data, index and filter block bytes of
    /// its SST files, which reads every file's table properties); the directory's size on
    /// disk; the memory the engine holds.
    pub fn db_stats(&self, detailed: bool) -> DbStats {
        let column_families = cf::ALL
            .iter()
            .map(|name| {
                let h = self.cf(name);
                let prop = |p: &str| {
                    self.db
                        .property_int_value_cf(h, p)
                        .ok()
                        .flatten()
                        .unwrap_or(0)
                };
                let mut stats = CfStats {
                    name,
                    sst_bytes: prop("rocksdb.total-sst-files-size"),
                    memtable_bytes: prop("rocksdb.size-all-mem-tables"),
                    keys: prop("rocksdb.estimate-num-keys"),
                    data_block_bytes: None,
                    index_block_bytes: None,
                    filter_block_bytes: None,
                };
                if detailed {
                    let props = self
                        .db
                        .property_value_cf(h, "rocksdb.aggregated-table-properties")
                        .ok()
                        .flatten()
                        .unwrap_or_default();
                    stats.data_block_bytes = table_property(&props, "data block size");
                    stats.index_block_bytes = table_property(&props, "index block size");
                    stats.filter_block_bytes = table_property(&props, "filter block size");
                }
                stats
            })
            .collect();
        DbStats {
            column_families,
            disk_bytes: self.disk_size(),
            memory_bytes: self.memory_usage(),
        }
    }

    /// The committed txid of `txnum`, if there is one.
    pub fn txid(&self, txnum: u64) -> Result<Option<crate::hash::Txid>> {
        let chunk = self
            .db
            .get_pinned_cf(self.cf(cf::TXIDS), keys::txids_chunk_key(txnum))
            .db()?;
        Ok(chunk.and_then(|c| keys::txid_in_chunk(&c, txnum)))
    }

    /// The committed txids of the last, partial `txids` chunk of a chain of `tx_count`
    /// transactions (empty when its last chunk is full).
    pub fn txid_tail(&self, tx_count: u64) -> Result<Vec<crate::hash::Txid>> {
        let base = tx_count - tx_count % keys::TXIDS_PER_CHUNK;
        if base == tx_count {
            return Ok(Vec::new());
        }
        let chunk = self
            .db
            .get_pinned_cf(self.cf(cf::TXIDS), keys::txids_chunk_key(base))
            .db()?
            .ok_or_else(|| IndexError::Corrupt(format!("no txids chunk for tx {base}")))?;
        (base..tx_count)
            .map(|n| keys::txid_in_chunk(&chunk, n))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| IndexError::Corrupt(format!("short txids chunk at tx {base}")))
    }

    /// Memory RocksDB holds, in bytes: memtables (also those waiting to be written), the
    /// block cache (with pinned index and filter blocks) and table readers.
    pub fn memory_usage(&self) -> u64 {
        let db_int = |p: &str| self.db.property_int_value(p).ok().flatten().unwrap_or(0);
        let per_cf = |p: &str| {
            cf::ALL
                .iter()
                .map(|n| {
                    self.db
                        .property_int_value_cf(self.cf(n), p)
                        .ok()
                        .flatten()
                        .unwrap_or(0)
                })
                .sum::<u64>()
        };
        per_cf("rocksdb.size-all-mem-tables")
            + db_int("rocksdb.block-cache-usage")
            + per_cf("rocksdb.estimate-table-readers-mem")
    }

    /// Size of the database files on disk, in bytes.
    pub fn disk_size(&self) -> u64 {
        fn walk(p: &Path) -> u64 {
            std::fs::read_dir(p)
                .map(|rd| {
                    rd.flatten()
                        .map(|e| match e.metadata() {
                            Ok(m) if m.is_dir() => walk(&e.path()),
                            Ok(m) => m.len(),
                            Err(_) => 0,
                        })
                        .sum()
                })
                .unwrap_or(0)
        }
        walk(&self.path)
    }
}

/// The state record of the database at `path`, read from a read-only open of its `meta`
/// family.
fn read_state(path: &Path) -> Result<DbState> {
    let db = DB::open_cf_for_read_only(&Options::default(), path, [cf::META], false).db()?;
    let meta = db
        .cf_handle(cf::META)
        .ok_or_else(|| IndexError::Corrupt("no meta column family".into()))?;
    let bytes = db
        .get_cf(meta, STATE_KEY)
        .db()?
        .ok_or_else(|| IndexError::Corrupt("no state record".into()))?;
    serde_json::from_slice(&bytes)
        .map_err(|e| IndexError::Corrupt(format!("unreadable state record: {e}")))
}

/// One field of RocksDB's aggregated table properties text ("name=value; ..."); field names
/// may carry a parenthesised detail ("index block size (user-key? 1, ...)").
fn table_property(props: &str, name: &str) -> Option<u64> {
    props
        .split(';')
        .filter_map(|field| field.split_once('='))
        .find(|(k, _)| k.trim().starts_with(name))
        .and_then(|(_, v)| v.trim().parse().ok())
}

/// Sizes of the index database (see [`crate::Controller::db_stats`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct DbStats {
    /// One entry per column family, always in the same order.
    pub column_families: Vec<CfStats>,
    /// Bytes of all files in the database directory (SST files, write-ahead log, manifest).
    pub disk_bytes: u64,
    /// Memory the database engine holds: memtables, block cache, table readers.
    pub memory_bytes: u64,
}

impl DbStats {
    /// Bytes in SST files, over all column families.
    pub fn sst_bytes(&self) -> u64 {
        self.column_families.iter().map(|c| c.sst_bytes).sum()
    }
}

/// Size of one column family of the database (see [`DbStats`]).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct CfStats {
    /// Column family name.
    pub name: &'static str,
    /// Bytes in SST files.
    pub sst_bytes: u64,
    /// Bytes in memtables (not yet flushed to SST files).
    pub memtable_bytes: u64,
    /// Estimated number of keys.
    pub keys: u64,
    /// Bytes of data blocks in its SST files (only in detailed stats).
    pub data_block_bytes: Option<u64>,
    /// Bytes of index blocks in its SST files (only in detailed stats).
    pub index_block_bytes: Option<u64>,
    /// Bytes of filter blocks in its SST files (only in detailed stats).
    pub filter_block_bytes: Option<u64>,
}
