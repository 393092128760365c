//! [`HybridDaemon`]: a node reached over RPC whose blocks are read, during the initial
//! sync, straight from its `blocks/blk*.dat` files (Bitcoin Core's framing: network magic,
//! 4-byte little-endian length, raw block; Core 28+'s `xor.dat` obfuscation).
//!
//! Only blocks the node names are used: the prefetcher asks for blocks by the hashes the
//! node gives for its best chain (`getblockhash`, through the wrapped daemon), a block read
//! from a file must have exactly that hash (its 80-byte header), and the parser checks its
//! merkle root against its transactions; a block that fails either check, or that the files
//! lack (pruned, not yet written, truncated, unreadable), comes from the wrapped daemon.
//! Once a block near the node's tip has been served (the sync is about to catch up), from
//! the prefetcher's next round on (its next `height()`) every block comes from the wrapped
//! daemon, which follows the tip as before. Everything but `raw_blocks` is delegated.
//!
//! The location index is built by scanning the files' frame headers (8 bytes of framing
//! and the 80-byte header per block, the body skipped), a file at a time as the sync needs
//! them, and resumed where it stopped when the node appends blocks. Each block costs 20
//! bytes (the first 8 bytes of its hash, file number, offset, length) in one sorted
//! vector: 20 MB for a million blocks. A truncated hash can collide; the full hash is
//! checked on every read, so a collision only sends that block to RPC.

use super::{Daemon, DaemonResult};
use crate::error::DaemonError;
use crate::hash::{BlockHash, Hash32, Txid};
use crate::parse::HEADER_LEN;
use async_trait::async_trait;
use parking_lot::Mutex;
use std::io::{BufReader, Read, Seek};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The file phase ends once a block this close to the node's tip has been served (at the
/// next `height()` call: the prefetcher's next round).
pub const DEFAULT_NEAR_TIP: u32 = 6;

/// Rescans for blocks the node appended are at most this frequent.
const RESCAN_INTERVAL: Duration = Duration::from_millis(500);

/// Counters of a [`HybridDaemon`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct BlockFileStats {
    /// Blocks read from the block files.
    pub from_files: u64,
    /// Blocks asked of the wrapped daemon (missing from the files, or after the file phase).
    pub from_rpc: u64,
    /// Blocks read from the files that failed a check (hash, parse, merkle root) and were
    /// fetched again from the wrapped daemon.
    pub rejected: u64,
    /// Blocks in the location index.
    pub indexed: u64,
    /// Bytes of the location index.
    pub index_bytes: u64,
    /// True while blocks are still read from files.
    pub file_phase: bool,
}

/// One block found in the files: 20 bytes.
#[derive(Clone, Copy, Debug)]
struct Entry {
    /// First 8 bytes of the block hash (internal order: the random ones), as two words.
    key: [u32; 2],
    file: u32,
    /// Offset of the block itself (after its 8 bytes of framing).
    offset: u32,
    len: u32,
}

fn key_of(hash: &BlockHash) -> [u32; 2] {
    let b = &hash.0;
    [
        u32::from_le_bytes([b[0], b[1], b[2], b[3]]),
        u32::from_le_bytes([b[4], b[5], b[6], b[7]]),
    ]
}

struct ScannedFile {
    number: u32,
    path: PathBuf,
    /// Where the next frame starts (resumed from here when the file grows).
    scanned_to: u64,
    /// Nothing more to read in it (a later file exists, or it is corrupt from here on).
    done: bool,
}

/// The location index and the scan's state.
struct FileIndex {
    dir: PathBuf,
    xor: [u8; 8],
    magic: Option<[u8; 4]>,
    genesis: BlockHash,
    files: Vec<ScannedFile>,
    /// Sorted by key.
    entries: Vec<Entry>,
    /// Entries found since the last sort (appended, then merged in).
    unsorted: usize,
    last_tail_scan: Option<Instant>,
    /// Set when the directory turned out not to be usable (wrong network, unreadable).
    disabled: bool,
}

impl FileIndex {
    fn io(&self, path: &Path, e: std::io::Error) -> DaemonError {
        DaemonError::unavailable_from(format!("block file {}", path.display()), e)
    }

