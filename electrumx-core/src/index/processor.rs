//! The block processor: applies parsed blocks to the index and takes them back on reorgs.
//!
//! While syncing it keeps the outputs created since the last flush in memory (most are spent
//! soon and never reach the disk) and accumulates every other write per column family
//! (`PendingWrites`); when both together exceed the cache budget, everything is committed
//! at once with the new state record (as SST files ingested during the initial sync, as one
//! `WriteBatch` otherwise). Once caught up, each block is committed on its own.

use super::cache::{COIN_ENTRY_BYTES, CoinInfo, FastMap, FastSet, OutKey};
use super::pending::{PendingWrites, SmallWrite};
use crate::coin::{Coin, CoinParams};
use crate::error::DbResultExt;
use crate::error::{IndexError, Result};
use crate::hash::{BlockHash, HashX, Txid};
use crate::parse::ParsedBlock;
use crate::store::keys::{self, CreatedOutput, SpentOutput, TXID_PREFIX_LEN, UndoRecord};
use crate::store::{ChainState, Store, cf};
use rocksdb::WriteBatch;
use std::collections::HashSet;
use std::sync::Arc;

/// How many copies of the pending writes a flush holds at its peak (see `should_flush`).
pub const FLUSH_MEMORY_FACTOR: usize = 3;

/// A parsed block with the per-output script hashes computed (done off the hot thread).
pub struct PreparedBlock {
    /// Height the block was fetched for.
    pub height: u32,
    /// The parsed block.
    pub block: ParsedBlock,
    /// HashX of every output, parallel to `block.outputs`; `None` for unspendable outputs.
    pub hashxs: Vec<Option<HashX>>,
}

impl PreparedBlock {
    /// Heap bytes held by this block (raw bytes, parsed lists, script hashes).
    pub fn memory_size(&self) -> usize {
        use crate::parse::{InputRef, OutputRef, TxRef};
        use std::mem::size_of;
        let b = &self.block;
        b.raw.capacity()
            + b.txs.capacity() * size_of::<TxRef>()
            + b.inputs.capacity() * size_of::<InputRef>()
            + b.outputs.capacity() * size_of::<OutputRef>()
            + self.hashxs.capacity() * size_of::<Option<HashX>>()
    }

    /// Computes the script hashes of a parsed block's outputs.
    pub fn new(height: u32, block: ParsedBlock, coin: &CoinParams) -> Self {
        let hashxs = block
            .outputs
            .iter()
            .map(|o| {
                let script = block.script(o);
                (!is_unspendable(coin, script)).then(|| HashX::of_script(script))
            })
            .collect();
        PreparedBlock {
            height,
            block,
            hashxs,
        }
    }
}

/// Whether an output can never be spent and so is not indexed. Bitcoin: OP_RETURN or
/// OP_FALSE OP_RETURN; Bitcoin SV (after its Genesis upgrade): only OP_FALSE OP_RETURN.
pub fn is_unspendable(coin: &CoinParams, script: &[u8]) -> bool {
    match coin.coin {
        Coin::Bitcoin => crate::parse::is_unspendable(script) || script.starts_with(&[0x00, 0x6a]),
        Coin::BitcoinSV => script.starts_with(&[0x00, 0x6a]),
    }
}

/// Scripts and outpoints a change touched (for notifications).
#[derive(Clone, Debug, Default)]
pub struct Touched {
    /// Scripts whose history, balance or UTXOs changed.
    pub hashxs: HashSet<HashX>,
    /// Outpoints that were spent or unspent, as (funding txid, vout).
    pub spent_outpoints: Vec<(Txid, u32)>,
}

/// Tuning of the processor.
#[derive(Clone, Debug)]
pub struct ProcessorOptions {
    /// Flush while syncing when caches exceed this many bytes (`CACHE_MB`).
    pub cache_bytes: usize,
    /// Blocks of undo information kept (`REORG_LIMIT`).
    pub reorg_limit: u32,
}

