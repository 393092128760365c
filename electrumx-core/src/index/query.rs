//! The query side: [`ChainIndex`], what an Electrum server (or an embedding wallet backend)
//! asks of the index, and [`Index`], its implementation over the store.
//!
//! Every query reads one consistent view: the chain state and a RocksDB snapshot taken
//! together under the chain lock, so a block committed meanwhile is either wholly seen or not.

use crate::error::DbResultExt;
use crate::error::{IndexError, Result};
use crate::hash::{BlockHash, HashX, ScriptHash, Txid};
use crate::parse::HEADER_LEN;
use crate::store::keys::{self, TXNUM_LEN};
use crate::store::{Store, cf};
use std::ops::ControlFlow;
use std::sync::Arc;

/// One confirmed transaction in a script's history.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HistoryItem {
    /// Transaction id.
    pub txid: Txid,
    /// Height of its block.
    pub height: u32,
}

/// One confirmed unspent output.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Utxo {
    /// Funding transaction id.
    pub txid: Txid,
    /// Output index.
    pub vout: u32,
    /// Height of the funding block.
    pub height: u32,
    /// Value in satoshis.
    pub value: u64,
}

/// Read access to the confirmed chain index.
pub trait ChainIndex: Send + Sync {
    /// Height and hash of the indexed tip; `None` before the genesis block is indexed.
    fn tip(&self) -> Option<(u32, BlockHash)>;

    /// The 80-byte header at `height`.
    fn header(&self, height: u32) -> Option<[u8; HEADER_LEN]>;

    /// Up to `count` consecutive headers from `start`.
    fn headers(&self, start: u32, count: u32) -> Vec<[u8; HEADER_LEN]>;

    /// Hash of the block at `height`.
    fn block_hash(&self, height: u32) -> Option<BlockHash>;

    /// Hashes of up to `count` consecutive blocks from `start`.
    fn block_hashes(&self, start: u32, count: u32) -> Vec<BlockHash>;

    /// Txids of the block at `height`, in block order (for merkle proofs). Empty for genesis.
    fn block_txids(&self, height: u32) -> Result<Option<Vec<Txid>>>;

    /// Height and position in its block of a confirmed transaction.
    fn tx_position(&self, txid: &Txid) -> Result<Option<(u32, u32)>>;

    /// Confirmed history of a script in chain order: entries `offset .. offset + limit`.
    fn history(&self, script: &ScriptHash, offset: usize, limit: usize)
    -> Result<Vec<HistoryItem>>;

    /// A script's whole confirmed history if it holds at most `limit` entries, else
    /// `None`. The entries are counted from the history keys before any txid is read, so a
    /// history over the limit costs a scan of its first `limit + 1` tx numbers only.
    fn history_within(&self, script: &ScriptHash, limit: usize)
    -> Result<Option<Vec<HistoryItem>>>;

    /// Confirmed history of a script from `height` up, in chain order, at most `limit`
    /// entries: the entries below `height` are not read, so bringing a long history up to
    /// date costs what was added, not its length.
    fn history_from_height(
        &self,
        script: &ScriptHash,
        height: u32,
        limit: usize,
    ) -> Result<Vec<HistoryItem>>;

    /// Streams a script's whole confirmed history in chain order with bounded memory; the
    /// visitor returns `ControlFlow::Break` to stop early.
    fn visit_history(
        &self,
        script: &ScriptHash,
        visit: &mut dyn FnMut(HistoryItem) -> ControlFlow<()>,
    ) -> Result<()>;

    /// Number of confirmed transactions in a script's history, counting at most `cap`.
    fn history_len(&self, script: &ScriptHash, cap: usize) -> Result<usize>;

    /// Confirmed unspent outputs of a script, in chain order; at most `limit`.
    fn utxos(&self, script: &ScriptHash, limit: usize) -> Result<Vec<Utxo>>;

    /// Confirmed balance of a script in satoshis.
    fn balance(&self, script: &ScriptHash) -> Result<u64>;

    /// The confirmed transaction spending an outpoint, with its height.
    fn spender(&self, txid: &Txid, vout: u32) -> Result<Option<HistoryItem>>;