    /// Lists `blk*.dat` files not known yet. Returns false if there are none.
    fn discover_files(&mut self) -> Result<bool, DaemonError> {
        let mut found = Vec::new();
        let list = std::fs::read_dir(&self.dir).map_err(|e| self.io(&self.dir.clone(), e))?;
        for entry in list.flatten() {
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            let Some(num) = name
                .strip_prefix("blk")
                .and_then(|n| n.strip_suffix(".dat"))
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            if self.files.last().is_none_or(|f| num > f.number) {
                found.push((num, entry.path()));
            }
        }
        if found.is_empty() {
            return Ok(false);
        }
        found.sort();
        // The node writes to its newest file only: an older one, once scanned to its end,
        // is finished (`scan_file` marks it).
        for (number, path) in found {
            self.files.push(ScannedFile {
                number,
                path,
                scanned_to: 0,
                done: false,
            });
        }
        Ok(true)
    }

    /// Scans file `i` from where it stopped; returns the number of blocks found.
    fn scan_file(&mut self, i: usize) -> Result<usize, DaemonError> {
        let is_newest = i + 1 == self.files.len();
        let (path, number, start) = {
            let f = &self.files[i];
            (f.path.clone(), f.number, f.scanned_to)
        };
        let file = match std::fs::File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                // Pruned meanwhile.
                self.files[i].done = true;
                return Ok(0);
            }
            Err(e) => return Err(self.io(&path, e)),
        };
        let size = file.metadata().map_err(|e| self.io(&path, e))?.len();
        let mut r = BufReader::with_capacity(64 << 10, file);
        r.seek(std::io::SeekFrom::Start(start))
            .map_err(|e| self.io(&path, e))?;
        let mut pos = start;
        let mut frame = [0u8; 8 + HEADER_LEN];
        let mut found = 0;
        let mut corrupt = None;
        while pos + frame.len() as u64 <= size {
            r.read_exact(&mut frame).map_err(|e| self.io(&path, e))?;
            super::unxor(&mut frame, pos, &self.xor);
            let magic: [u8; 4] = frame[..4].try_into().expect("4 bytes");
            if magic == [0; 4] {
                break; // the preallocated (not yet written) part of the file
            }
            match self.magic {
                None => self.magic = Some(magic),
                Some(m) if m != magic => {
                    corrupt = Some(format!("no network magic at offset {pos}"));
                    break;
                }
                Some(_) => {}
            }
            let len = u32::from_le_bytes(frame[4..8].try_into().expect("4 bytes")) as u64;
            let body = pos + 8;
            if len < HEADER_LEN as u64 + 1 {
                corrupt = Some(format!("block length {len} at offset {pos}"));
                break;
            }
            if body + len > size {
                break; // not written in full (yet)
            }
            let header: [u8; HEADER_LEN] = frame[8..].try_into().expect("80 bytes");
            let hash = Hash32::sha256d(&header);
            if self.entries.is_empty() && found == 0 && number == 0 && pos == 0 {
                // The first block of the first file is the network's genesis block: a
                // directory of another network's node is not used at all.
                if hash != self.genesis {
                    self.disabled = true;
                    tracing::warn!(
                        "{}: the first block is {hash}, not this network's genesis block; not reading block files",
                        path.display()
                    );
                    return Ok(0);
                }
            }
            if let (Ok(offset), Ok(len32)) = (u32::try_from(body), u32::try_from(len)) {
                self.entries.push(Entry {
                    key: key_of(&hash),
                    file: number,
                    offset,
                    len: len32,
                });
                self.unsorted += 1;
                found += 1;
            }
            pos = body + len;
            r.seek_relative((len - HEADER_LEN as u64) as i64)
                .map_err(|e| self.io(&path, e))?;
        }
        let f = &mut self.files[i];
        f.scanned_to = pos;
        if let Some(why) = corrupt {
            tracing::warn!(
                "{}: {why}; its later blocks come from the node",
                path.display()
            );
            f.done = true;
        } else if !is_newest {
            f.done = true;
        }
        Ok(found)
    }

    /// Scans file `i`; a file that cannot be read is skipped from then on (its blocks come
    /// from the node), with one warning.
    fn scan_or_skip(&mut self, i: usize) {
        if let Err(e) = self.scan_file(i) {
            tracing::warn!("block files: {e}; its blocks come from the node");
            self.files[i].done = true;
        }
    }

    fn sort(&mut self) {
        if self.unsorted > 0 {
            self.entries.sort_unstable_by_key(|e| e.key);
            self.unsorted = 0;
        }
    }

    fn lookup(&self, hash: &BlockHash) -> impl Iterator<Item = Entry> + '_ {
        let key = key_of(hash);
        let start = self.entries.partition_point(|e| e.key < key);
        self.entries[start..]
            .iter()
            .take_while(move |e| e.key == key)
            .copied()
    }

    /// Scans further until every hash in `wanted` is indexed or nothing is left to scan.
    fn scan_for(&mut self, wanted: &[BlockHash]) -> Result<(), DaemonError> {
        let missing = |this: &Self| wanted.iter().any(|h| this.lookup(h).next().is_none());
        // Files not scanned at all yet, in order.
        loop {
            if self.disabled || !missing(self) {
                return Ok(());
            }
            let Some(i) = self.files.iter().position(|f| !f.done && f.scanned_to == 0) else {
                break;
            };
            self.scan_or_skip(i);
            if self.files[i].scanned_to == 0 && !self.files[i].done {
                // An empty newest file: nothing more now.
                break;
            }
            self.sort();
        }
        // Then what the node appended: new files, and the tail of the newest one.
        if self
            .last_tail_scan
            .is_some_and(|t| t.elapsed() < RESCAN_INTERVAL)
        {
            return Ok(());
        }
        self.last_tail_scan = Some(Instant::now());
        self.discover_files()?;
        for i in 0..self.files.len() {
            if !self.files[i].done {
                self.scan_or_skip(i);
            }
            if self.disabled || !missing(self) {
                break;
            }
        }
        self.sort();
        Ok(())
    }
}