/// The block processor (see the module docs).
pub struct BlockProcessor {
    store: Arc<Store>,
    coin: CoinParams,
    opts: ProcessorOptions,
    writes: PendingWrites,
    coins: FastMap<OutKey, CoinInfo>,
    /// Outputs known to be in the database (flushed during this initial sync), kept so that
    /// spending one needs no database seek. Bounded by about half of the cache budget (its
    /// table's size is counted against the flush windows), oldest evicted first; emptied
    /// once caught up and on reorgs.
    clean: FastMap<OutKey, CoinInfo>,
    /// `outpoints` keys spent in this window of coins that the database or the in-flight
    /// flush still shows (see `take_prevouts`).
    spent_db_keys: FastSet<[u8; keys::OUTPOINT_KEY_LEN]>,
    pending: ChainState,
    /// A flush being written on another thread while indexing goes on (initial sync only).
    inflight: Option<Inflight>,
    /// The compaction that ends the initial sync's bulk load, running on its own thread.
    compaction: Option<std::thread::JoinHandle<()>>,
    tx_count: u64,
    /// Height of the node's tip as last seen; undo data is kept within `reorg_limit` of it.
    daemon_height: u32,
    touched: Touched,
    collect_touched: bool,
    // Scratch space reused across blocks.
    block_txids: FastMap<Txid, u32>,
    /// Outpoint prefixes to look up in the database, with the index of their input.
    db_lookups: Vec<([u8; keys::OUTPOINT_PREFIX_LEN], u32)>,
    /// Where each input of the block being applied finds its coin, by input index.
    spends: Vec<Spend>,
    tx_hashxs: Vec<HashX>,
}

/// Where an input of the block being applied finds the coin it spends, as found before the
/// block's transactions are applied ([`BlockProcessor::take_prevouts`]).
#[derive(Clone, Copy)]
enum Spend {
    /// Created by an earlier transaction of the same block: in the window's coins by the
    /// time the input is applied.
    InBlock,
    /// Taken already: from the window's coins (no database key: never written), or from
    /// a flush's (the key of its `outpoints` entry, to delete).
    Found(CoinInfo, Option<[u8; keys::OUTPOINT_KEY_LEN]>),
    /// Nowhere: the block spends an output the index does not have.
    Missing,
}

/// The error for an input whose coin the index does not have.
fn missing_prevout(height: u32, key: &OutKey) -> IndexError {
    IndexError::MissingPrevout {
        height,
        txid: key.txid.to_display_hex(),
        vout: key.vout,
    }
}

/// A flush running on its own thread. Until it is joined, its coins and spent keys stay
/// visible to lookups: the database may or may not show its writes yet.
struct Inflight {
    handle: std::thread::JoinHandle<Result<()>>,
    coins: Arc<FastMap<OutKey, CoinInfo>>,
    spent_db_keys: Arc<FastSet<[u8; keys::OUTPOINT_KEY_LEN]>>,
    hashes: Vec<BlockHash>,
    base: u32,
    bytes: usize,
}

/// What [`BlockProcessor::advance`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Advance {
    /// The block extends the tip and was applied.
    Applied,
    /// The block does not build on our tip: the node reorganised.
    Reorg,
}

impl BlockProcessor {
    /// A processor over an open store.
    pub fn new(store: Arc<Store>, coin: CoinParams, opts: ProcessorOptions) -> Result<Self> {
        let tx_count = store.chain().read().tx_count();
        // Written again, with the txids that complete it, by the first flush.
        let txid_tail = store.txid_tail(tx_count)?;
        // The compaction that ends the initial sync was cut short by a stop: resume it.
        let compaction = match store.needs_bulk_compaction() {
            true => match store.hold_bulk_compactions() {
                Ok(()) => spawn_bulk_compaction(&store)
                    .map_err(|e| tracing::warn!("cannot start the compaction thread: {e}"))
                    .ok(),
                Err(e) => {
                    tracing::warn!("cannot hold compactions back: {e}");
                    None
                }
            },
            false => None,
        };
        Ok(BlockProcessor {
            store,
            coin,
            opts,
            writes: PendingWrites::starting_at(tx_count, txid_tail),
            coins: FastMap::default(),
            clean: FastMap::default(),
            spent_db_keys: FastSet::default(),
            pending: ChainState::default(),
            inflight: None,
            compaction,
            tx_count,
            daemon_height: 0,
            touched: Touched::default(),
            collect_touched: false,
            block_txids: FastMap::default(),
            db_lookups: Vec::new(),
            spends: Vec::new(),
            tx_hashxs: Vec::new(),
        })
    }

    /// Records the node's tip height (decides which blocks get undo information).
    pub fn set_daemon_height(&mut self, h: u32) {
        self.daemon_height = self.daemon_height.max(h);
    }

    /// Starts or stops collecting touched scripts (only worth it once caught up).
    pub fn collect_touched(&mut self, on: bool) {
        self.collect_touched = on;
    }

    /// Takes the scripts touched since the last call.
    pub fn take_touched(&mut self) -> Touched {
        std::mem::take(&mut self.touched)
    }

    /// Number of blocks indexed, flushed or not.
    pub fn block_count(&self) -> u32 {
        self.committed_base() + self.local_hashes_len() as u32
    }

