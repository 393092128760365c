//! A mirror of the node's mempool: which unconfirmed transactions touch which scripts and
//! outpoints, their fees and sizes, and the fee histogram.
//!
//! [`Mempool::refresh`] polls the node: it fetches new transactions in batches, resolves
//! their prevouts from the index or from other mempool transactions, drops what left the
//! node's mempool, and reports what it touched. It refreshes only while the index is at the
//! node's tip, so mempool data is never combined with a stale chain state; the mirror
//! remembers the tip it was reconciled at ([`Mempool::synced_tip`]), so callers can tell
//! when the index has moved past it.
//!
//! A transaction's Electrum height (0, or -1 when it spends another mempool transaction)
//! is kept current: when a parent leaves the mempool (mined) or comes back to it (a
//! reorg), its children's heights change and their scripts are reported as touched.

use crate::coin::CoinParams;
use crate::daemon::Daemon;
use crate::error::{IndexError, Result};
use crate::hash::{BlockHash, HashX, Txid};
use crate::index::ChainIndex;
use crate::index::processor::is_unspendable;
use crate::parse::{InputRef, OutputRef, parse_transaction};
use parking_lot::RwLock;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

/// One mempool transaction as a script's history shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MempoolEntry {
    /// Transaction id.
    pub txid: Txid,
    /// Fee in satoshis.
    pub fee: u64,
    /// Virtual size in bytes.
    pub vsize: u32,
    /// True if it spends an output of another mempool transaction (Electrum height -1).
    pub has_unconfirmed_inputs: bool,
}

impl MempoolEntry {
    /// The Electrum protocol's pseudo-height: 0, or -1 with unconfirmed inputs.
    pub fn electrum_height(&self) -> i64 {
        if self.has_unconfirmed_inputs { -1 } else { 0 }
    }
}

/// An unspent output of a mempool transaction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MempoolUtxo {
    /// Funding transaction.
    pub txid: Txid,
    /// Output index.
    pub vout: u32,
    /// Value.
    pub value: u64,
}

struct TxData {
    entry: MempoolEntry,
    /// Each input's outpoint and the owner/value of what it spends.
    inputs: Vec<((Txid, u32), HashX, u64)>,
    /// Each output's owner and value (`None` for unspendable).
    outputs: Vec<Option<(HashX, u64)>>,
}

impl TxData {
    fn hashxs(&self) -> impl Iterator<Item = HashX> + '_ {
        self.inputs
            .iter()
            .map(|i| i.1)
            .chain(self.outputs.iter().flatten().map(|o| o.0))
    }
}

#[derive(Default)]
struct State {
    txs: HashMap<Txid, TxData>,
    by_hashx: HashMap<HashX, HashSet<Txid>>,
    spent: HashMap<(Txid, u32), Txid>,
    histogram: Vec<(f64, u64)>,
    /// Most recently added txids, newest first.
    recent: std::collections::VecDeque<Txid>,
    /// The index tip (height, hash) the mirror was last reconciled at.
    synced: Option<(u32, BlockHash)>,
}

/// How many recent additions are remembered for [`Mempool::recent`].
const RECENT: usize = 50;

/// What a refresh changed.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct MempoolUpdate {
    /// Scripts whose mempool history changed.
    pub touched: HashSet<HashX>,
    /// Outpoints whose mempool state changed: spent or released by mempool transactions,
    /// or outputs of transactions that entered or left the mempool.
    pub outpoints: HashSet<(Txid, u32)>,
    /// Transactions added.
    pub added: usize,
    /// Transactions removed.
    pub removed: usize,
    /// The index tip (height, hash) the mirror now matches: the node's best block when
    /// the refresh ended.
    pub tip: Option<(u32, BlockHash)>,
}

/// Summary numbers of the mempool.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
#[non_exhaustive]
pub struct MempoolInfo {
    /// Transactions.
    pub count: usize,
    /// Sum of virtual sizes.
    pub vsize: u64,
    /// Sum of fees.
    pub fees: u64,
}

/// The mempool mirror (see the module docs).
pub struct Mempool {
    state: RwLock<State>,
    daemon: Arc<dyn Daemon>,
    index: Arc<dyn ChainIndex>,
    coin: CoinParams,
}

/// Transactions fetched per batch request.
const FETCH_BATCH: usize = 500;