/// What the files gave for each hash asked for, and whether they turned out unusable.
type FileReads = (Vec<Option<Vec<u8>>>, bool);

/// Reads `len` bytes at `offset` of a block file, removing the obfuscation.
fn read_block(path: &Path, offset: u64, len: usize, xor: &[u8; 8]) -> std::io::Result<Vec<u8>> {
    let file = std::fs::File::open(path)?;
    let mut buf = vec![0u8; len];
    file.read_exact_at(&mut buf, offset)?;
    super::unxor(&mut buf, offset, xor);
    Ok(buf)
}

/// A daemon whose blocks come from the node's block files during the initial sync (see the
/// module docs); everything else, and every block the files cannot give, comes from the
/// wrapped daemon.
pub struct HybridDaemon {
    inner: Arc<dyn Daemon>,
    index: Arc<Mutex<FileIndex>>,
    dir: PathBuf,
    xor: [u8; 8],
    near_tip: u32,
    /// The node's height as last seen (`u32::MAX`: not yet known).
    tip: AtomicU32,
    /// Hashes the node gave for heights near its tip during the file phase.
    near_tip_blocks: Mutex<Vec<BlockHash>>,
    /// A block of `near_tip_blocks` was served: the file phase ends at the next `height()`.
    near_tip_served: AtomicBool,
    /// `block_hashes` was called before.
    asked: AtomicBool,
    file_phase: AtomicBool,
    from_files: AtomicU64,
    from_rpc: AtomicU64,
    rejected: AtomicU64,
}

impl HybridDaemon {
    /// Wraps `inner` (an [`super::RpcDaemon`]), reading blocks from `blocks_dir` (the node's
    /// `blocks/` directory) for a chain whose genesis block is `genesis`. Fails if the
    /// directory cannot be listed or its `xor.dat` is not an 8-byte key; the files
    /// themselves are scanned as the sync needs them.
    pub fn new(
        inner: Arc<dyn Daemon>,
        blocks_dir: &Path,
        genesis: BlockHash,
    ) -> Result<Self, DaemonError> {
        let config =
            |e: std::io::Error| DaemonError::config_from(blocks_dir.display().to_string(), e);
        std::fs::read_dir(blocks_dir).map_err(config)?;
        let xor = super::read_xor_key(blocks_dir)?;
        let mut index = FileIndex {
            dir: blocks_dir.into(),
            xor,
            magic: None,
            genesis,
            files: Vec::new(),
            entries: Vec::new(),
            unsorted: 0,
            last_tail_scan: None,
            disabled: false,
        };
        index.discover_files()?;
        Ok(HybridDaemon {
            inner,
            index: Arc::new(Mutex::new(index)),
            dir: blocks_dir.into(),
            xor,
            near_tip: DEFAULT_NEAR_TIP,
            tip: AtomicU32::new(u32::MAX),
            near_tip_blocks: Mutex::new(Vec::new()),
            near_tip_served: AtomicBool::new(false),
            asked: AtomicBool::new(false),
            file_phase: AtomicBool::new(true),
            from_files: AtomicU64::new(0),
            from_rpc: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
        })
    }