    /// Whether a confirmed output exists (spent or not) at this outpoint.
    fn output_exists(&self, txid: &Txid, vout: u32) -> Result<bool>;

    /// Owner and value of a confirmed, unspent output.
    fn unspent_output(&self, txid: &Txid, vout: u32) -> Result<Option<(HashX, u64)>>;
}

/// [`ChainIndex`] over the index database; cheap to clone (clones share the open database,
/// which closes when the controller and every clone are gone).
#[derive(Clone)]
pub struct Index {
    store: Arc<Store>,
}

/// Receives history entries as (tx number, txid) in batches.
type BatchVisitor<'a> = dyn FnMut(&[(u64, Txid)]) -> ControlFlow<()> + 'a;

/// Resolves tx numbers to txids in batches of this many (bounded memory for huge histories).
const TXID_BATCH: usize = 1000;

/// Whether blocks read for a lookup go into the block cache.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Caching {
    /// Kept there (lookups likely to repeat, small).
    Fill,
    /// Read for this lookup only (the rest of a long history).
    Bypass,
}

struct View<'a> {
    snapshot: rocksdb::Snapshot<'a>,
    tx_counts: Arc<Vec<u64>>,
}

impl<'a> View<'a> {
    fn height_of(&self, txnum: u64) -> Option<u32> {
        if txnum >= self.tx_counts.last().copied().unwrap_or(0) {
            return None;
        }
        Some(self.tx_counts.partition_point(|&c| c <= txnum) as u32)
    }
}

impl Index {
    /// A query handle over `store`.
    pub(crate) fn new(store: Arc<Store>) -> Self {
        Index { store }
    }

    /// Opens the index database at `path` for queries, without syncing it (tools, tests;
    /// an embedder that syncs uses [`crate::Controller::index`]). As at every open, a bulk
    /// flush cut short by a crash is completed first. The database must not be open
    /// elsewhere (the engine locks it); it is closed when the last clone of this handle is
    /// dropped.
    pub fn open(path: &std::path::Path, coin: &crate::CoinParams) -> Result<Index> {
        let store = Store::open(path, coin, &crate::StoreOptions::default())?;
        Ok(Index::new(Arc::new(store)))
    }

    /// Sizes of the database (cheap: no file is read).
    pub fn db_stats(&self) -> crate::DbStats {
        self.store.db_stats(false)
    }

    /// [`Index::db_stats`] with each family's data, index and filter block bytes (reads
    /// the table properties of every SST file).
    pub fn db_stats_detailed(&self) -> crate::DbStats {
        self.store.db_stats(true)
    }

    /// Compacts every column family fully, as the compaction after the initial sync does.
    /// Slow (it rewrites the database); for maintenance tools.
    pub fn compact(&self) {
        for name in cf::ALL {
            self.store.compact_cf(name);
        }
    }