    /// Number of blocks before the in-flight and pending ones: those committed when the
    /// in-flight flush started (it may have committed since; its blocks are still counted
    /// as in flight until it is joined).
    fn committed_base(&self) -> u32 {
        match &self.inflight {
            Some(f) => f.base,
            None => self.store.chain().read().headers.len() as u32,
        }
    }

    fn local_hashes_len(&self) -> usize {
        self.inflight.as_ref().map_or(0, |f| f.hashes.len()) + self.pending.hashes.len()
    }

    /// Transactions indexed, flushed or not.
    pub fn tx_count(&self) -> u64 {
        self.tx_count
    }

    /// Hash of the tip, flushed or not.
    pub fn tip_hash(&self) -> Option<BlockHash> {
        self.block_count()
            .checked_sub(1)
            .and_then(|h| self.hash_at(h))
    }

    /// Hash at `height` among the indexed blocks (flushed or not).
    pub fn hash_at(&self, height: u32) -> Option<BlockHash> {
        let base = self.committed_base();
        if height < base {
            return self
                .store
                .chain()
                .read()
                .hashes
                .get(height as usize)
                .copied();
        }
        let i = (height - base) as usize;
        let inflight: &[BlockHash] = self.inflight.as_ref().map_or(&[], |f| &f.hashes);
        match inflight.get(i) {
            Some(h) => Some(*h),
            None => self.pending.hashes.get(i - inflight.len()).copied(),
        }
    }

    /// Bytes held in memory by the sync's caches (awaiting a flush, or flushed outputs kept
    /// for fast spends).
    pub fn cache_bytes(&self) -> usize {
        self.coins.len() * COIN_ENTRY_BYTES
            + self.clean_bytes()
            + self.writes.bytes()
            + self.spent_db_keys.len() * 48
            + self.inflight.as_ref().map_or(0, |f| f.bytes)
    }

    /// True when the caches have outgrown their budget. The budget (`CACHE_MB`) bounds the
    /// sync's whole memory: a flush holds its writes up to [`FLUSH_MEMORY_FACTOR`] times (our
    /// buffers, the RocksDB write batch, the memtable it lands in), and one flush may be in
    /// flight while the next window fills, so a window gets a sixth of what the cache of
    /// flushed outputs (at most half the budget) leaves.
    pub fn should_flush(&self) -> bool {
        let window = self.coins.len() * COIN_ENTRY_BYTES
            + self.writes.bytes()
            + self.spent_db_keys.len() * 48;
        let rest = self.opts.cache_bytes.saturating_sub(self.clean_bytes());
        window.saturating_mul(FLUSH_MEMORY_FACTOR * 2) >= rest
    }

    /// Bytes the cache of flushed outputs may hold.
    fn clean_budget(&self) -> usize {
        self.opts.cache_bytes / 2
    }

    /// Moves the outputs of a committed flush into the cache of flushed outputs (those
    /// spent since it started are gone from the database, so they stay out), then trims the
    /// cache to its budget by dropping the oldest outputs: recent outputs are the likeliest
    /// to be spent next.
    fn keep_flushed_coins(&mut self, coins: &FastMap<OutKey, CoinInfo>) {
        let table_entries = self.clean_budget() / COIN_ENTRY_BYTES;
        if table_entries == 0 {
            return;
        }
        if self.clean.capacity() == 0 {
            // Sized once: growing a table this big doubles it, and for a moment the old
            // and the new table would both be in memory.
            self.clean.reserve(table_entries);
        }
        // Held to half the table's room. Spends leave tombstones in the table; an insert
        // that finds no free slot rehashes the table in place (dropping them) only while it
        // is at most half full, and doubles it otherwise. Filled to its room, the table
        // doubled once the chain's unspent outputs outgrew it (55M transactions into a
        // tenth of mainnet), and the doubled table left the sync's windows no room: a
        // flush every few blocks.
        let budget_entries = self.clean.capacity() / 2;
        // Trimmed before the flush's outputs (the newest) go in, so the table never
        // outgrows its size: to three quarters of the budget with them.
        if self.clean.len() + coins.len() > budget_entries {
            let keep = (budget_entries * 3 / 4).saturating_sub(coins.len());
            if keep == 0 {
                self.clean.clear();
            } else if self.clean.len() > keep {
                let mut txnums: Vec<u64> = self.clean.values().map(|c| c.txnum).collect();
                let cut = txnums.len() - keep;
                let (_, cutoff, _) = txnums.select_nth_unstable(cut);
                let cutoff = *cutoff;
                drop(txnums);
                self.clean.retain(|_, c| c.txnum >= cutoff);
            }
            tracing::debug!(entries = self.clean.len(), "flushed-output cache trimmed");
        }
        for (k, c) in coins {
            if self.clean.len() >= budget_entries {
                break;
            }
            let db_key = keys::outpoint_key(&k.txid.0[..TXID_PREFIX_LEN], k.vout, c.txnum);
            if !self.spent_db_keys.contains(&db_key) {
                self.clean.insert(*k, *c);
            }
        }
    }