    /// Sets how close to the node's tip the file phase ends (default
    /// [`DEFAULT_NEAR_TIP`]; 0: only when blocks at the tip itself are asked for).
    pub fn with_near_tip(mut self, blocks: u32) -> Self {
        self.near_tip = blocks;
        self
    }

    /// The counters.
    pub fn file_stats(&self) -> BlockFileStats {
        let index = self.index.lock();
        BlockFileStats {
            from_files: self.from_files.load(Ordering::Relaxed),
            from_rpc: self.from_rpc.load(Ordering::Relaxed),
            rejected: self.rejected.load(Ordering::Relaxed),
            indexed: index.entries.len() as u64,
            index_bytes: (index.entries.capacity() * std::mem::size_of::<Entry>()) as u64,
            file_phase: self.file_phase.load(Ordering::Relaxed),
        }
    }

    fn end_file_phase(&self, why: &str) {
        if self.file_phase.swap(false, Ordering::Relaxed) {
            let mut index = self.index.lock();
            tracing::info!(
                "block files: {} blocks read from {}; {why}: blocks come from the node from now on",
                self.from_files.load(Ordering::Relaxed),
                self.dir.display()
            );
            index.entries = Vec::new();
            index.files = Vec::new();
            *self.near_tip_blocks.lock() = Vec::new();
        }
    }

    /// Reads what it can of `hashes` from the files (blocking).
    fn read_from_files(
        index: &Mutex<FileIndex>,
        xor: &[u8; 8],
        hashes: &[BlockHash],
    ) -> Result<FileReads, DaemonError> {
        let located: Vec<Vec<(PathBuf, Entry)>> = {
            let mut index = index.lock();
            if let Err(e) = index.scan_for(hashes) {
                // An unreadable directory: those blocks come from the node.
                tracing::warn!("block files: {e}");
            }
            if index.disabled {
                return Ok((vec![None; hashes.len()], true));
            }
            let path_of = |number: u32| {
                index
                    .files
                    .binary_search_by_key(&number, |f| f.number)
                    .map(|i| index.files[i].path.clone())
                    .unwrap_or_default()
            };
            hashes
                .iter()
                .map(|h| index.lookup(h).map(|e| (path_of(e.file), e)).collect())
                .collect()
        };
        let mut out = Vec::with_capacity(hashes.len());
        for (hash, candidates) in hashes.iter().zip(located) {
            let mut got = None;
            for (path, e) in candidates {
                match read_block(&path, e.offset as u64, e.len as usize, xor) {
                    Ok(raw) if Hash32::sha256d(&raw[..HEADER_LEN]) == *hash => {
                        got = Some(raw);
                        break;
                    }
                    Ok(_) => {} // another block with the same key, or a changed file
                    Err(e) => tracing::debug!("block files: {}: {e}", path.display()),
                }
            }
            out.push(got);
        }
        Ok((out, false))
    }
}

#[async_trait]
impl Daemon for HybridDaemon {
    async fn height(&self) -> DaemonResult<u32> {
        let h = self.inner.height().await?;
        self.tip.store(h, Ordering::Relaxed);
        if self.near_tip_served.load(Ordering::Relaxed) {
            self.end_file_phase("the sync reached the node's tip");
        }
        Ok(h)
    }

    async fn best_block_hash(&self) -> DaemonResult<BlockHash> {
        self.inner.best_block_hash().await
    }

    async fn block_hashes(&self, first: u32, count: u32) -> DaemonResult<Vec<BlockHash>> {
        let hashes = self.inner.block_hashes(first, count).await?;
        let tip = self.tip.load(Ordering::Relaxed);
        let first_call = !self.asked.swap(true, Ordering::Relaxed);
        if first_call && tip != u32::MAX && first.saturating_add(self.near_tip) >= tip {
            // An index already at the tip (a restart): no scan of the files for a few
            // blocks.
            self.end_file_phase("the index is already near the node's tip");
        }
        if tip != u32::MAX && self.file_phase.load(Ordering::Relaxed) {
            // Remember the blocks near the tip: once one is served, the file phase ends.
            let mut near = self.near_tip_blocks.lock();
            for (height, hash) in (first..).zip(&hashes) {
                if height.saturating_add(self.near_tip) >= tip && !near.contains(hash) {
                    near.push(*hash);
                }
            }
        }
        Ok(hashes)
    }