    fn view(&self) -> View<'_> {
        let chain = self.store.chain().read();
        let snapshot = self.store.db().snapshot();
        // The cumulative counts are shared, not copied (see `ChainState::tx_counts`).
        View {
            snapshot,
            tx_counts: chain.tx_counts.clone(),
        }
    }

    fn read_opts(view: &View<'_>, prefix_upper: Option<Vec<u8>>) -> rocksdb::ReadOptions {
        let mut ro = rocksdb::ReadOptions::default();
        ro.set_snapshot(&view.snapshot);
        if let Some(upper) = prefix_upper {
            ro.set_iterate_upper_bound(upper);
        }
        ro
    }

    /// An iterator over the keys of `cf` that start with `prefix`, positioned at the first.
    fn prefix_iter<'v>(
        &'v self,
        view: &'v View<'_>,
        cf_name: &str,
        prefix: &[u8],
    ) -> rocksdb::DBRawIterator<'v> {
        let ro = Self::read_opts(view, prefix_end(prefix));
        let mut it = self
            .store
            .db()
            .raw_iterator_cf_opt(self.store.cf(cf_name), ro);
        it.seek(prefix);
        it
    }

    /// Tx numbers of a script's history from tx number `from_txnum` on, skipping the first
    /// `offset` of those, in chain order, handed to `f` in batches of [`TXID_BATCH`] with
    /// their txids. The scan starts at the group holding `from_txnum`: the entries before
    /// it are not read.
    fn scan_history(
        &self,
        view: &View<'_>,
        script: &ScriptHash,
        from_txnum: u64,
        offset: usize,
        f: &mut BatchVisitor<'_>,
    ) -> Result<()> {
        let hashx = script.hashx();
        let mut it = self.prefix_iter(view, cf::HISTORY, &hashx.0);
        if from_txnum > 0 {
            // Groups are keyed by their first tx number: the one holding `from_txnum` is
            // the last key at or before hashX ‖ from_txnum. None of this script's there:
            // its first group starts later, so the scan starts at the first.
            it.seek_for_prev(keys::history_key(&hashx, from_txnum));
            if !it.key().is_some_and(|k| k.starts_with(&hashx.0)) {
                it.seek(hashx.0);
            }
        }
        let mut skipped = 0usize;
        let mut txnums: Vec<u64> = Vec::with_capacity(TXID_BATCH);
        let mut batch: Vec<(u64, Txid)> = Vec::with_capacity(TXID_BATCH);
        let mut group: Vec<u64> = Vec::with_capacity(keys::HISTORY_GROUP_MAX);
        let total = view.tx_counts.last().copied().unwrap_or(0);
        // Only a short history's txids are kept in the block cache: a long one reads most
        // of the `txids` family, which would push everything else out of the cache (and,
        // in a process that has not yet used that much memory, fault in fresh pages for it).
        let mut cache = Caching::Fill;
        loop {
            let at_end = match (it.key(), it.value()) {
                (Some(k), Some(v)) => {
                    if !keys::read_history_group(k, v, &mut group) {
                        return Err(IndexError::Corrupt("history entry".into()));
                    }
                    for &txnum in group.iter().take_while(|n| **n < total) {
                        if txnum < from_txnum {
                            continue;
                        }
                        if skipped < offset {
                            skipped += 1;
                        } else {
                            txnums.push(txnum);
                        }
                    }
                    it.next();
                    false
                }
                _ => true,
            };
            // A group holds at most HISTORY_GROUP_MAX entries: batches stay near TXID_BATCH.
            if txnums.len() >= TXID_BATCH || (at_end && !txnums.is_empty()) {
                self.resolve_txids_with(view, &txnums, &mut batch, cache)?;
                cache = Caching::Bypass;
                txnums.clear();
                if f(&batch).is_break() {
                    return Ok(());
                }
            }
            if at_end {
                break;
            }
        }
        it.status().db()?;
        Ok(())
    }

    /// Hands `f` the confirmed tx numbers of each of a script's history groups, in chain
    /// order, reading keys and values of `history` only (no txid).
    fn visit_txnums(
        &self,
        view: &View<'_>,
        script: &ScriptHash,
        f: &mut dyn FnMut(&[u64]) -> ControlFlow<()>,
    ) -> Result<()> {
        let hashx = script.hashx();
        let mut it = self.prefix_iter(view, cf::HISTORY, &hashx.0);
        let total = view.tx_counts.last().copied().unwrap_or(0);
        let mut group: Vec<u64> = Vec::with_capacity(keys::HISTORY_GROUP_MAX);
        while let (Some(k), Some(v)) = (it.key(), it.value()) {
            if !keys::read_history_group(k, v, &mut group) {
                return Err(IndexError::Corrupt("history entry".into()));
            }
            let confirmed = group.iter().take_while(|t| **t < total).count();
            if f(&group[..confirmed]).is_break() {
                return Ok(());
            }
            it.next();
        }
        it.status().db()?;
        Ok(())
    }

    /// A script's history from tx number `from_txnum` on, skipping `offset` entries, at
    /// most `limit` of them (see `scan_history`).
    fn collect_history(
        &self,
        view: &View<'_>,
        script: &ScriptHash,
        from_txnum: u64,
        offset: usize,
        limit: usize,
    ) -> Result<Vec<HistoryItem>> {
        let mut out = Vec::new();
        if limit == 0 {
            return Ok(out);
        }
        self.scan_history(view, script, from_txnum, offset, &mut |batch| {
            for (n, txid) in batch {
                let height = view.height_of(*n).unwrap_or(0);
                out.push(HistoryItem {
                    txid: *txid,
                    height,
                });
                if out.len() >= limit {
                    return ControlFlow::Break(());
                }
            }
            ControlFlow::Continue(())
        })?;
        Ok(out)
    }

    fn resolve_txids(
        &self,
        view: &View<'_>,
        txnums: &[u64],
        out: &mut Vec<(u64, Txid)>,
    ) -> Result<()> {
        self.resolve_txids_with(view, txnums, out, Caching::Fill)
    }

    /// The txids of `txnums` into `out`, in order; `cache` says whether the blocks read
    /// are kept in the block cache.
    fn resolve_txids_with(
        &self,
        view: &View<'_>,
        txnums: &[u64],
        out: &mut Vec<(u64, Txid)>,
        cache: Caching,
    ) -> Result<()> {
        out.clear();
        let cf = self.store.cf(cf::TXIDS);
        let mut ro = rocksdb::ReadOptions::default();
        ro.set_snapshot(&view.snapshot);
        ro.fill_cache(cache == Caching::Fill);
        // One read per chunk: the txnums of a history or a block often share chunks.
        let mut chunks: Vec<u64> = txnums.iter().map(|n| n / keys::TXIDS_PER_CHUNK).collect();
        chunks.sort_unstable();
        chunks.dedup();
        let chunk_keys: Vec<_> = chunks
            .iter()
            .map(|c| keys::txids_chunk_key(c * keys::TXIDS_PER_CHUNK))
            .collect();
        let values = self
            .store
            .db()
            .batched_multi_get_cf_opt(cf, &chunk_keys, true, &ro);
        let values = values.into_iter().collect::<Result<Vec<_>, _>>().db()?;
        for n in txnums {
            let txid = chunks
                .binary_search(&(n / keys::TXIDS_PER_CHUNK))
                .ok()
                .and_then(|i| values[i].as_deref())
                .and_then(|chunk| keys::txid_in_chunk(chunk, *n))
                .ok_or_else(|| IndexError::Corrupt(format!("no txid for tx {n}")))?;
            out.push((*n, txid));
        }
        Ok(())
    }

    fn find_txnum(&self, view: &View<'_>, txid: &Txid) -> Result<Option<u64>> {
        let prefix = &txid.0[..keys::TXID_PREFIX_LEN];
        let mut it = self.prefix_iter(view, cf::TXID_INDEX, prefix);
        let mut candidates = Vec::new();
        while let Some(k) = it.key() {
            candidates.push(keys::txnum_from(&k[keys::TXID_PREFIX_LEN..]));
            it.next();
        }
        it.status().db()?;
        let total = view.tx_counts.last().copied().unwrap_or(0);
        candidates.retain(|n| *n < total);
        let mut resolved = Vec::new();
        self.resolve_txids(view, &candidates, &mut resolved)?;
        Ok(resolved
            .into_iter()
            .find(|(_, t)| t == txid)
            .map(|(n, _)| n))
    }
}

