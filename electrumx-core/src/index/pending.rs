//! Writes of the block processor that await a flush, kept per column family as fixed-size
//! keys rather than in a `WriteBatch`, so that at flush time each family's writes can be
//! sorted. RocksDB's memtable inserts keys in sorted order far faster than in random order
//! (its skip list reuses the previous insert position), which made the difference between
//! a 45 s and a few-second flush of a full cache.

use super::cache::{CoinInfo, FastMap, OutKey};
use crate::error::{IndexError, Result};
use crate::hash::Txid;
use crate::store::keys::{self, OUTPOINT_KEY_LEN, TXID_PREFIX_LEN, TXNUM_LEN, UTXO_KEY_LEN};
use crate::store::sink::{BatchSink, FamilyFile, Sink};
use crate::store::{Store, cf};
use rocksdb::WriteBatch;

const HASHX_LEN: usize = crate::hash::HASHX_LEN;
const HISTORY_KEY_LEN: usize = HASHX_LEN + TXNUM_LEN;
/// History entries from which a flush sorts on a second thread.
const PARALLEL_SORT_MIN: usize = 100_000;
const SPENDER_KEY_LEN: usize = TXNUM_LEN + 4;

/// Unflushed writes (see the module docs).
#[derive(Default)]
pub struct PendingWrites {
    /// Tx number of `txids[0]`: always the first of a `txids` chunk.
    pub txids_base: u64,
    /// Txids from `txids_base` on, in txnum order. The last chunk's txids are carried from
    /// one window to the next ([`PendingWrites::next_window`]) until it is full, so each
    /// flush writes its chunks whole.
    pub txids: Vec<Txid>,
    /// `txid_index` keys.
    pub txid_index: Vec<[u8; TXID_PREFIX_LEN + TXNUM_LEN]>,
    /// `history` entries (hashX ‖ txnum), written grouped per script.
    pub history: Vec<[u8; HISTORY_KEY_LEN]>,
    /// `spenders` entries.
    pub spenders: Vec<([u8; SPENDER_KEY_LEN], [u8; TXNUM_LEN])>,
    /// Flushed outpoints spent since the last flush.
    pub outpoint_deletes: Vec<[u8; OUTPOINT_KEY_LEN]>,
    /// Flushed UTXO entries spent since the last flush.
    pub utxo_deletes: Vec<[u8; UTXO_KEY_LEN]>,
    /// Headers and undo records: one or two per block, put into the batch first
    /// (pushed with [`PendingWrites::push_small`], which keeps `small_bytes`).
    pub small: Vec<SmallWrite>,
    /// Bytes of `small` (kept as it grows: summing it per block made a window of many
    /// small blocks quadratic).
    pub small_bytes: usize,
}