    async fn raw_blocks(&self, hashes: &[BlockHash]) -> DaemonResult<Vec<Vec<u8>>> {
        if !self.file_phase.load(Ordering::Relaxed) {
            self.from_rpc
                .fetch_add(hashes.len() as u64, Ordering::Relaxed);
            return self.inner.raw_blocks(hashes).await;
        }
        let index = self.index.clone();
        let xor = self.xor;
        let wanted = hashes.to_vec();
        let (found, disabled) =
            tokio::task::spawn_blocking(move || Self::read_from_files(&index, &xor, &wanted))
                .await
                .map_err(|e| DaemonError::unavailable_from("block file reader", e))??;
        if disabled {
            self.end_file_phase("they are not this network's");
        }
        let missing: Vec<BlockHash> = hashes
            .iter()
            .zip(&found)
            .filter(|(_, f)| f.is_none())
            .map(|(h, _)| *h)
            .collect();
        let n_files = (hashes.len() - missing.len()) as u64;
        self.from_files.fetch_add(n_files, Ordering::Relaxed);
        {
            let near = self.near_tip_blocks.lock();
            if hashes.iter().any(|h| near.contains(h)) {
                // Ends at the next `height()`: the prefetcher asks for it once every
                // request planned meanwhile has been answered, so none of those goes to
                // the node because a later one finished first.
                self.near_tip_served.store(true, Ordering::Relaxed);
            }
        }
        if missing.is_empty() {
            return Ok(found.into_iter().map(|f| f.expect("found")).collect());
        }
        tracing::debug!(
            "block files: {} of {} blocks not in the files, asking the node",
            missing.len(),
            hashes.len()
        );
        self.from_rpc
            .fetch_add(missing.len() as u64, Ordering::Relaxed);
        let mut fetched = self.inner.raw_blocks(&missing).await?.into_iter();
        found
            .into_iter()
            .map(|f| match f {
                Some(raw) => Ok(raw),
                None => fetched
                    .next()
                    .ok_or_else(|| DaemonError::bad_response("fewer blocks than asked for")),
            })
            .collect()
    }

    async fn refetch_block(&self, hash: &BlockHash) -> DaemonResult<Option<Vec<u8>>> {
        self.rejected.fetch_add(1, Ordering::Relaxed);
        self.from_rpc.fetch_add(1, Ordering::Relaxed);
        tracing::warn!("block files: block {hash} failed its checks; asking the node for it");
        let mut raws = self.inner.raw_blocks(std::slice::from_ref(hash)).await?;
        Ok(raws.pop())
    }

    async fn mempool_txids(&self) -> DaemonResult<Vec<Txid>> {
        self.inner.mempool_txids().await
    }

    async fn raw_transactions(&self, txids: &[Txid]) -> DaemonResult<Vec<Option<Vec<u8>>>> {
        self.inner.raw_transactions(txids).await
    }

    async fn broadcast(&self, raw_tx: &[u8]) -> DaemonResult<Txid> {
        self.inner.broadcast(raw_tx).await
    }

    async fn estimate_fee(&self, blocks: u32) -> DaemonResult<Option<f64>> {
        self.inner.estimate_fee(blocks).await
    }

    async fn relay_fee(&self) -> DaemonResult<f64> {
        self.inner.relay_fee().await
    }

    async fn call_json(
        &self,
        method: &str,
        params: serde_json::Value,
    ) -> DaemonResult<serde_json::Value> {
        self.inner.call_json(method, params).await
    }

    fn describe(&self) -> String {
        format!(
            "{} (initial sync from block files in {})",
            self.inner.describe(),
            self.dir.display()
        )
    }

    fn stats(&self) -> Option<crate::stats::DaemonStats> {
        self.inner.stats()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::BlockFileDaemon;

    const MAGIC: [u8; 4] = [0xf9, 0xbe, 0xb4, 0xd9];

    fn shared_blocks() -> PathBuf {
        let shared = std::env::var_os("ELECTRUMX_SHARED_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared"));
        shared.join("data/mainnet-blocks/run-0000000-0000438")
    }

    fn coin() -> crate::CoinParams {
        crate::CoinParams::from_names("Bitcoin", "mainnet").unwrap()
    }

    /// The reference: mainnet blocks 0..438 from one-block files.
    fn reference() -> Arc<BlockFileDaemon> {
        Arc::new(BlockFileDaemon::open(&shared_blocks(), coin().genesis_hash).unwrap())
    }

