//! A script's status (§5 of the protocol): the SHA-256 of its `txid:height:` lines,
//! confirmed first, then the mempool's. Short histories are hashed from the history cache;
//! long ones keep their hash's midstate, so a new block costs only its new entries.

use super::{index_err, push_int};
use crate::cache::Midstate;
use crate::protocol::jsonrpc::RpcError;
use crate::state::ServerState;
use bitcoin::hashes::{Hash, HashEngine, sha256};
use electrumx_core::{ChainIndex, Hash32, HashX, HistoryItem, MempoolEntry, ScriptHash, Txid};
use std::ops::ControlFlow;
use std::sync::Arc;

/// Longest history a status computation collects on its way to store it in the cache (a
/// subscription is usually followed by `get_history` of the same script).
const STATUS_CACHE_MAX: usize = 10_000;

/// A script's status (§5 of the protocol): `None` without history.
pub fn script_status(state: &ServerState, sh: &ScriptHash) -> Result<Option<String>, RpcError> {
    script_status_from(state, sh, state.script_cache.get(&sh.hashx())).map(|(s, _)| s)
}

/// What computing a status over `entries` confirmed entries costs the session that asked
/// (ElectrumX's: a tenth, and 0.00002 a byte of the 68-byte lines hashed), on top of the
/// method's price: a subscription to a long history pays for its length.
pub(super) fn status_cost(entries: usize) -> f64 {
    0.1 + entries as f64 * 0.00136
}

/// [`script_status`] given the cache's answer (`cached`) already looked up, with the number
/// of confirmed entries hashed.
pub(super) fn script_status_from(
    state: &ServerState,
    sh: &ScriptHash,
    cached: Option<Arc<Vec<HistoryItem>>>,
) -> Result<(Option<String>, usize), RpcError> {
    let hashx = sh.hashx();
    if let Some(cached) = cached {
        return Ok((status_of(state, &hashx, &cached), cached.len()));
    }
    // A long history's status goes on from where it was last hashed: only the entries
    // confirmed since are read (their txids resolved), not the whole history again.
    let reorgs = state.status_midstates.reorgs();
    if let Some(mid) = state.status_midstates.get(&hashx) {
        // From the last hashed entry's block on (a seek), its entries there already hashed.
        let new = state
            .index
            .history_from_height(sh, mid.last_height, usize::MAX)
            .map_err(index_err)?;
        let mut status = StatusHasher {
            engine: mid.engine,
            entries: mid.confirmed,
            line: String::new(),
            last_height: mid.last_height,
            at_last_height: mid.at_last_height,
        };
        for item in new.iter().skip(mid.at_last_height) {
            status.add(&item.txid, item.height as i64);
        }
        state
            .status_midstates
            .insert(hashx, status.midstate(), reorgs);
        let entries = status.entries;
        return Ok((status.finish(state, &hashx), entries));
    }
    let generation = state.script_cache.generation();
    let mut status = StatusHasher::default();
    let mut kept = Some(Vec::new());
    state
        .index
        .visit_history(sh, &mut |item| {
            status.add(&item.txid, item.height as i64);
            if let Some(k) = kept.as_mut() {
                if k.len() < STATUS_CACHE_MAX {
                    k.push(item);
                } else {
                    kept = None;
                }
            }
            ControlFlow::Continue(())
        })
        .map_err(index_err)?;
    match kept {
        Some(mut k) => {
            k.shrink_to_fit();
            state.script_cache.insert(hashx, Arc::new(k), generation);
        }
        // Too long for the history cache: keep where its hashing stands instead.
        None => state
            .status_midstates
            .insert(hashx, status.midstate(), reorgs),
    }
    let entries = status.entries;
    Ok((status.finish(state, &hashx), entries))
}

/// The status of a script whose confirmed history is `confirmed`.
pub(super) fn status_of(
    state: &ServerState,
    hashx: &HashX,
    confirmed: &[HistoryItem],
) -> Option<String> {
    let mut status = StatusHasher::default();
    for h in confirmed {
        status.add(&h.txid, h.height as i64);
    }
    status.finish(state, hashx)
}

/// Hashes `txid:height:` lines, the confirmed ones first, then the mempool's.
#[derive(Default)]
struct StatusHasher {
    engine: sha256::HashEngine,
    entries: usize,
    line: String,
    /// Height of the last confirmed entry added, and how many were added at it.
    last_height: u32,
    at_last_height: usize,
}

impl StatusHasher {
    fn add(&mut self, txid: &Hash32, height: i64) {
        if height >= 0 {
            let h = height as u32;
            if h == self.last_height {
                self.at_last_height += 1;
            } else {
                self.last_height = h;
                self.at_last_height = 1;
            }
        }
        self.line.clear();
        self.line.push_str(&txid.to_display_hex());
        self.line.push(':');
        push_int(&mut self.line, height);
        self.line.push(':');
        self.engine.input(self.line.as_bytes());
        self.entries += 1;
    }

    /// Where the hashing of the confirmed entries added so far stands.
    fn midstate(&self) -> Midstate {
        Midstate {
            engine: self.engine.clone(),
            confirmed: self.entries,
            last_height: self.last_height,
            at_last_height: self.at_last_height,
        }
    }

    /// Adds the mempool's entries of `hashx` and returns the status (`None`: no history).
    fn finish(mut self, state: &ServerState, hashx: &HashX) -> Option<String> {
        for e in mempool_history(state, hashx) {
            self.add(&e.txid, e.electrum_height());
        }
        (self.entries > 0)
            .then(|| const_hex::encode(sha256::Hash::from_engine(self.engine).to_byte_array()))
    }
}

/// A script's mempool entries in the protocol's order, as answers and statuses show them.
///
/// Between a block's commit and the next mempool refresh, the mirror may still list
/// transactions the block confirmed; those are left out here (a transaction is never
/// both confirmed and pending in one answer), so an answer given in that window is already
/// the one the refresh will confirm. The check reads the index only in that window.
pub(super) fn mempool_history(state: &ServerState, hashx: &HashX) -> Vec<MempoolEntry> {
    let mut entries = state.mempool.history(hashx);
    if !entries.is_empty() && mirror_behind(state) {
        entries.retain(|e| !confirmed(state, &e.txid));
    }
    entries
}

/// A script's mempool transactions that the index has confirmed since the mirror's last
/// refresh (empty when the mirror is at the index's tip, and then without reading the
/// index): what answers leave out of the mempool's part.
pub(super) fn confirmed_meanwhile(state: &ServerState, hashx: &HashX) -> Vec<Txid> {
    if !mirror_behind(state) {
        return Vec::new();
    }
    let history = state.mempool.history(hashx).into_iter();
    history
        .map(|e| e.txid)
        .filter(|t| confirmed(state, t))
        .collect()
}

/// Whether a block was indexed that the mempool mirror has not been refreshed after.
fn mirror_behind(state: &ServerState) -> bool {
    state.mempool.synced_tip() != state.index.tip()
}

/// Whether the index holds `txid`.
fn confirmed(state: &ServerState, txid: &Txid) -> bool {
    matches!(state.index.tx_position(txid), Ok(Some(_)))
}