impl Mempool {
    /// An empty mirror for `coin` (whose rules tell which outputs are not indexed).
    pub fn new(daemon: Arc<dyn Daemon>, index: Arc<dyn ChainIndex>, coin: CoinParams) -> Self {
        Mempool {
            state: RwLock::new(State::default()),
            daemon,
            index,
            coin,
        }
    }

    /// Polls the node once. Returns `None` (and changes nothing) when the index is not at
    /// the node's tip.
    pub async fn refresh(&self) -> Result<Option<MempoolUpdate>> {
        let best = self.daemon.best_block_hash().await?;
        let Some(tip) = self.index.tip().filter(|t| t.1 == best) else {
            return Ok(None);
        };
        let txids = self.daemon.mempool_txids().await?;
        let current: HashSet<Txid> = txids.iter().copied().collect();
        let mut update = MempoolUpdate::default();
        let new: Vec<Txid> = {
            let st = self.state.read();
            txids
                .iter()
                .filter(|t| !st.txs.contains_key(t))
                .copied()
                .collect()
        };
        let mut fetched: Vec<(Txid, Vec<u8>)> = Vec::with_capacity(new.len());
        for chunk in new.chunks(FETCH_BATCH) {
            let raws = self.daemon.raw_transactions(chunk).await?;
            fetched.extend(
                chunk
                    .iter()
                    .zip(raws)
                    .filter_map(|(t, r)| r.map(|r| (*t, r))),
            );
        }
        // The chain may have moved while we fetched: then try again next time. The node's
        // own tip is asked again too: a block it accepted after `best` was read has already
        // taken its transactions out of the mempool list, and a mirror without them beside
        // an index without that block would show them nowhere (a status a wallet would see
        // change back a moment later).
        if self.index.tip().map(|t| t.1) != Some(best)
            || self.daemon.best_block_hash().await? != best
        {
            return Ok(None);
        }
        // Parse the new transactions and read the confirmed outputs they spend from the
        // index on the blocking pool, without the mirror's lock: only the quick in-memory
        // update below holds it.
        let (index, coin) = (self.index.clone(), self.coin.clone());
        let prepared = tokio::task::spawn_blocking(move || prepare(&*index, &coin, fetched))
            .await
            .map_err(|e| IndexError::join("mempool refresh", e))??;
        let mut st = self.state.write();
        let gone: Vec<Txid> = st
            .txs
            .keys()
            .filter(|t| !current.contains(t))
            .copied()
            .collect();
        // Transactions whose outputs may be spent by transactions that stay: their
        // children's heights (0 or -1) may change.
        let mut parents: Vec<(Txid, usize)> = Vec::new();
        for txid in gone {
            if let Some(n) = st.txs.get(&txid).map(|d| d.outputs.len()) {
                parents.push((txid, n));
            }
            remove_tx(&mut st, &txid, &mut update);
        }
        let new_txids: Vec<Txid> = prepared.txs.iter().map(|p| p.txid).collect();
        add_txs(&mut st, prepared, &mut update);
        for txid in &new_txids {
            if let Some(n) = st.txs.get(txid).map(|d| d.outputs.len()) {
                parents.push((*txid, n));
            }
        }
        refresh_heights(&mut st, &parents, &mut update);
        st.histogram = compute_histogram(st.txs.values().map(|t| &t.entry));
        st.synced = Some(tip);
        update.tip = Some(tip);
        Ok(Some(update))
    }

    /// The index tip (height, hash) the mirror was last reconciled at; `None` before the
    /// first refresh. While the index is above it, transactions confirmed since may still
    /// be listed here (answers drop those, see the server's history code).
    pub fn synced_tip(&self) -> Option<(u32, BlockHash)> {
        self.state.read().synced
    }

    /// Mempool transactions touching a script, in the protocol's order (height 0 before
    /// -1, then by txid as displayed).
    pub fn history(&self, hashx: &HashX) -> Vec<MempoolEntry> {
        let st = self.state.read();
        let mut out: Vec<MempoolEntry> = st
            .by_hashx
            .get(hashx)
            .into_iter()
            .flatten()
            .filter_map(|t| st.txs.get(t).map(|d| d.entry))
            .collect();
        out.sort_by_cached_key(|e| (e.has_unconfirmed_inputs, e.txid.to_display_hex()));
        out
    }