    async fn all_blocks(d: &dyn Daemon) -> (Vec<BlockHash>, Vec<Vec<u8>>) {
        let tip = d.height().await.unwrap();
        let hashes = d.block_hashes(0, tip + 1).await.unwrap();
        let raws = d.raw_blocks(&hashes).await.unwrap();
        (hashes, raws)
    }

    /// A frame as Core writes it.
    fn frame(raw: &[u8]) -> Vec<u8> {
        let mut f = MAGIC.to_vec();
        f.extend_from_slice(&(raw.len() as u32).to_le_bytes());
        f.extend_from_slice(raw);
        f
    }

    fn xor_in_place(data: &mut [u8], key: &[u8; 8]) {
        for (i, b) in data.iter_mut().enumerate() {
            *b ^= key[i % 8];
        }
    }

    /// Writes the blocks into `files` blk files: out of order (pairs swapped after the
    /// genesis block), with a stale block after every tenth, and zero padding at the end.
    fn write_files(dir: &Path, raws: &[Vec<u8>], files: usize, key: [u8; 8]) {
        let mut order: Vec<usize> = (0..raws.len()).collect();
        for pair in order[1..].chunks_mut(2) {
            pair.reverse();
        }
        let per_file = order.len().div_ceil(files);
        for (n, chunk) in order.chunks(per_file).enumerate() {
            let mut data = Vec::new();
            for &i in chunk {
                data.extend(frame(&raws[i]));
                if i % 10 == 5 {
                    // A stale block: same parent, another nonce.
                    let mut stale = raws[i].clone();
                    stale[76] ^= 0xff;
                    data.extend(frame(&stale));
                }
            }
            data.extend(vec![0u8; 1000]);
            xor_in_place(&mut data, &key);
            std::fs::write(dir.join(format!("blk{n:05}.dat")), data).unwrap();
        }
        if key != [0; 8] {
            std::fs::write(dir.join("xor.dat"), key).unwrap();
        }
    }

    #[tokio::test]
    async fn reads_blocks_out_of_order_with_stale_ones_plain_and_obfuscated() {
        let reference = reference();
        let (hashes, raws) = all_blocks(reference.as_ref()).await;
        for key in [[0u8; 8], [0x5a, 0x01, 0xff, 0x80, 0x13, 0x37, 0x00, 0xc4]] {
            let dir = tempfile::tempdir().unwrap();
            write_files(dir.path(), &raws, 3, key);
            let d = HybridDaemon::new(reference.clone(), dir.path(), coin().genesis_hash).unwrap();
            // In batches, as the prefetcher asks.
            for (hs, want) in hashes.chunks(50).zip(raws.chunks(50)) {
                assert_eq!(d.raw_blocks(hs).await.unwrap(), want);
            }
            let s = d.file_stats();
            assert_eq!((s.from_files, s.from_rpc), (439, 0), "key {key:?}");
            assert_eq!(s.indexed, 439 + 44);
            assert_eq!(std::mem::size_of::<Entry>(), 20);
        }
    }

    #[tokio::test]
    async fn the_offline_reader_rebuilds_the_chain_from_obfuscated_files_with_stale_blocks() {
        let reference = reference();
        let (hashes, raws) = all_blocks(reference.as_ref()).await;
        for key in [[0u8; 8], [0x5a, 0x01, 0xff, 0x80, 0x13, 0x37, 0x00, 0xc4]] {
            let dir = tempfile::tempdir().unwrap();
            write_files(dir.path(), &raws, 3, key);
            let d = BlockFileDaemon::open(dir.path(), coin().genesis_hash).unwrap();
            assert_eq!(
                all_blocks(&d).await,
                (hashes.clone(), raws.clone()),
                "key {key:?}"
            );
        }
    }