/// A write to the `headers` or `undo` family (one or two per block).
pub enum SmallWrite {
    /// Puts `value` at `key` in the family named.
    Put(&'static str, [u8; 4], Vec<u8>),
    /// Deletes `key` in the family named.
    Delete(&'static str, [u8; 4]),
}

impl SmallWrite {
    fn bytes(&self) -> usize {
        match self {
            SmallWrite::Put(_, _, v) => 4 + v.len(),
            SmallWrite::Delete(..) => 4,
        }
    }
}

/// Bytes a `WriteBatch` record takes beyond its key and value (a type tag, a family id and
/// two length varints), at most.
const BATCH_RECORD_OVERHEAD: usize = 8;

impl PendingWrites {
    /// Empty writes for a chain of `tx_count` transactions, given the txids of its last,
    /// partial `txids` chunk (`tail`, possibly empty).
    pub fn starting_at(tx_count: u64, tail: Vec<Txid>) -> Self {
        let txids_base = tx_count - tx_count % keys::TXIDS_PER_CHUNK;
        debug_assert_eq!(txids_base + tail.len() as u64, tx_count);
        PendingWrites {
            txids_base,
            txids: tail,
            ..PendingWrites::default()
        }
    }

    /// Empty writes for the window after this one: they start with this window's last,
    /// partial chunk of txids, to be written again with the txids that complete it.
    /// `presized` reserves as much room in each list as this window used: during the
    /// initial sync one window is much like the next, and lists grown by doubling are
    /// copied over and over into fresh memory, each page of it faulted in.
    pub fn next_window(&self, presized: bool) -> Self {
        let full = self.txids.len() - self.txids.len() % keys::TXIDS_PER_CHUNK as usize;
        let room = |len: usize| if presized { len } else { 0 };
        let mut txids = Vec::with_capacity(room(self.txids.len()));
        txids.extend_from_slice(&self.txids[full..]);
        PendingWrites {
            txids_base: self.txids_base + full as u64,
            txids,
            txid_index: Vec::with_capacity(room(self.txid_index.len())),
            history: Vec::with_capacity(room(self.history.len())),
            spenders: Vec::with_capacity(room(self.spenders.len())),
            outpoint_deletes: Vec::with_capacity(room(self.outpoint_deletes.len())),
            utxo_deletes: Vec::with_capacity(room(self.utxo_deletes.len())),
            small: Vec::with_capacity(room(self.small.len())),
            small_bytes: 0,
        }
    }

    /// Tx number the next txid pushed gets.
    pub fn next_txnum(&self) -> u64 {
        self.txids_base + self.txids.len() as u64
    }

    /// Approximate bytes held.
    pub fn bytes(&self) -> usize {
        self.txids.len() * 32
            + self.txid_index.len() * 13
            + self.history.len() * HISTORY_KEY_LEN
            + self.spenders.len() * (SPENDER_KEY_LEN + TXNUM_LEN)
            + self.outpoint_deletes.len() * OUTPOINT_KEY_LEN
            + self.utxo_deletes.len() * UTXO_KEY_LEN
            + self.small_bytes
    }

    /// Adds a header or undo write.
    pub fn push_small(&mut self, write: SmallWrite) {
        self.small_bytes += write.bytes();
        self.small.push(write);
    }

    /// An upper bound of the batch's size with `coins` unspent outputs, so it is allocated
    /// once: grown by doubling, a flush's batch of several hundred megabytes was copied
    /// over and over, and each copy touched fresh pages.
    fn batch_capacity(&self, coins: usize) -> usize {
        const R: usize = BATCH_RECORD_OVERHEAD;
        let chunks = self.txids.len().div_ceil(keys::TXIDS_PER_CHUNK as usize);
        chunks * (R + 8) + self.txids.len() * 32
            + self.txid_index.len() * (R + TXID_PREFIX_LEN + TXNUM_LEN)
            // At worst one group per entry; a group's entries beyond the first take a few
            // bytes each, far fewer than a key.
            + self.history.len() * (R + HISTORY_KEY_LEN)
            + self.spenders.len() * (R + SPENDER_KEY_LEN + TXNUM_LEN)
            + coins * (2 * R + OUTPOINT_KEY_LEN + 19 + UTXO_KEY_LEN + 8)
            + self.outpoint_deletes.len() * (R + OUTPOINT_KEY_LEN)
            + self.utxo_deletes.len() * (R + UTXO_KEY_LEN)
            + self.small.len() * R
            + self.small_bytes
            + 64
    }

    /// Builds the batch: every family's writes in key order, plus the unspent `coins`
    /// created since the last flush.
    pub fn into_batch(self, coins: &FastMap<OutKey, CoinInfo>, store: &Store) -> WriteBatch {
        let mut sink = BatchSink::new(store, self.batch_capacity(coins.len()));
        let Sorted {
            index,
            coins,
            utxos,
        } = self.sorted(coins);
        // A batch sink does not fail.
        index.write(&mut sink).expect("batch put");
        coins.write(&mut sink).expect("batch put");
        write_utxos(utxos, &mut sink).expect("batch put");
        sink.batch
    }

    /// Writes every family's SST file for a flush of the bulk load (see [`Store::sst_sink`]),
    /// on three threads: during the initial sync this is the longest step of a flush, and
    /// the block processor may be waiting for it. The three sets of families (script- and
    /// txid-keyed; `outpoints` with the blocks' families; `utxos`) take about as long as
    /// each other to write.
    pub fn into_files(
        self,
        coins: &FastMap<OutKey, CoinInfo>,
        store: &Store,
    ) -> Result<Vec<FamilyFile>> {
        store.start_bulk_flush()?;
        let Sorted {
            index,
            coins,
            utxos,
        } = self.sorted(coins);
        let joined = |h: std::thread::ScopedJoinHandle<'_, Result<Vec<FamilyFile>>>| {
            h.join()
                .map_err(|payload| IndexError::panic("flush writer", &*payload))?
        };
        std::thread::scope(|scope| {
            let index = scope.spawn(|| {
                let mut sink = store.sst_sink("index");
                index.write(&mut sink)?;
                sink.finish()
            });
            let utxos = scope.spawn(|| {
                let mut sink = store.sst_sink("utxos");
                write_utxos(utxos, &mut sink)?;
                sink.finish()
            });
            let mut sink = store.sst_sink("coins");
            let mine = coins.write(&mut sink).and_then(|()| sink.finish());
            // Every thread is joined before any error is reported.
            let (index, utxos) = (joined(index), joined(utxos));
            let mut files = mine?;
            files.extend(index?);
            files.extend(utxos?);
            Ok(files)
        })
    }

    /// Sorts every family's writes (on two threads for a large window), grouped in three
    /// sets of families that can be written independently.
    fn sorted(self, coins: &FastMap<OutKey, CoinInfo>) -> Sorted {
        let PendingWrites {
            txids_base,
            txids,
            mut txid_index,
            mut history,
            mut spenders,
            outpoint_deletes,
            utxo_deletes,
            small,
            small_bytes: _,
        } = self;
        // A block at the tip is sorted in no time: a thread would cost more than it saves.
        let (outpoints, utxos) = if history.len() >= PARALLEL_SORT_MIN {
            std::thread::scope(|scope| {
                scope.spawn(|| sort_index_keys(&mut history, &mut txid_index, &mut spenders));
                coin_writes(coins, outpoint_deletes, utxo_deletes)
            })
        } else {
            sort_index_keys(&mut history, &mut txid_index, &mut spenders);
            coin_writes(coins, outpoint_deletes, utxo_deletes)
        };
        Sorted {
            index: IndexWrites {
                txid_index,
                history,
                spenders,
            },
            coins: CoinWrites {
                small,
                txids_base,
                txids,
                outpoints,
            },
            utxos,
        }
    }
}

/// A window's writes, each family in key order.
struct Sorted {
    index: IndexWrites,
    coins: CoinWrites,
    /// The `utxos` writes.
    utxos: Vec<UtxoWrite>,
}

/// The families keyed by scripts and txids.
struct IndexWrites {
    txid_index: Vec<[u8; TXID_PREFIX_LEN + TXNUM_LEN]>,
    history: Vec<[u8; HISTORY_KEY_LEN]>,
    spenders: Vec<([u8; SPENDER_KEY_LEN], [u8; TXNUM_LEN])>,
}

impl IndexWrites {
    fn write(self, sink: &mut impl Sink) -> Result<()> {
        let IndexWrites {
            txid_index,
            history,
            spenders,
        } = self;
        for k in &txid_index {
            sink.put(cf::TXID_INDEX, k, &[])?;
        }
        drop(txid_index);
        // One key per script (and per HISTORY_GROUP_MAX entries): the history of this window.
        let mut group = Vec::with_capacity(keys::HISTORY_GROUP_MAX * 3);
        let mut i = 0;
        while i < history.len() {
            let key = &history[i];
            let hashx = &key[..HASHX_LEN];
            let mut prev = keys::txnum_from(&key[HASHX_LEN..]);
            group.clear();
            i += 1;
            let mut entries = 1;
            while i < history.len()
                && &history[i][..HASHX_LEN] == hashx
                && entries < keys::HISTORY_GROUP_MAX
            {
                let txnum = keys::txnum_from(&history[i][HASHX_LEN..]);
                keys::encode_history_next(&mut group, prev, txnum);
                prev = txnum;
                entries += 1;
                i += 1;
            }
            sink.put(cf::HISTORY, key, &group)?;
        }
        drop(history);
        for (k, v) in &spenders {
            sink.put(cf::SPENDERS, k, v)?;
        }
        Ok(())
    }
}

/// The families of blocks and outputs by outpoint.
struct CoinWrites {
    small: Vec<SmallWrite>,
    txids_base: u64,
    txids: Vec<Txid>,
    outpoints: Vec<OutpointWrite>,
}

impl CoinWrites {
    fn write(self, sink: &mut impl Sink) -> Result<()> {
        let CoinWrites {
            small,
            txids_base,
            txids,
            outpoints,
        } = self;
        // Per family in key order, the last write of a key winning (an undo record may be
        // put and deleted again within one window when it is longer than `REORG_LIMIT`).
        let mut by_key: Vec<KeyedSmallWrite> = Vec::new();
        for write in small {
            match write {
                SmallWrite::Put(family, key, value) => by_key.push((family, key, Some(value))),
                SmallWrite::Delete(family, key) => by_key.push((family, key, None)),
            }
        }
        // Stable: equal keys keep their order, and the last of them is kept.
        by_key.sort_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
        for (i, (family, key, value)) in by_key.iter().enumerate() {
            if by_key
                .get(i + 1)
                .is_some_and(|next| next.0 == *family && next.1 == *key)
            {
                continue;
            }
            match value {
                Some(v) => sink.put(family, key, v)?,
                None => sink.delete(family, key)?,
            }
        }
        drop(by_key);
        let mut chunk_value = Vec::with_capacity(keys::TXIDS_PER_CHUNK as usize * 32);
        for (i, chunk) in txids.chunks(keys::TXIDS_PER_CHUNK as usize).enumerate() {
            chunk_value.clear();
            for txid in chunk {
                chunk_value.extend_from_slice(&txid.0);
            }
            let first = txids_base + i as u64 * keys::TXIDS_PER_CHUNK;
            sink.put(cf::TXIDS, &keys::txids_chunk_key(first), &chunk_value)?;
        }
        drop(txids);
        for (k, v) in &outpoints {
            match v {
                Some(v) => sink.put(cf::OUTPOINTS, k, v)?,
                None => sink.delete(cf::OUTPOINTS, k)?,
            }
        }
        Ok(())
    }
}

/// Writes the `utxos` family's writes.
fn write_utxos(utxos: Vec<UtxoWrite>, sink: &mut impl Sink) -> Result<()> {
    for (k, v) in &utxos {
        match v {
            Some(v) => sink.put(cf::UTXOS, k, v)?,
            None => sink.delete(cf::UTXOS, k)?,
        }
    }
    Ok(())
}

/// A small write with its family and key first, to sort by.
type KeyedSmallWrite = (&'static str, [u8; 4], Option<Vec<u8>>);
type OutpointWrite = ([u8; OUTPOINT_KEY_LEN], Option<[u8; 19]>);
type UtxoWrite = ([u8; UTXO_KEY_LEN], Option<[u8; 8]>);

/// Sorts the writes of the families keyed by scripts and txids.
fn sort_index_keys(
    history: &mut [[u8; HISTORY_KEY_LEN]],
    txid_index: &mut [[u8; TXID_PREFIX_LEN + TXNUM_LEN]],
    spenders: &mut [([u8; SPENDER_KEY_LEN], [u8; TXNUM_LEN])],
) {
    // Big-endian keys: integer order is byte order, and far cheaper to compare than bytes
    // (a comparison of byte arrays is a `memcmp` call).
    radix_sort_by_key(history, |k| u128::from_be_bytes(*k));
    radix_sort_by_key(txid_index, sort_key);
    radix_sort_by_key(spenders, |(k, _)| sort_key(k));
}

/// Bits of the key that pick a bucket in [`radix_sort_by_key`]'s one distribution pass.
const RADIX_BITS: u32 = 16;

/// Sorts `v` by an integer key (ties in any order): one pass distributes the entries into
/// 2^16 buckets by the key's 16 highest bits that differ between entries, then each bucket,
/// a few entries that fit in the cache, is sorted on its own. Two to three sequential
/// passes over the data instead of a comparison sort's twenty-odd partitioning passes
/// over a window's hundreds of thousands of entries; it takes a second buffer as large as
/// `v` for the moment of the distribution. The keys need not be uniform: the bucket bits
/// start at the highest bit in which any two keys differ.
fn radix_sort_by_key<T: Copy, K: Fn(&T) -> u128>(v: &mut [T], key: K) {
    radix_sort_by_keys(v, &key, &key);
}

/// [`radix_sort_by_key`] for keys longer than 128 bits: `head`, an integer of the key's
/// first 16 bytes, picks the buckets; `full`, the whole key, orders each bucket.
fn radix_sort_by_keys<T: Copy, H: Fn(&T) -> u128, F: Fn(&T) -> K, K: Ord>(
    v: &mut [T],
    head: H,
    full: F,
) {
    const MIN_LEN: usize = 1 << 12;
    if v.len() < MIN_LEN {
        v.sort_unstable_by_key(&full);
        return;
    }
    let key = head;
    let first = key(&v[0]);
    let differing = v.iter().fold(0u128, |acc, e| acc | (key(e) ^ first));
    if differing == 0 {
        v.sort_unstable_by_key(&full); // all heads equal
        return;
    }
    let top_bit = 127 - differing.leading_zeros(); // highest bit in which keys differ
    let shift = (top_bit + 1).saturating_sub(RADIX_BITS);
    let mask = (1u128 << RADIX_BITS) - 1;
    let bucket = |e: &T| ((key(e) >> shift) & mask) as usize;
    let mut starts = vec![0usize; (1 << RADIX_BITS) + 1];
    for e in v.iter() {
        starts[bucket(e) + 1] += 1;
    }
    for i in 1..starts.len() {
        starts[i] += starts[i - 1];
    }
    let mut next = starts.clone();
    let source = v.to_vec();
    for e in &source {
        let b = bucket(e);
        v[next[b]] = *e;
        next[b] += 1;
    }
    drop(source);
    for w in starts.windows(2) {
        let bucket = &mut v[w[0]..w[1]];
        if bucket.len() > 1 {
            bucket.sort_unstable_by_key(&full);
        }
    }
}

/// An integer whose order is the byte order of keys of `N` ≤ 16 bytes.
fn sort_key<const N: usize>(key: &[u8; N]) -> u128 {
    const { assert!(N <= 16) };
    let mut b = [0u8; 16];
    b[..N].copy_from_slice(key);
    u128::from_be_bytes(b)
}

/// [`sort_key`] for `utxos` keys (20 bytes): the first 16 bytes, then the last 4.
fn utxo_sort_key(key: &[u8; UTXO_KEY_LEN]) -> (u128, u32) {
    let (head, tail) = key.split_at(16);
    (
        u128::from_be_bytes(head.try_into().expect("16 bytes")),
        u32::from_be_bytes(tail.try_into().expect("4 bytes")),
    )
}

/// The `outpoints` and `utxos` writes (puts for `coins`, deletes for spent flushed outputs),
/// each in key order.
fn coin_writes(
    coins: &FastMap<OutKey, CoinInfo>,
    outpoint_deletes: Vec<[u8; OUTPOINT_KEY_LEN]>,
    utxo_deletes: Vec<[u8; UTXO_KEY_LEN]>,
) -> (Vec<OutpointWrite>, Vec<UtxoWrite>) {
    let mut outpoints = Vec::with_capacity(coins.len() + outpoint_deletes.len());
    let mut utxos = Vec::with_capacity(coins.len() + utxo_deletes.len());
    for (k, c) in coins.iter() {
        outpoints.push((
            keys::outpoint_key(&k.txid.0[..TXID_PREFIX_LEN], k.vout, c.txnum),
            Some(keys::outpoint_value(&c.hashx, c.value)),
        ));
        utxos.push((
            keys::utxo_key(&c.hashx, c.txnum, k.vout),
            Some(c.value.to_le_bytes()),
        ));
    }
    outpoints.extend(outpoint_deletes.into_iter().map(|k| (k, None)));
    utxos.extend(utxo_deletes.into_iter().map(|k| (k, None)));
    // Keys are unique within one flush window (an output is created or spent once).
    radix_sort_by_key(&mut outpoints, |e| sort_key(&e.0));
    radix_sort_by_keys(
        &mut utxos,
        |e| utxo_sort_key(&e.0).0,
        |e| utxo_sort_key(&e.0),
    );
    (outpoints, utxos)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A xorshift generator: deterministic test keys.
    fn xorshift(mut seed: u64) -> impl FnMut() -> u64 {
        move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        }
    }

    /// Keys sorted by their integer sort keys are in byte order, as RocksDB sorts them.
    #[test]
    fn sort_keys_follow_byte_order() {
        let mut next = xorshift(0x2545_f491_4f6c_dd1d);
        // Few distinct values, so keys share prefixes and differ late.
        let mut byte = || (next() % 3) as u8 * 0x7f;
        let mut outpoints: Vec<[u8; OUTPOINT_KEY_LEN]> =
            (0..500).map(|_| std::array::from_fn(|_| byte())).collect();
        let mut utxos: Vec<[u8; UTXO_KEY_LEN]> =
            (0..500).map(|_| std::array::from_fn(|_| byte())).collect();
        let mut want = outpoints.clone();
        want.sort_unstable();
        outpoints.sort_unstable_by_key(sort_key);
        assert_eq!(outpoints, want);
        let mut want = utxos.clone();
        want.sort_unstable();
        utxos.sort_unstable_by_key(utxo_sort_key);
        assert_eq!(utxos, want);
    }

    /// The radix sort orders as a comparison sort does: random keys, keys that share their
    /// high bytes (as tx numbers do), equal keys, and lengths around its threshold.
    #[test]
    fn radix_sort_orders_like_a_comparison_sort() {
        let mut next = xorshift(0x9e37_79b9_7f4a_7c15);
        for len in [0, 1, 4095, 4096, 100_000] {
            let random: Vec<u128> = (0..len)
                .map(|_| ((next() as u128) << 64) | next() as u128)
                .collect();
            let narrow: Vec<u128> = (0..len).map(|_| (next() % 5000) as u128).collect();
            let equal: Vec<u128> = vec![7; len];
            for mut keys in [random, narrow, equal] {
                let mut want = keys.clone();
                want.sort_unstable();
                radix_sort_by_key(&mut keys, |k| *k);
                assert_eq!(keys, want);
            }
        }
    }

    /// With a head key and a full key, buckets are ordered by the full key: keys whose
    /// heads are equal or few differ only in their tails.
    #[test]
    fn radix_sort_by_head_orders_by_the_full_key() {
        let mut next = xorshift(0x1234_5678_9abc_def1);
        for len in [10, 5000, 100_000] {
            for heads in [1, 7, 1 << 20] {
                let mut keys: Vec<(u128, u32)> = (0..len)
                    .map(|_| ((next() % heads) as u128, next() as u32))
                    .collect();
                let mut want = keys.clone();
                want.sort_unstable();
                radix_sort_by_keys(&mut keys, |k| k.0, |k| *k);
                assert_eq!(keys, want);
            }
        }
    }
}
