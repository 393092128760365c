//! Comparison of an index with a [`Ledger`]: every script's history, UTXOs and balance,
//! every transaction's position and every spender.

use crate::chaingen::Ledger;
use anyhow::{Result, ensure};
use electrumx_core::ChainIndex;
use std::collections::BTreeSet;

/// Checks that `index` answers exactly what `ledger` says, at tip height `height`.
pub fn assert_index_matches_ledger(
    index: &dyn ChainIndex,
    ledger: &Ledger,
    height: u32,
) -> Result<()> {
    let tip = index.tip().map(|t| t.0);
    ensure!(tip == Some(height), "index tip {tip:?}, expected {height}");
    for (sh, hist) in &ledger.history {
        let got: Vec<_> = index
            .history(sh, 0, usize::MAX)?
            .into_iter()
            .map(|h| (h.txid, h.height))
            .collect();
        ensure!(
            &got == hist,
            "history of {sh:?}: index {} entries, ledger {}",
            got.len(),
            hist.len()
        );
        let want_utxos: BTreeSet<_> = ledger
            .utxos
            .iter()
            .filter(|(_, (s, _, _))| s == sh)
            .map(|((t, v), (_, value, h))| (*t, *v, *value, *h))
            .collect();
        let got_utxos: BTreeSet<_> = index
            .utxos(sh, usize::MAX)?
            .into_iter()
            .map(|u| (u.txid, u.vout, u.value, u.height))
            .collect();
        ensure!(got_utxos == want_utxos, "utxos of {sh:?} differ");
        let want_balance: u64 = want_utxos.iter().map(|u| u.2).sum();
        ensure!(index.balance(sh)? == want_balance, "balance of {sh:?}");
    }
    for (txid, pos) in &ledger.positions {
        ensure!(index.tx_position(txid)? == Some(*pos), "position of {txid}");
    }
    for ((txid, vout), (spender, h)) in &ledger.spenders {
        let got = index.spender(txid, *vout)?.map(|s| (s.txid, s.height));
        ensure!(got == Some((*spender, *h)), "spender of {txid}:{vout}");
    }
    for (txid, vout) in ledger.utxos.keys() {
        ensure!(
            index.spender(txid, *vout)?.is_none(),
            "unspent {txid}:{vout} has a spender"
        );
    }
    Ok(())
}