    #[tokio::test]
    async fn missing_truncated_and_corrupt_blocks_come_from_the_node() {
        let reference = reference();
        let (hashes, raws) = all_blocks(reference.as_ref()).await;
        let dir = tempfile::tempdir().unwrap();
        let key = [7, 1, 2, 3, 4, 5, 6, 250];
        // Blocks 0..300 in file 0; 300..439 in file 1, which is cut in the middle of block
        // 400 (not written in full yet).
        let mut f0 = Vec::new();
        for (i, raw) in raws[..300].iter().enumerate() {
            let mut raw = raw.clone();
            if i == 100 {
                raw[10] ^= 1; // a corrupt header: another hash
            }
            if i == 170 {
                let n = raw.len();
                raw[n - 5] ^= 1; // a corrupt body: the same hash, a wrong merkle root
            }
            f0.extend(frame(&raw));
            if i == 250 {
                f0.extend(b"garbage!"); // a broken frame: the rest of the file is skipped
            }
        }
        xor_in_place(&mut f0, &key);
        std::fs::write(dir.path().join("blk00000.dat"), f0).unwrap();
        let mut f1 = Vec::new();
        for raw in &raws[300..] {
            f1.extend(frame(raw));
        }
        let cut = raws[300..400].iter().map(|r| r.len() + 8).sum::<usize>() + 100;
        f1.truncate(cut);
        xor_in_place(&mut f1, &key);
        std::fs::write(dir.path().join("blk00001.dat"), f1).unwrap();
        std::fs::write(dir.path().join("xor.dat"), key).unwrap();

        let d = HybridDaemon::new(reference.clone(), dir.path(), coin().genesis_hash).unwrap();
        let got = d.raw_blocks(&hashes).await.unwrap();
        for (i, (got, want)) in got.iter().zip(&raws).enumerate() {
            if i == 170 {
                // Read from the file (its header is right); the parser rejects it.
                assert_ne!(got, want);
                assert!(crate::parse::ParsedBlock::parse(got.clone()).is_err());
                let again = d.refetch_block(&hashes[i]).await.unwrap().unwrap();
                assert_eq!(&again, want);
            } else {
                assert_eq!(got, want, "block {i}");
            }
        }
        let s = d.file_stats();
        // From the node: block 100 (hash), 251..299 (after the broken frame), 400..438
        // (truncated file), and block 170 again.
        assert_eq!(s.from_rpc, 1 + 49 + 39 + 1, "{s:?}");
        assert_eq!(s.from_files, 439 - (1 + 49 + 39));
        assert_eq!(s.rejected, 1);
    }

    #[tokio::test]
    async fn blocks_appended_later_are_found_and_the_file_phase_ends_near_the_tip() {
        let reference = reference();
        let (hashes, raws) = all_blocks(reference.as_ref()).await;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("blk00000.dat");
        let mut data: Vec<u8> = raws[..200].iter().flat_map(|r| frame(r)).collect();
        // Preallocated space, as Core leaves it.
        let written = data.len();
        data.extend(vec![0u8; 4096]);
        std::fs::write(&path, &data).unwrap();
        let d = HybridDaemon::new(reference.clone(), dir.path(), coin().genesis_hash).unwrap();
        assert_eq!(d.raw_blocks(&hashes[..250]).await.unwrap(), &raws[..250]);
        assert_eq!(d.file_stats().from_files, 200);
        // The node writes more blocks over the preallocated space, then into a new file.
        data.truncate(written);
        data.extend(raws[200..300].iter().flat_map(|r| frame(r)));
        std::fs::write(&path, &data).unwrap();
        let more: Vec<u8> = raws[300..].iter().flat_map(|r| frame(r)).collect();
        std::fs::write(dir.path().join("blk00001.dat"), more).unwrap();
        tokio::time::sleep(RESCAN_INTERVAL).await;
        assert_eq!(
            d.raw_blocks(&hashes[250..400]).await.unwrap(),
            &raws[250..400]
        );
        let s = d.file_stats();
        assert_eq!((s.from_files, s.from_rpc), (200 + 150, 50));

        // Once a block near the tip is served, blocks come from the node.
        assert_eq!(d.height().await.unwrap(), 438);
        let hs = d.block_hashes(400, 30).await.unwrap();
        assert_eq!(d.raw_blocks(&hs).await.unwrap(), &raws[400..430]);
        assert!(d.file_stats().file_phase);
        let hs = d.block_hashes(430, 5).await.unwrap();
        assert_eq!(d.raw_blocks(&hs).await.unwrap(), &raws[430..435]);
        // A request planned before, answered after: still from the files.
        assert_eq!(
            d.raw_blocks(&hashes[420..430]).await.unwrap(),
            &raws[420..430]
        );
        assert!(d.file_stats().file_phase);
        // The prefetcher's next round.
        assert_eq!(d.height().await.unwrap(), 438);
        let s = d.file_stats();
        assert!(!s.file_phase);
        assert_eq!(s.from_files, 395);
        assert_eq!(s.indexed, 0, "the location index is dropped");
        assert_eq!(d.raw_blocks(&hashes[435..]).await.unwrap(), &raws[435..]);
        assert_eq!(d.file_stats().from_files, 395);
    }

