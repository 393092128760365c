//! The two ways a flush's writes reach the database: one `WriteBatch` (at the tip), or
//! during the initial sync's bulk load, SST files written directly and ingested, which
//! skips RocksDB's write path (batch, memtable, memtable-to-L0 write) altogether.
//!
//! Ingestion is atomic per column family only, so a bulk flush commits in steps that a
//! crash at any instant leaves recoverable: (1) every family's file is written and synced;
//! (2) an intent record naming the files and the new state record is written and renamed
//! into place; (3) each file is ingested (moved into the database); (4) the state record is
//! written (through the WAL); (5) the intent is removed. `recover` runs at open, before
//! anything reads the database: an intent whose state is newer than the committed one is
//! completed (files not yet ingested are ingested, then the state is written); ingesting a
//! file again is harmless, its keys and values are the same. Files of a flush that crashed
//! before its intent existed are deleted.

use super::{DbState, STATE_KEY, Store, cf};
use crate::error::DbResultExt;
use crate::error::{IndexError, Result};
use rocksdb::{DB, IngestExternalFileOptions, Options, SstFileWriter, WriteBatch};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Where a flush's writes go: puts and deletes per column family.
pub trait Sink {
    /// Puts `value` at `key` in `family`.
    fn put(&mut self, family: &'static str, key: &[u8], value: &[u8]) -> Result<()>;
    /// Deletes `key` in `family`.
    fn delete(&mut self, family: &'static str, key: &[u8]) -> Result<()>;
}

/// A [`Sink`] filling one `WriteBatch`.
pub struct BatchSink<'s> {
    store: &'s Store,
    /// The batch built so far.
    pub batch: WriteBatch,
    last: Option<(&'static str, &'s rocksdb::ColumnFamily)>,
}

impl<'s> BatchSink<'s> {
    /// An empty batch of `capacity` bytes for `store`.
    pub fn new(store: &'s Store, capacity: usize) -> Self {
        BatchSink {
            store,
            batch: WriteBatch::with_capacity_bytes(capacity),
            last: None,
        }
    }

    fn handle(&mut self, family: &'static str) -> &'s rocksdb::ColumnFamily {
        match self.last {
            Some((name, handle)) if name == family => handle,
            _ => {
                let handle = self.store.cf(family);
                self.last = Some((family, handle));
                handle
            }
        }
    }
}

impl Sink for BatchSink<'_> {
    fn put(&mut self, family: &'static str, key: &[u8], value: &[u8]) -> Result<()> {
        let handle = self.handle(family);
        self.batch.put_cf(handle, key, value);
        Ok(())
    }

    fn delete(&mut self, family: &'static str, key: &[u8]) -> Result<()> {
        let handle = self.handle(family);
        self.batch.delete_cf(handle, key);
        Ok(())
    }
}

/// Name of the directory, inside the database's, that holds a bulk flush's files.
const INGEST_DIR: &str = "ingest";
/// The intent record's file name in [`INGEST_DIR`].
const INTENT_FILE: &str = "intent.json";

/// A family's file of one bulk flush.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FamilyFile {
    /// Column family.
    pub family: String,
    /// File name in the ingest directory.
    pub file: String,
}

/// The intent record of a bulk flush (see the module docs).
#[derive(Debug, Serialize, Deserialize)]
struct Intent {
    state: DbState,
    files: Vec<FamilyFile>,
}

/// SST writer options of each bulk-loaded family: the family's own table options (prefix
/// extractor, block size), no compression (the compaction after the bulk load writes the
/// bottom level with ZSTD, as for memtable-written L0 files), and prefix bloom filters only
/// in `outpoints`, the one family the sync reads (the spent outputs not in memory). The
/// others' filters serve queries; the compaction that ends the bulk load rewrites every file
/// with them (until it has, a query reads each such file's index instead: slower, not wrong).
pub(super) fn writer_options(cache: &rocksdb::Cache) -> Vec<(&'static str, Options)> {
    cf::BULK
        .iter()
        .map(|name| {
            let mut o = super::cf_options_with(name, cache, *name == cf::OUTPOINTS);
            o.set_compression_type(rocksdb::DBCompressionType::None);
            o.set_bottommost_compression_type(rocksdb::DBCompressionType::None);
            (*name, o)
        })
        .collect()
}