    /// Bytes held by the table of the cache of flushed outputs (an entry and a control byte
    /// a slot; a table has 8 slots for 7 entries it can hold).
    fn clean_bytes(&self) -> usize {
        self.clean.capacity() * (std::mem::size_of::<(OutKey, CoinInfo)>() + 1) * 8 / 7
    }

    /// Drops the cache of flushed outputs (caught up, or the chain is being taken back).
    fn drop_clean(&mut self) {
        self.clean = FastMap::default();
    }

    /// True if there is anything unflushed.
    pub fn has_pending(&self) -> bool {
        !self.pending.headers.is_empty() || self.inflight.is_some()
    }

    /// Waits for the in-flight flush, if any, and reports its outcome.
    pub fn wait_inflight(&mut self) -> Result<()> {
        if let Some(f) = self.inflight.take() {
            f.handle
                .join()
                .map_err(|payload| IndexError::panic("flush", &*payload))??;
            self.keep_flushed_coins(&f.coins);
        }
        Ok(())
    }

    /// Applies a block on top of the current tip. After an error the processor's memory
    /// is no longer consistent (the database is untouched): the caller must drop it.
    pub fn advance(&mut self, pb: &PreparedBlock) -> Result<Advance> {
        let height = self.block_count();
        let block = &pb.block;
        if pb.height != height {
            return Err(IndexError::ChainMismatch(format!(
                "expected block {height}, got block {}",
                pb.height
            )));
        }
        match self.tip_hash() {
            None if block.hash != self.coin.genesis_hash => {
                return Err(IndexError::ChainMismatch(format!(
                    "node's genesis {} is not {}'s genesis {}",
                    block.hash, self.coin, self.coin.genesis_hash
                )));
            }
            Some(tip) if block.prev_hash() != tip => return Ok(Advance::Reorg),
            _ => {}
        }
        let first_txnum = self.tx_count;
        // The genesis coinbase is unspendable and not indexed (as in ElectrumX).
        let n_txs = if height == 0 { 0 } else { block.txs.len() };
        let keep_undo = height as u64 + self.opts.reorg_limit as u64 > self.daemon_height as u64;
        let mut undo = UndoRecord::default();
        if n_txs > 0 {
            self.take_prevouts(pb, n_txs)?;
        }
        for (i, tx) in block.txs[..n_txs].iter().enumerate() {
            let txnum = first_txnum + i as u64;
            self.tx_hashxs.clear();
            debug_assert_eq!(self.writes.next_txnum(), txnum);
            self.writes.txids.push(tx.txid);
            self.writes
                .txid_index
                .push(keys::txid_index_key(&tx.txid, txnum));
            for (j, input) in tx.inputs.clone().zip(&block.inputs[tx.inputs.clone()]) {
                let key = OutKey {
                    txid: input.prev_txid,
                    vout: input.prev_vout,
                };
                let (coin, db_key) = match self.spends[j] {
                    Spend::Found(coin, db_key) => (coin, db_key),
                    Spend::InBlock => match self.coins.remove(&key) {
                        Some(coin) => (coin, None),
                        None => return Err(missing_prevout(height, &key)),
                    },
                    Spend::Missing => return Err(missing_prevout(height, &key)),
                };
                if let Some(k) = db_key {
                    self.writes.outpoint_deletes.push(k);
                    self.writes.utxo_deletes.push(keys::utxo_key(
                        &coin.hashx,
                        coin.txnum,
                        key.vout,
                    ));
                }
                self.writes.spenders.push((
                    keys::spender_key(coin.txnum, key.vout),
                    keys::txnum_bytes(txnum),
                ));
                self.tx_hashxs.push(coin.hashx);
                if keep_undo {
                    undo.spent.push(SpentOutput {
                        created: created(key.vout, coin.txnum),
                        hashx: coin.hashx,
                        value: coin.value,
                        spender_txnum: txnum,
                    });
                }
                if self.collect_touched {
                    self.touched.spent_outpoints.push((key.txid, key.vout));
                }
            }
            for (vout, out_index) in tx.outputs.clone().enumerate() {
                let Some(hashx) = pb.hashxs[out_index] else {
                    continue;
                };
                let vout = vout as u32;
                let value = block.outputs[out_index].value;
                self.coins.insert(
                    OutKey {
                        txid: tx.txid,
                        vout,
                    },
                    CoinInfo {
                        txnum,
                        hashx,
                        value,
                    },
                );
                self.tx_hashxs.push(hashx);
                if keep_undo {
                    undo.created.push(created(vout, txnum));
                }
            }
            self.tx_hashxs.sort_unstable();
            self.tx_hashxs.dedup();
            for hashx in &self.tx_hashxs {
                self.writes.history.push(keys::history_key(hashx, txnum));
            }
            if self.collect_touched {
                self.touched.hashxs.extend(self.tx_hashxs.iter().copied());
            }
        }
        self.tx_count += n_txs as u64;
        let mut header_value = Vec::with_capacity(88);
        header_value.extend_from_slice(block.header());
        header_value.extend_from_slice(&self.tx_count.to_be_bytes());
        let writes = &mut self.writes;
        writes.push_small(SmallWrite::Put(
            cf::HEADERS,
            keys::height_key(height),
            header_value,
        ));
        if keep_undo {
            writes.push_small(SmallWrite::Put(
                cf::UNDO,
                keys::height_key(height),
                undo.encode(),
            ));
        }
        if let Some(old) = height.checked_sub(self.opts.reorg_limit) {
            writes.push_small(SmallWrite::Delete(cf::UNDO, keys::height_key(old)));
        }
        self.pending.headers.push(*block.header());
        self.pending.hashes.push(block.hash);
        Arc::make_mut(&mut self.pending.tx_counts).push(self.tx_count);
        Ok(Advance::Applied)
    }