    /// Net change of a script's balance from mempool transactions (may be negative).
    pub fn balance_delta(&self, hashx: &HashX) -> i64 {
        self.balance_delta_without(hashx, &[])
    }

    /// [`Mempool::balance_delta`] leaving out the transactions `excluded` (those a block
    /// confirmed before the mirror's next refresh dropped them).
    pub fn balance_delta_without(&self, hashx: &HashX, excluded: &[Txid]) -> i64 {
        let st = self.state.read();
        let mut delta: i64 = 0;
        for txid in st.by_hashx.get(hashx).into_iter().flatten() {
            if excluded.contains(txid) {
                continue;
            }
            let Some(d) = st.txs.get(txid) else { continue };
            for (h, v) in d.outputs.iter().flatten() {
                if h == hashx {
                    delta += *v as i64;
                }
            }
            for (_, h, v) in &d.inputs {
                if h == hashx {
                    delta -= *v as i64;
                }
            }
        }
        delta
    }

    /// Unspent outputs of mempool transactions paying a script.
    pub fn utxos(&self, hashx: &HashX) -> Vec<MempoolUtxo> {
        let st = self.state.read();
        let mut out = Vec::new();
        for txid in st.by_hashx.get(hashx).into_iter().flatten() {
            let Some(d) = st.txs.get(txid) else { continue };
            for (vout, o) in d.outputs.iter().enumerate() {
                if let Some((h, v)) = o
                    && h == hashx
                    && !st.spent.contains_key(&(*txid, vout as u32))
                {
                    out.push(MempoolUtxo {
                        txid: *txid,
                        vout: vout as u32,
                        value: *v,
                    });
                }
            }
        }
        out.sort_by_key(|u| (u.txid, u.vout));
        out
    }

    /// The mempool transaction spending an outpoint, if any.
    pub fn spender(&self, txid: &Txid, vout: u32) -> Option<Txid> {
        self.state.read().spent.get(&(*txid, vout)).copied()
    }

    /// Whether a mempool transaction has an output at `vout` (spendable or not indexed).
    pub fn has_output(&self, txid: &Txid, vout: u32) -> bool {
        self.state
            .read()
            .txs
            .get(txid)
            .is_some_and(|d| (vout as usize) < d.outputs.len())
    }

    /// A mempool transaction's entry.
    pub fn get(&self, txid: &Txid) -> Option<MempoolEntry> {
        self.state.read().txs.get(txid).map(|d| d.entry)
    }

    /// The fee histogram: `(fee rate in sat/vB, vsize)` pairs from the highest rate down,
    /// binned as ElectrumX does (the first bin 30,000 vbytes, each next one 10 % larger).
    pub fn fee_histogram(&self) -> Vec<(f64, u64)> {
        self.state.read().histogram.clone()
    }

    /// Up to `n` transactions most recently added to the mirror and still in it, newest first.
    pub fn recent(&self, n: usize) -> Vec<MempoolEntry> {
        let st = self.state.read();
        st.recent
            .iter()
            .filter_map(|t| st.txs.get(t).map(|d| d.entry))
            .take(n)
            .collect()
    }

    /// Count, total virtual size and fees.
    pub fn info(&self) -> MempoolInfo {
        let st = self.state.read();
        MempoolInfo {
            count: st.txs.len(),
            vsize: st.txs.values().map(|d| d.entry.vsize as u64).sum(),
            fees: st.txs.values().map(|d| d.entry.fee).sum(),
        }
    }
}

/// A new transaction parsed, its outputs' owners computed.
struct Parsed {
    txid: Txid,
    vsize: usize,
    inputs: Vec<InputRef>,
    outputs: Vec<Option<(HashX, u64)>>,
}

/// New transactions ready to enter the mirror: parsed, and the confirmed outputs they
/// spend read from the index.
struct Prepared {
    txs: Vec<Parsed>,
    /// Owner and value of each spent outpoint found unspent in the index (`None`: not
    /// there, e.g. a mempool parent's, or spent).
    confirmed: HashMap<(Txid, u32), Option<(HashX, u64)>>,
}