/// The smallest key greater than every key starting with `prefix`.
fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

impl ChainIndex for Index {
    fn tip(&self) -> Option<(u32, BlockHash)> {
        let chain = self.store.chain().read();
        chain.tip_height().map(|h| (h, chain.hashes[h as usize]))
    }

    fn header(&self, height: u32) -> Option<[u8; HEADER_LEN]> {
        self.store
            .chain()
            .read()
            .headers
            .get(height as usize)
            .copied()
    }

    fn headers(&self, start: u32, count: u32) -> Vec<[u8; HEADER_LEN]> {
        let chain = self.store.chain().read();
        let start = (start as usize).min(chain.headers.len());
        let end = start
            .saturating_add(count as usize)
            .min(chain.headers.len());
        chain.headers[start..end].to_vec()
    }

    fn block_hash(&self, height: u32) -> Option<BlockHash> {
        self.store
            .chain()
            .read()
            .hashes
            .get(height as usize)
            .copied()
    }

    fn block_hashes(&self, start: u32, count: u32) -> Vec<BlockHash> {
        let chain = self.store.chain().read();
        let start = (start as usize).min(chain.hashes.len());
        let end = start.saturating_add(count as usize).min(chain.hashes.len());
        chain.hashes[start..end].to_vec()
    }

    fn block_txids(&self, height: u32) -> Result<Option<Vec<Txid>>> {
        let view = self.view();
        let Some(&end) = view.tx_counts.get(height as usize) else {
            return Ok(None);
        };
        let start = if height == 0 {
            0
        } else {
            view.tx_counts[height as usize - 1]
        };
        let txnums: Vec<u64> = (start..end).collect();
        let mut out = Vec::new();
        self.resolve_txids(&view, &txnums, &mut out)?;
        Ok(Some(out.into_iter().map(|(_, t)| t).collect()))
    }