    /// Finds the coin every input of the block spends ([`Spend`], in `self.spends`): taken
    /// out of the window's coins or the cache of flushed outputs, read from the in-flight
    /// flush's, or else from the database, in one sorted pass with a single iterator
    /// instead of a seek per input. One probe of each big table at most per input: each is
    /// a likely cache miss in a table of millions, and none is made once one has found it.
    ///
    /// Keys of flushed coins that the database (or the in-flight flush) still shows go in
    /// `spent_db_keys`, so that no later lookup in this window takes them again and the
    /// in-flight flush's outputs spent meanwhile stay out of the cache of flushed outputs.
    /// Coins taken from that cache need no entry: it holds outputs of committed flushes
    /// only, which are not in the in-flight flush, and a valid chain never spends one twice.
    fn take_prevouts(&mut self, pb: &PreparedBlock, n_txs: usize) -> Result<()> {
        let block = &pb.block;
        self.block_txids.clear();
        self.db_lookups.clear();
        self.spends.clear();
        self.spends.resize(block.inputs.len(), Spend::Missing);
        for (i, tx) in block.txs[..n_txs].iter().enumerate() {
            for (j, input) in tx.inputs.clone().zip(&block.inputs[tx.inputs.clone()]) {
                let key = OutKey {
                    txid: input.prev_txid,
                    vout: input.prev_vout,
                };
                let in_block = self
                    .block_txids
                    .get(&input.prev_txid)
                    .is_some_and(|&t| (t as usize) < i);
                if in_block {
                    self.spends[j] = Spend::InBlock;
                    continue;
                }
                let db_key = |c: &CoinInfo| {
                    keys::outpoint_key(&key.txid.0[..TXID_PREFIX_LEN], key.vout, c.txnum)
                };
                self.spends[j] = if let Some(c) = self.coins.remove(&key) {
                    Spend::Found(c, None)
                } else if let Some(c) = self.inflight.as_ref().and_then(|f| f.coins.get(&key)) {
                    let k = db_key(c);
                    self.spent_db_keys.insert(k);
                    Spend::Found(*c, Some(k))
                } else if let Some(c) = self.clean.remove(&key) {
                    Spend::Found(c, Some(db_key(&c)))
                } else {
                    self.db_lookups
                        .push((keys::outpoint_prefix(&key.txid, key.vout), j as u32));
                    Spend::Missing
                };
            }
            self.block_txids.insert(tx.txid, i as u32);
        }
        if self.db_lookups.is_empty() {
            return Ok(());
        }
        self.db_lookups.sort_unstable_by_key(|a| a.0);
        let db = self.store.db();
        let outpoints = self.store.cf(cf::OUTPOINTS);
        // A prefix-mode iterator: each seek consults the SST files' prefix bloom filters, so
        // files without the outpoint are skipped. Seeks go in key order for locality.
        let mut ro = rocksdb::ReadOptions::default();
        ro.set_prefix_same_as_start(true);
        let mut it = db.raw_iterator_cf_opt(outpoints, ro);
        let mut candidates: Vec<([u8; keys::OUTPOINT_KEY_LEN], CoinInfo)> = Vec::new();
        for &(prefix, j) in &self.db_lookups {
            let input = &block.inputs[j as usize];
            candidates.clear();
            it.seek(prefix);
            while let (Some(k), Some(v)) = (it.key(), it.value()) {
                if !k.starts_with(&prefix) {
                    break;
                }
                let k: [u8; keys::OUTPOINT_KEY_LEN] = k
                    .try_into()
                    .map_err(|_| IndexError::Corrupt("outpoint key length".into()))?;
                let spent_in_flight = self
                    .inflight
                    .as_ref()
                    .is_some_and(|f| f.spent_db_keys.contains(&k));
                if !self.spent_db_keys.contains(&k) && !spent_in_flight {
                    let (hashx, value) = keys::decode_outpoint_value(v)
                        .ok_or_else(|| IndexError::Corrupt("outpoint value".into()))?;
                    let txnum = keys::txnum_from(&k[keys::OUTPOINT_PREFIX_LEN..]);
                    candidates.push((
                        k,
                        CoinInfo {
                            txnum,
                            hashx,
                            value,
                        },
                    ));
                }
                it.next();
            }
            it.status().db()?;
            let chosen = match candidates.len() {
                0 => continue, // reported as missing when the input is applied
                1 => candidates[0],
                _ => {
                    // Txid prefix collision: compare full txids.
                    let mut found = None;
                    for c in &candidates {
                        if self.store.txid(c.1.txnum)? == Some(input.prev_txid) {
                            found = Some(*c);
                        }
                    }
                    match found {
                        Some(c) => c,
                        None => continue,
                    }
                }
            };
            self.spent_db_keys.insert(chosen.0);
            self.spends[j as usize] = Spend::Found(chosen.1, Some(chosen.0));
        }
        Ok(())
    }