/// Parses `fetched` and looks up, in the index, every outpoint they spend that is not an
/// output of another of them (outputs of the mirror's transactions are simply not found).
fn prepare(
    index: &dyn ChainIndex,
    coin: &CoinParams,
    fetched: Vec<(Txid, Vec<u8>)>,
) -> Result<Prepared> {
    let fetched_ids: HashSet<Txid> = fetched.iter().map(|f| f.0).collect();
    let mut txs: Vec<Parsed> = Vec::with_capacity(fetched.len());
    let mut confirmed = HashMap::new();
    let (mut ins, mut outs): (Vec<InputRef>, Vec<OutputRef>) = (Vec::new(), Vec::new());
    for (txid, raw) in fetched {
        ins.clear();
        outs.clear();
        let Ok(tx) = parse_transaction(&raw, &mut ins, &mut outs) else {
            tracing::warn!(%txid, "mempool transaction does not parse; ignored");
            continue;
        };
        if tx.txid != txid {
            tracing::warn!(%txid, "node returned a different transaction; ignored");
            continue;
        }
        let outputs = outs
            .iter()
            .map(|o| {
                let script = &raw[o.script.clone()];
                (!is_unspendable(coin, script)).then(|| (HashX::of_script(script), o.value))
            })
            .collect();
        for i in &ins {
            let op = (i.prev_txid, i.prev_vout);
            if !fetched_ids.contains(&op.0) && !confirmed.contains_key(&op) {
                confirmed.insert(op, index.unspent_output(&op.0, op.1)?);
            }
        }
        txs.push(Parsed {
            txid,
            vsize: tx.vsize(),
            inputs: ins.clone(),
            outputs,
        });
    }
    Ok(Prepared { txs, confirmed })
}

/// Adds prepared transactions to the mirror, parents before children. A transaction
/// whose inputs cannot all be resolved (a parent not in the mirror, an outpoint not read)
/// is left out and fetched again at the next refresh.
fn add_txs(st: &mut State, prepared: Prepared, update: &mut MempoolUpdate) {
    let Prepared {
        txs: mut pending,
        confirmed,
    } = prepared;
    loop {
        let before = pending.len();
        let mut still = Vec::new();
        for p in pending {
            let mut inputs = Vec::with_capacity(p.inputs.len());
            let mut unconfirmed = false;
            let mut ok = true;
            for i in &p.inputs {
                let op = (i.prev_txid, i.prev_vout);
                let owner = if let Some(parent) = st.txs.get(&i.prev_txid) {
                    unconfirmed = true;
                    parent.outputs.get(i.prev_vout as usize).copied().flatten()
                } else {
                    confirmed.get(&op).copied().flatten()
                };
                match owner {
                    Some((h, v)) => inputs.push((op, h, v)),
                    None => {
                        ok = false;
                        break;
                    }
                }
            }
            if !ok {
                still.push(p);
                continue;
            }
            let fee_in: u64 = inputs.iter().map(|i| i.2).sum();
            let fee_out: u64 = p.outputs.iter().flatten().map(|o| o.1).sum();
            let entry = MempoolEntry {
                txid: p.txid,
                fee: fee_in.saturating_sub(fee_out),
                vsize: p.vsize as u32,
                has_unconfirmed_inputs: unconfirmed,
            };
            let data = TxData {
                entry,
                inputs,
                outputs: p.outputs,
            };
            insert_tx(st, data, update);
        }
        pending = still;
        if pending.is_empty() || pending.len() == before {
            break;
        }
    }
    if !pending.is_empty() {
        tracing::debug!(
            count = pending.len(),
            "mempool transactions with unresolved inputs; retrying later"
        );
    }
}

fn insert_tx(st: &mut State, data: TxData, update: &mut MempoolUpdate) {
    let txid = data.entry.txid;
    for h in data.hashxs() {
        st.by_hashx.entry(h).or_default().insert(txid);
        update.touched.insert(h);
    }
    for (op, _, _) in &data.inputs {
        st.spent.insert(*op, txid);
        update.outpoints.insert(*op);
    }
    update
        .outpoints
        .extend((0..data.outputs.len() as u32).map(|vout| (txid, vout)));
    update.added += 1;
    st.txs.insert(txid, data);
    st.recent.push_front(txid);
    st.recent.truncate(RECENT);
}