/// A [`Sink`] writing one SST file per family (each family's keys must come in ascending
/// order, one family after the other). Several may fill disjoint families at once.
pub struct SstSink<'s> {
    store: &'s Store,
    /// Distinguishes the files of sinks of the same flush.
    tag: &'static str,
    open: Option<(&'static str, SstFileWriter<'s>)>,
    done: Vec<FamilyFile>,
}

impl<'s> SstSink<'s> {
    /// A sink whose files are named after `tag` and their family.
    pub fn new(store: &'s Store, tag: &'static str) -> Self {
        SstSink {
            store,
            tag,
            open: None,
            done: Vec::new(),
        }
    }

    fn writer(&mut self, family: &'static str) -> Result<&mut SstFileWriter<'s>> {
        let same = matches!(&self.open, Some((name, _)) if *name == family);
        if !same {
            self.close()?;
            let opts = self.store.writer_options(family);
            let writer = SstFileWriter::create(opts);
            let file = format!("{}-{family}.sst", self.tag);
            writer.open(self.store.ingest_dir().join(&file)).db()?;
            self.open = Some((family, writer));
            self.done.push(FamilyFile {
                family: family.to_string(),
                file,
            });
        }
        Ok(&mut self.open.as_mut().expect("writer just opened").1)
    }

    fn close(&mut self) -> Result<()> {
        if let Some((_, mut writer)) = self.open.take() {
            writer.finish().db()?;
        }
        Ok(())
    }

    /// Finishes the last file and returns all of them.
    pub fn finish(mut self) -> Result<Vec<FamilyFile>> {
        self.close()?;
        Ok(std::mem::take(&mut self.done))
    }
}

impl Sink for SstSink<'_> {
    fn put(&mut self, family: &'static str, key: &[u8], value: &[u8]) -> Result<()> {
        self.writer(family)?.put(key, value).db()?;
        Ok(())
    }

    fn delete(&mut self, family: &'static str, key: &[u8]) -> Result<()> {
        self.writer(family)?.delete(key).db()?;
        Ok(())
    }
}

/// The ingest directory of the database at `db_path`.
pub(super) fn ingest_dir(db_path: &Path) -> PathBuf {
    db_path.join(INGEST_DIR)
}

/// Prepares an empty ingest directory for a new bulk flush.
pub(super) fn prepare_dir(db_path: &Path) -> Result<()> {
    let dir = ingest_dir(db_path);
    if dir.exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    std::fs::create_dir_all(&dir)?;
    Ok(())
}

/// Steps (2) and (3) of a bulk flush's commit: records the intent, then ingests the files.
/// `stop_after` (tests only) stops after that many files, as a crash would.
pub(super) fn write_intent_and_ingest(
    db: &DB,
    db_path: &Path,
    state: &DbState,
    files: &[FamilyFile],
    stop_after: Option<usize>,
) -> Result<()> {
    let dir = ingest_dir(db_path);
    let intent = Intent {
        state: state.clone(),
        files: files.to_vec(),
    };
    let tmp = dir.join("intent.tmp");
    std::fs::write(
        &tmp,
        serde_json::to_vec(&intent).expect("intent serializes"),
    )?;
    std::fs::File::open(&tmp)?.sync_all()?;
    std::fs::rename(&tmp, dir.join(INTENT_FILE))?;
    std::fs::File::open(&dir)?.sync_all()?;
    for (i, f) in files.iter().enumerate() {
        if stop_after == Some(i) {
            return Ok(());
        }
        ingest(db, &dir, f)?;
    }
    Ok(())
}

fn ingest(db: &DB, dir: &Path, f: &FamilyFile) -> Result<()> {
    let handle = db
        .cf_handle(&f.family)
        .ok_or_else(|| IndexError::Corrupt(format!("ingest: no column family {}", f.family)))?;
    let mut o = IngestExternalFileOptions::default();
    // The file is linked into the database and its name here removed once ingested.
    o.set_move_files(true);
    db.ingest_external_file_cf_opts(handle, &o, vec![dir.join(&f.file)])
        .db()?;
    Ok(())
}

/// Step (5): the flush is committed; its directory goes.
pub(super) fn clear(db_path: &Path) -> Result<()> {
    let dir = ingest_dir(db_path);
    if dir.exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    Ok(())
}