    /// Commits everything pending in one atomic batch. `sync` asks for an fsync and waits
    /// for the commit (at the tip); otherwise (initial sync) the batch is built and written
    /// on another thread while indexing continues, after any earlier one has finished.
    pub fn flush(&mut self, sync: bool) -> Result<()> {
        self.wait_inflight()?;
        if self.pending.headers.is_empty() {
            return Ok(());
        }
        let bytes = self.cache_bytes() - self.clean_bytes();
        // While syncing, the next window starts with room for as much as this one held
        // (see `PendingWrites::next_window`): a table grown by doubling is rehashed into
        // fresh memory at each step. At the tip each block is a window of its own.
        let next_writes = self.writes.next_window(!sync);
        let writes = std::mem::replace(&mut self.writes, next_writes);
        let next_coins = match sync {
            true => FastMap::default(),
            false => FastMap::with_capacity_and_hasher(self.coins.len(), Default::default()),
        };
        let coins = Arc::new(std::mem::replace(&mut self.coins, next_coins));
        let spent = Arc::new(std::mem::take(&mut self.spent_db_keys));
        let mut meta = self.store.meta();
        meta.block_count = self.block_count();
        meta.tx_count = self.tx_count;
        let base = self.committed_base();
        let pending = std::mem::take(&mut self.pending);
        let hashes = pending.hashes.clone();
        let store = self.store.clone();
        let commit_coins = coins.clone();
        let commit = move || -> Result<()> {
            let t0 = std::time::Instant::now();
            let update = move |chain: &mut ChainState| {
                chain.headers.extend(pending.headers);
                chain.hashes.extend(pending.hashes);
                Arc::make_mut(&mut chain.tx_counts).extend(pending.tx_counts.iter());
            };
            if store.is_bulk_load() {
                let files = writes.into_files(&commit_coins, &store)?;
                tracing::debug!(secs = t0.elapsed().as_secs_f64(), "flush: files written");
                store.commit_files(&files, meta, update)?;
                store.compact_if_crowded();
            } else {
                let batch = writes.into_batch(&commit_coins, &store);
                tracing::debug!(
                    secs = t0.elapsed().as_secs_f64(),
                    bytes = batch.size_in_bytes(),
                    "flush: batch built"
                );
                store.commit(batch, meta, sync, update)?;
            }
            Ok(())
        };
        if sync {
            return commit();
        }
        let handle = std::thread::Builder::new()
            .name("flush".into())
            .spawn(commit)?;
        self.inflight = Some(Inflight {
            handle,
            coins,
            spent_db_keys: spent,
            hashes,
            base,
            bytes,
        });
        Ok(())
    }