/// Recomputes the Electrum height of every transaction spending an output of `parents`
/// (transactions just added to or removed from the mirror, with their output counts):
/// a spender of a mempool output has height -1, of a confirmed one 0. Changed ones touch
/// all their scripts.
fn refresh_heights(st: &mut State, parents: &[(Txid, usize)], update: &mut MempoolUpdate) {
    let mut children: HashSet<Txid> = HashSet::new();
    for (txid, outputs) in parents {
        for vout in 0..*outputs as u32 {
            if let Some(child) = st.spent.get(&(*txid, vout)) {
                children.insert(*child);
            }
        }
    }
    for child in children {
        let Some(data) = st.txs.get(&child) else {
            continue;
        };
        let unconfirmed = data
            .inputs
            .iter()
            .any(|(op, _, _)| st.txs.contains_key(&op.0));
        if unconfirmed == data.entry.has_unconfirmed_inputs {
            continue;
        }
        let hashxs: Vec<HashX> = data.hashxs().collect();
        update.touched.extend(hashxs);
        if let Some(data) = st.txs.get_mut(&child) {
            data.entry.has_unconfirmed_inputs = unconfirmed;
        }
    }
}

fn remove_tx(st: &mut State, txid: &Txid, update: &mut MempoolUpdate) {
    let Some(data) = st.txs.remove(txid) else {
        return;
    };
    for h in data.hashxs() {
        if let Some(set) = st.by_hashx.get_mut(&h) {
            set.remove(txid);
            if set.is_empty() {
                st.by_hashx.remove(&h);
            }
        }
        update.touched.insert(h);
    }
    for (op, _, _) in &data.inputs {
        if st.spent.get(op) == Some(txid) {
            st.spent.remove(op);
        }
        update.outpoints.insert(*op);
    }
    update
        .outpoints
        .extend((0..data.outputs.len() as u32).map(|vout| (*txid, vout)));
    update.removed += 1;
}

/// Size of the first fee histogram bin in vbytes: ElectrumX's
/// `MEMPOOL_COMPACT_HISTOGRAM_BINSIZE`, 30,000 for every coin (its `Coin` class), so wallets
/// see the same bins from either server.
pub const HISTOGRAM_BIN_SIZE: u64 = 30_000;

/// The fee histogram of mempool entries: fee rates floored to 0.1 sat/vB, then compressed.
fn compute_histogram<'a>(entries: impl Iterator<Item = &'a MempoolEntry>) -> Vec<(f64, u64)> {
    // Keyed by tenths of a sat/vB.
    let mut by_rate: std::collections::BTreeMap<u64, u64> = std::collections::BTreeMap::new();
    for e in entries.filter(|e| e.vsize > 0) {
        *by_rate
            .entry(e.fee.saturating_mul(10) / e.vsize as u64)
            .or_default() += e.vsize as u64;
    }
    let hist: Vec<(f64, u64)> = by_rate
        .into_iter()
        .rev()
        .map(|(r, size)| (r as f64 / 10.0, size))
        .collect();
    compress_histogram(&hist, HISTOGRAM_BIN_SIZE)
}

/// ElectrumX's histogram compression. `hist` holds `(fee rate, vsize)` pairs from the
/// highest rate down; bins start at `bin_size` vbytes and grow by 10 % each. A rate whose own
/// size exceeds twice the bin first closes the bin before it; what is left below the last
/// bin is dropped.
pub fn compress_histogram(hist: &[(f64, u64)], bin_size: u64) -> Vec<(f64, u64)> {
    let mut out = Vec::new();
    let mut bin = bin_size as f64;
    let mut cum: u64 = 0;
    let mut prev: Option<f64> = None;
    for &(rate, size) in hist {
        if size as f64 > 2.0 * bin
            && let Some(p) = prev
            && cum > 0
        {
            out.push((p, cum));
            cum = 0;
            bin *= 1.1;
        }
        cum += size;
        if cum as f64 > bin {
            out.push((rate, cum));
            cum = 0;
            bin *= 1.1;
        }
        prev = Some(rate);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_floors_rates_and_descends() {
        let e = |fee, vsize| MempoolEntry {
            txid: Txid::default(),
            fee,
            vsize,
            has_unconfirmed_inputs: false,
        };
        let entries: Vec<_> = (0..300).map(|i| e(1000 + i * 10, 1000)).collect();
        let h = compute_histogram(entries.iter());
        assert!(!h.is_empty());
        assert!(
            h.windows(2).all(|w| w[0].0 > w[1].0),
            "rates strictly descend"
        );
        assert!(compute_histogram(std::iter::empty()).is_empty());
    }
}