    #[tokio::test]
    async fn a_sync_that_starts_near_the_tip_does_not_scan_the_files() {
        let reference = reference();
        let (hashes, raws) = all_blocks(reference.as_ref()).await;
        let dir = tempfile::tempdir().unwrap();
        write_files(dir.path(), &raws, 1, [0; 8]);
        let d = HybridDaemon::new(reference.clone(), dir.path(), coin().genesis_hash).unwrap();
        assert_eq!(d.height().await.unwrap(), 438);
        let hs = d.block_hashes(435, 4).await.unwrap();
        assert_eq!(d.raw_blocks(&hs).await.unwrap(), &raws[435..]);
        let s = d.file_stats();
        assert_eq!((s.from_files, s.from_rpc, s.indexed), (0, 4, 0));
        assert!(!s.file_phase);
        assert_eq!(hs, &hashes[435..]);
    }

    #[tokio::test]
    async fn another_networks_files_are_not_read() {
        let reference = reference();
        let (hashes, raws) = all_blocks(reference.as_ref()).await;
        let dir = tempfile::tempdir().unwrap();
        // Starts at block 1: not this network's genesis.
        let data: Vec<u8> = raws[1..].iter().flat_map(|r| frame(r)).collect();
        std::fs::write(dir.path().join("blk00000.dat"), data).unwrap();
        let d = HybridDaemon::new(reference.clone(), dir.path(), coin().genesis_hash).unwrap();
        assert_eq!(d.raw_blocks(&hashes).await.unwrap(), raws);
        let s = d.file_stats();
        assert_eq!(s.from_files, 0);
        assert!(!s.file_phase);
        // A bad xor.dat is refused.
        std::fs::write(dir.path().join("xor.dat"), [1, 2, 3]).unwrap();
        let err = HybridDaemon::new(reference, dir.path(), coin().genesis_hash)
            .err()
            .unwrap();
        assert!(err.to_string().contains("xor.dat"), "{err}");
    }

    /// The whole sync through the controller: blocks with corrupt bodies in the files are
    /// fetched again (the prefetcher's `refetch_block`), and the index equals the one
    /// built from the reference.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_sync_from_corrupt_files_equals_the_reference_sync() {
        use crate::{ChainIndex, Controller};
        let reference = reference();
        let (_, raws) = all_blocks(reference.as_ref()).await;
        let dir = tempfile::tempdir().unwrap();
        let mut data = Vec::new();
        for (i, raw) in raws.iter().enumerate() {
            let mut raw = raw.clone();
            if i % 50 == 7 {
                let n = raw.len();
                raw[n - 3] ^= 0x40;
            }
            data.extend(frame(&raw));
        }
        std::fs::write(dir.path().join("blk00000.dat"), data).unwrap();
        let hybrid = Arc::new(
            HybridDaemon::new(reference.clone(), dir.path(), coin().genesis_hash)
                .unwrap()
                .with_near_tip(0),
        );
        let sync = |daemon: Arc<dyn Daemon>| async move {
            let db = tempfile::tempdir().unwrap();
            let c = Controller::builder()
                .coin(coin())
                .db_dir(db.path())
                .daemon(daemon)
                .cache_mb(1)
                .build()
                .unwrap();
            c.start().unwrap();
            c.wait_caught_up().await.unwrap();
            let index = c.index();
            let tip = index.tip();
            let script = crate::ScriptHash::of_script(&hex_script());
            let answer = (
                tip,
                index.balance(&script).unwrap(),
                index.history(&script, 0, 1000).unwrap(),
            );
            c.stop().await.unwrap();
            answer
        };
        let ours = sync(hybrid.clone()).await;
        let want = sync(reference).await;
        assert_eq!(ours, want);
        let s = hybrid.file_stats();
        assert!(s.rejected >= 7 && s.from_files >= 350, "{s:?}");
        assert!(!s.file_phase);
    }

    /// The P2PK script of block 9's coinbase (it paid block 170's transaction).
    fn hex_script() -> Vec<u8> {
        const_hex::decode("410411db93e1dcdb8a016b49840f8c53bc1eb68a382e97b1482ecad7b148a6909a5cb2e0eaddfb84ccf9744464f82e160bfa9b8b64f9d4c03f999b8643f656b412a3ac").unwrap()
    }
}