    /// Marks the first catch-up with the node as done (persisted with the next commit).
    pub fn mark_synced(&mut self) -> Result<()> {
        self.wait_inflight()?;
        self.drop_clean();
        let mut meta = self.store.meta();
        if meta.first_sync {
            self.flush(true)?;
            if self.store.is_bulk_load() {
                self.store.finish_bulk_load()?;
                self.compaction = Some(spawn_bulk_compaction(&self.store)?);
            }
            meta = self.store.meta();
            meta.first_sync = false;
            self.store
                .commit(WriteBatch::default(), meta, true, |_| {})?;
        }
        Ok(())
    }

    /// Takes back every block above `fork_height` in one atomic batch, using the stored undo
    /// information. Fails without changing anything if some block lacks undo information.
    pub fn backup_to(&mut self, fork_height: u32) -> Result<()> {
        self.flush(true)?;
        self.drop_clean();
        let store = self.store.clone();
        let chain = store.chain().read();
        let Some(tip) = chain.tip_height() else {
            return Ok(());
        };
        if fork_height >= tip {
            return Ok(());
        }
        let db = store.db();
        let mut records = Vec::new();
        for h in (fork_height + 1..=tip).rev() {
            match db.get_cf(store.cf(cf::UNDO), keys::height_key(h)).db()? {
                Some(bytes) => records.push((
                    h,
                    UndoRecord::decode(&bytes)
                        .ok_or_else(|| IndexError::Corrupt(format!("undo record at {h}")))?,
                )),
                None if h == 0 => records.push((h, UndoRecord::default())),
                None => {
                    return Err(IndexError::ReorgTooDeep {
                        tip,
                        depth: tip - fork_height,
                        limit: self.opts.reorg_limit,
                    });
                }
            }
        }
        // Txid prefixes of the outputs involved, from their tx numbers.
        let mut prefixes: std::collections::HashMap<u64, [u8; TXID_PREFIX_LEN]> =
            std::collections::HashMap::new();
        let mut prefix_of = |txnum: u64| -> Result<[u8; TXID_PREFIX_LEN]> {
            if let Some(p) = prefixes.get(&txnum) {
                return Ok(*p);
            }
            let txid = store
                .txid(txnum)?
                .ok_or_else(|| IndexError::Corrupt(format!("no txid for tx {txnum}")))?;
            let mut p = [0u8; TXID_PREFIX_LEN];
            p.copy_from_slice(&txid.0[..TXID_PREFIX_LEN]);
            prefixes.insert(txnum, p);
            Ok(p)
        };
        // Scripts of the outputs spent by the blocks taken back: the outputs those blocks
        // created and spent are no longer in `outpoints`, so their scripts come from here.
        let mut restored: std::collections::HashMap<(u64, u32), HashX> =
            std::collections::HashMap::new();
        // Scripts whose history loses the entries of the blocks taken back.
        let mut history_scripts: HashSet<HashX> = HashSet::new();
        let mut batch = WriteBatch::default();
        for (h, rec) in &records {
            for s in &rec.spent {
                let c = &s.created;
                batch.put_cf(
                    store.cf(cf::OUTPOINTS),
                    keys::outpoint_key(&prefix_of(c.txnum)?, c.vout, c.txnum),
                    keys::outpoint_value(&s.hashx, s.value),
                );
                batch.put_cf(
                    store.cf(cf::UTXOS),
                    keys::utxo_key(&s.hashx, c.txnum, c.vout),
                    s.value.to_le_bytes(),
                );
                batch.delete_cf(store.cf(cf::SPENDERS), keys::spender_key(c.txnum, c.vout));
                history_scripts.insert(s.hashx);
                restored.insert((c.txnum, c.vout), s.hashx);
                if self.collect_touched {
                    self.touched.hashxs.insert(s.hashx);
                }
            }
            for c in &rec.created {
                let outpoint = keys::outpoint_key(&prefix_of(c.txnum)?, c.vout, c.txnum);
                let hashx = match restored.get(&(c.txnum, c.vout)) {
                    Some(h) => *h,
                    None => {
                        let v = db
                            .get_cf(store.cf(cf::OUTPOINTS), outpoint)
                            .db()?
                            .ok_or_else(|| {
                                IndexError::Corrupt(format!(
                                    "undo at {h}: output {}:{} is neither unspent nor spent above",
                                    c.txnum, c.vout
                                ))
                            })?;
                        keys::decode_outpoint_value(&v)
                            .ok_or_else(|| IndexError::Corrupt("outpoint value".into()))?
                            .0
                    }
                };
                batch.delete_cf(store.cf(cf::OUTPOINTS), outpoint);
                batch.delete_cf(store.cf(cf::UTXOS), keys::utxo_key(&hashx, c.txnum, c.vout));
                history_scripts.insert(hashx);
                if self.collect_touched {
                    self.touched.hashxs.insert(hashx);
                }
            }
            for txnum in chain.first_txnum(*h)..chain.tx_counts[*h as usize] {
                let txid = store
                    .txid(txnum)?
                    .ok_or_else(|| IndexError::Corrupt(format!("no txid for tx {txnum}")))?;
                batch.delete_cf(store.cf(cf::TXID_INDEX), keys::txid_index_key(&txid, txnum));
            }
            batch.delete_cf(store.cf(cf::HEADERS), keys::height_key(*h));
            batch.delete_cf(store.cf(cf::UNDO), keys::height_key(*h));
        }
        let new_count = fork_height + 1;
        let new_tx_count = chain.tx_counts[fork_height as usize];
        for hashx in &history_scripts {
            truncate_history(&store, &mut batch, hashx, new_tx_count)?;
        }
        // The txids chunks above the fork go; the one it cuts keeps its first txids.
        let tail = store.txid_tail(new_tx_count)?;
        let mut chunk = new_tx_count - new_tx_count % keys::TXIDS_PER_CHUNK;
        if !tail.is_empty() {
            let value: Vec<u8> = tail.iter().flat_map(|t| t.0).collect();
            batch.put_cf(store.cf(cf::TXIDS), keys::txids_chunk_key(chunk), value);
            chunk += keys::TXIDS_PER_CHUNK;
        }
        while chunk < chain.tx_count() {
            batch.delete_cf(store.cf(cf::TXIDS), keys::txids_chunk_key(chunk));
            chunk += keys::TXIDS_PER_CHUNK;
        }
        drop(chain);
        let mut meta = store.meta();
        meta.block_count = new_count;
        meta.tx_count = new_tx_count;
        store.commit(batch, meta, true, |chain| {
            chain.headers.truncate(new_count as usize);
            chain.hashes.truncate(new_count as usize);
            Arc::make_mut(&mut chain.tx_counts).truncate(new_count as usize);
        })?;
        self.tx_count = new_tx_count;
        self.writes = PendingWrites::starting_at(new_tx_count, tail);
        tracing::info!(
            fork_height,
            undone = records.len(),
            "backed up to the fork point"
        );
        Ok(())
    }
}