/// Completes a bulk flush that a crash interrupted (see the module docs), given the state
/// record committed in `db`; returns the state in force afterwards.
pub(super) fn recover(db: &DB, db_path: &Path, committed: DbState) -> Result<DbState> {
    let dir = ingest_dir(db_path);
    let intent_path = dir.join(INTENT_FILE);
    let mut state = committed;
    if intent_path.exists() {
        let bytes = std::fs::read(&intent_path)?;
        let intent: Intent = serde_json::from_slice(&bytes)
            .map_err(|e| IndexError::Corrupt(format!("unreadable ingest intent: {e}")))?;
        if intent.state.flush_count > state.flush_count {
            let mut ingested = 0;
            for f in &intent.files {
                // A file missing here was moved into the database by its ingestion.
                if dir.join(&f.file).exists() {
                    ingest(db, &dir, f)?;
                    ingested += 1;
                }
            }
            let mut wo = rocksdb::WriteOptions::default();
            wo.set_sync(true);
            let mut batch = WriteBatch::default();
            let meta = db
                .cf_handle(cf::META)
                .ok_or_else(|| IndexError::Corrupt("no meta column family".into()))?;
            let bytes = serde_json::to_vec(&intent.state).expect("state serializes");
            batch.put_cf(meta, STATE_KEY, bytes);
            db.write_opt(batch, &wo).db()?;
            tracing::info!(
                blocks = intent.state.block_count,
                files = ingested,
                "completed a flush interrupted by a crash"
            );
            state = intent.state;
        }
    }
    clear(db_path)?;
    Ok(state)
}

#[cfg(test)]
mod tests {
    use crate::coin::CoinParams;
    use crate::store::{Store, StoreOptions, cf};

    fn header_value(n: u64) -> Vec<u8> {
        let mut v = vec![n as u8; crate::parse::HEADER_LEN];
        v.extend_from_slice(&n.to_be_bytes());
        v
    }

    /// A bulk flush cut short after its first family's ingestion (as by kill -9) is
    /// completed at the next open: every family's keys and the new state are there.
    #[test]
    fn interrupted_bulk_flush_completes_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let coin = CoinParams::from_names("BitcoinSV", "regtest").unwrap();
        {
            let store = Store::open(dir.path(), &coin, &StoreOptions::default()).unwrap();
            assert!(store.is_bulk_load());
            store.start_bulk_flush().unwrap();
            let mut sink = store.sst_sink("a");
            use super::Sink;
            sink.put(cf::HEADERS, &0u32.to_be_bytes(), &header_value(1))
                .unwrap();
            sink.put(cf::HISTORY, b"key-1", b"").unwrap();
            sink.put(cf::HISTORY, b"key-2", b"").unwrap();
            let files = sink.finish().unwrap();
            assert_eq!(files.len(), 2);
            let mut meta = store.meta();
            meta.block_count = 1;
            meta.tx_count = 1;
            store
                .commit_files_interrupted(&files, meta, Some(1))
                .unwrap();
            assert_eq!(
                store.meta().block_count,
                0,
                "not committed before the crash"
            );
        }
        let store = Store::open(dir.path(), &coin, &StoreOptions::default()).unwrap();
        assert_eq!(store.meta().block_count, 1);
        assert_eq!(store.meta().tx_count, 1);
        assert_eq!(store.chain().read().headers.len(), 1);
        let db = store.db();
        assert!(
            db.get_cf(store.cf(cf::HISTORY), b"key-2")
                .unwrap()
                .is_some()
        );
        assert!(!super::ingest_dir(dir.path()).exists());
    }

    /// Files of a flush that stopped before its intent was recorded are dropped, and the
    /// database stays at its committed state.
    #[test]
    fn flush_without_intent_is_dropped_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let coin = CoinParams::from_names("BitcoinSV", "regtest").unwrap();
        {
            let store = Store::open(dir.path(), &coin, &StoreOptions::default()).unwrap();
            store.start_bulk_flush().unwrap();
            let mut sink = store.sst_sink("a");
            use super::Sink;
            sink.put(cf::HISTORY, b"key-1", b"").unwrap();
            sink.finish().unwrap();
        }
        let store = Store::open(dir.path(), &coin, &StoreOptions::default()).unwrap();
        assert_eq!(store.meta().block_count, 0);
        let db = store.db();
        assert!(
            db.get_cf(store.cf(cf::HISTORY), b"key-1")
                .unwrap()
                .is_none()
        );
        assert!(!super::ingest_dir(dir.path()).exists());
    }
}