    fn tx_position(&self, txid: &Txid) -> Result<Option<(u32, u32)>> {
        let view = self.view();
        let Some(txnum) = self.find_txnum(&view, txid)? else {
            return Ok(None);
        };
        let Some(height) = view.height_of(txnum) else {
            return Ok(None);
        };
        let first = if height == 0 {
            0
        } else {
            view.tx_counts[height as usize - 1]
        };
        Ok(Some((height, (txnum - first) as u32)))
    }

    fn history(
        &self,
        script: &ScriptHash,
        offset: usize,
        limit: usize,
    ) -> Result<Vec<HistoryItem>> {
        let view = self.view();
        self.collect_history(&view, script, 0, offset, limit)
    }

    fn history_from_height(
        &self,
        script: &ScriptHash,
        height: u32,
        limit: usize,
    ) -> Result<Vec<HistoryItem>> {
        let view = self.view();
        let from_txnum = match height.checked_sub(1) {
            None => 0,
            // Past the tip: nothing to read.
            Some(below) => match view.tx_counts.get(below as usize) {
                Some(&n) => n,
                None => return Ok(Vec::new()),
            },
        };
        self.collect_history(&view, script, from_txnum, 0, limit)
    }

    fn visit_history(
        &self,
        script: &ScriptHash,
        visit: &mut dyn FnMut(HistoryItem) -> ControlFlow<()>,
    ) -> Result<()> {
        let view = self.view();
        self.scan_history(&view, script, 0, 0, &mut |batch| {
            for (n, txid) in batch {
                let height = view.height_of(*n).unwrap_or(0);
                visit(HistoryItem {
                    txid: *txid,
                    height,
                })?;
            }
            ControlFlow::Continue(())
        })
    }