/// Adds to `batch` what removes a script's history entries from `tx_count` on: the groups
/// starting there or later go, and the one before, which may run past it, is cut short.
fn truncate_history(
    store: &Store,
    batch: &mut WriteBatch,
    hashx: &HashX,
    tx_count: u64,
) -> Result<()> {
    let cf_handle = store.cf(cf::HISTORY);
    let cut = keys::history_key(hashx, tx_count);
    let mut ro = rocksdb::ReadOptions::default();
    ro.set_prefix_same_as_start(true);
    let mut it = store.db().raw_iterator_cf_opt(cf_handle, ro);
    it.seek(cut);
    while let Some(k) = it.key() {
        if !k.starts_with(&hashx.0) {
            break;
        }
        batch.delete_cf(cf_handle, k);
        it.next();
    }
    it.status().db()?;
    it.seek_for_prev(cut);
    if let (Some(k), Some(v)) = (it.key(), it.value())
        && k.starts_with(&hashx.0)
        && k < &cut[..]
    {
        let mut group = Vec::new();
        if !keys::read_history_group(k, v, &mut group) {
            return Err(IndexError::Corrupt("history entry".into()));
        }
        let mut kept = Vec::new();
        for w in group.windows(2).take_while(|w| w[1] < tx_count) {
            keys::encode_history_next(&mut kept, w[0], w[1]);
        }
        if kept.len() != v.len() {
            batch.put_cf(cf_handle, k, kept);
        }
    }
    it.status().db()?;
    Ok(())
}

/// Starts [`Store::compact_after_bulk_load`] on a thread of its own.
fn spawn_bulk_compaction(store: &Arc<Store>) -> std::io::Result<std::thread::JoinHandle<()>> {
    let store = Arc::downgrade(store);
    std::thread::Builder::new()
        .name("compaction".into())
        .spawn(move || Store::compact_after_bulk_load(store))
}

impl Drop for BlockProcessor {
    /// The index is stopping: a compaction still running is abandoned (it resumes as RocksDB's
    /// own after the next open), so that the database closes promptly.
    fn drop(&mut self) {
        // A flush still being written (the sync loop failed): waited for, so that no thread
        // of ours holds the store once the processor is gone.
        if let Some(f) = self.inflight.take() {
            let _ = f.handle.join();
        }
        if let Some(handle) = self.compaction.take() {
            if !handle.is_finished() {
                self.store.stop_background_work();
            }
            let _ = handle.join();
        }
    }
}

fn created(vout: u32, txnum: u64) -> CreatedOutput {
    CreatedOutput { vout, txnum }
}