    fn history_len(&self, script: &ScriptHash, cap: usize) -> Result<usize> {
        let view = self.view();
        let mut n = 0;
        self.visit_txnums(&view, script, &mut |txnums| {
            n += txnums.len();
            if n >= cap {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        })?;
        Ok(n.min(cap))
    }

    fn history_within(
        &self,
        script: &ScriptHash,
        limit: usize,
    ) -> Result<Option<Vec<HistoryItem>>> {
        let view = self.view();
        let mut txnums = Vec::new();
        self.visit_txnums(&view, script, &mut |group| {
            txnums.extend_from_slice(group);
            if txnums.len() > limit {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        })?;
        if txnums.len() > limit {
            return Ok(None);
        }
        let mut out = Vec::with_capacity(txnums.len());
        let mut batch = Vec::with_capacity(TXID_BATCH);
        // As in `scan_history`: only the first batch's blocks are kept in the block cache.
        let mut cache = Caching::Fill;
        for chunk in txnums.chunks(TXID_BATCH) {
            self.resolve_txids_with(&view, chunk, &mut batch, cache)?;
            cache = Caching::Bypass;
            out.extend(batch.iter().map(|(n, txid)| HistoryItem {
                txid: *txid,
                height: view.height_of(*n).unwrap_or(0),
            }));
        }
        Ok(Some(out))
    }

    fn utxos(&self, script: &ScriptHash, limit: usize) -> Result<Vec<Utxo>> {
        let view = self.view();
        let hashx = script.hashx();
        let mut it = self.prefix_iter(&view, cf::UTXOS, &hashx.0);
        let mut raw: Vec<(u64, u32, u64)> = Vec::new();
        while let (Some(k), Some(v)) = (it.key(), it.value()) {
            if raw.len() >= limit {
                break;
            }
            if k.len() != keys::UTXO_KEY_LEN || v.len() != 8 {
                return Err(IndexError::Corrupt("utxo entry".into()));
            }
            let txnum = keys::txnum_from(&k[hashx.0.len()..]);
            let vout =
                u32::from_be_bytes(k[hashx.0.len() + TXNUM_LEN..].try_into().expect("4 bytes"));
            raw.push((
                txnum,
                vout,
                u64::from_le_bytes(v.try_into().expect("8 bytes")),
            ));
            it.next();
        }
        it.status().db()?;
        let mut out = Vec::with_capacity(raw.len());
        let mut txids = Vec::new();
        for (i, chunk) in raw.chunks(TXID_BATCH).enumerate() {
            let nums: Vec<u64> = chunk.iter().map(|r| r.0).collect();
            // As for histories, only a short list's blocks stay in the cache.
            let cache = if i == 0 {
                Caching::Fill
            } else {
                Caching::Bypass
            };
            self.resolve_txids_with(&view, &nums, &mut txids, cache)?;
            for ((txnum, vout, value), (_, txid)) in chunk.iter().zip(&txids) {
                if let Some(height) = view.height_of(*txnum) {
                    out.push(Utxo {
                        txid: *txid,
                        vout: *vout,
                        height,
                        value: *value,
                    });
                }
            }
        }
        Ok(out)
    }

    fn balance(&self, script: &ScriptHash) -> Result<u64> {
        let view = self.view();
        let hashx = script.hashx();
        let mut it = self.prefix_iter(&view, cf::UTXOS, &hashx.0);
        let mut sum = 0u64;
        while let Some(v) = it.value() {
            let v: [u8; 8] = v
                .try_into()
                .map_err(|_| IndexError::Corrupt("utxo value".into()))?;
            sum = sum.saturating_add(u64::from_le_bytes(v));
            it.next();
        }
        it.status().db()?;
        Ok(sum)
    }

    fn spender(&self, txid: &Txid, vout: u32) -> Result<Option<HistoryItem>> {
        let view = self.view();
        let Some(txnum) = self.find_txnum(&view, txid)? else {
            return Ok(None);
        };
        let mut ro = rocksdb::ReadOptions::default();
        ro.set_snapshot(&view.snapshot);
        let Some(v) = self
            .store
            .db()
            .get_cf_opt(
                self.store.cf(cf::SPENDERS),
                keys::spender_key(txnum, vout),
                &ro,
            )
            .db()?
        else {
            return Ok(None);
        };
        let spender = keys::txnum_from(&v);
        let Some(height) = view.height_of(spender) else {
            return Ok(None);
        };
        let mut out = Vec::new();
        self.resolve_txids(&view, &[spender], &mut out)?;
        Ok(out.first().map(|(_, t)| HistoryItem { txid: *t, height }))
    }

    fn output_exists(&self, txid: &Txid, vout: u32) -> Result<bool> {
        let view = self.view();
        let Some(txnum) = self.find_txnum(&view, txid)? else {
            return Ok(false);
        };
        let mut ro = rocksdb::ReadOptions::default();
        ro.set_snapshot(&view.snapshot);
        let db = self.store.db();
        if db
            .get_cf_opt(
                self.store.cf(cf::SPENDERS),
                keys::spender_key(txnum, vout),
                &ro,
            )
            .db()?
            .is_some()
        {
            return Ok(true);
        }
        let key = keys::outpoint_key(&txid.0, vout, txnum);
        Ok(db
            .get_cf_opt(self.store.cf(cf::OUTPOINTS), key, &ro)
            .db()?
            .is_some())
    }

    fn unspent_output(&self, txid: &Txid, vout: u32) -> Result<Option<(HashX, u64)>> {
        let view = self.view();
        let Some(txnum) = self.find_txnum(&view, txid)? else {
            return Ok(None);
        };
        let mut ro = rocksdb::ReadOptions::default();
        ro.set_snapshot(&view.snapshot);
        let key = keys::outpoint_key(&txid.0, vout, txnum);
        match self
            .store
            .db()
            .get_cf_opt(self.store.cf(cf::OUTPOINTS), key, &ro)
            .db()?
        {
            Some(v) => {
                Ok(Some(keys::decode_outpoint_value(&v).ok_or_else(|| {
                    IndexError::Corrupt("outpoint value".into())
                })?))
            }
            None => Ok(None),
        }
    }
}
