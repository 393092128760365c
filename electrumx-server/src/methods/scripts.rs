//! The script methods, in both flavours (`blockchain.scripthash.*` up to 1.6,
//! `blockchain.scriptpubkey.*` in 1.7, whose lists come wrapped in objects): balance,
//! history, mempool, UTXOs, subscriptions. Answers come from the per-script caches when
//! they can, the index otherwise; long lists are written as JSON text directly.

use super::status::{
    confirmed_meanwhile, mempool_history, script_status_from, status_cost, status_of,
};
use super::{
    Answer, INLINE_MAX_ITEMS, Reply, ScriptArg, SessionCtx, blocking, index_err, push_int,
};
use crate::protocol::jsonrpc::{RpcError, code};
use crate::protocol::outgoing::SharedSlice;
use crate::protocol::subscriptions::ScriptMethod;
use crate::state::ServerState;
use electrumx_core::{ChainIndex, Hash32, HashX, HistoryItem, ScriptHash, Utxo};
use serde_json::json;
use std::sync::Arc;

/// A list as the flavour shows it: bare up to 1.6, `{key: list}` in 1.7.
fn wrap(s: ScriptArg, key: &str, list: String) -> Reply {
    Reply::Raw(if s.flavour == ScriptMethod::ScriptPubKey {
        format!("{{\"{key}\":{list}}}")
    } else {
        list
    })
}

/// `get_balance`: confirmed (cached) and the mempool's change.
pub async fn balance(state: &Arc<ServerState>, s: ScriptArg) -> Answer {
    let sh = s.script;
    let hashx = sh.hashx();
    let confirmed = match state.script_cache.get_balance(&hashx) {
        Some(sats) => sats,
        None => {
            let st = state.clone();
            blocking(move || {
                let generation = st.script_cache.generation();
                let sats = st.index.balance(&sh).map_err(index_err)?;
                st.script_cache.insert_balance(sh.hashx(), sats, generation);
                Ok(sats)
            })
            .await?
        }
    };
    let confirmed_meanwhile = confirmed_meanwhile(state, &hashx);
    let unconfirmed = state
        .mempool
        .balance_delta_without(&hashx, &confirmed_meanwhile);
    Ok(json!({"confirmed": confirmed, "unconfirmed": unconfirmed}).into())
}

/// `get_history`: confirmed entries, then the mempool's. A long confirmed part is sent from
/// its rendered cache entry, without a copy.
pub async fn history(state: &Arc<ServerState>, s: ScriptArg) -> Answer {
    let sh = s.script;
    let cached = state.script_cache.get(&sh.hashx());
    if let Some(h) = cached
        .as_ref()
        .filter(|h| h.len() <= INLINE_MAX_ITEMS.min(state.limits.max_history()))
    {
        return Ok(wrap(s, "history", history_list(state, &sh, h)));
    }
    let st = state.clone();
    let confirmed = match state.script_cache.get_rendered(&sh.hashx()) {
        Some(json) => json,
        None => blocking(move || confirmed_history_json(&st, &sh, cached)).await?,
    };
    // The confirmed part goes out as it is cached; the mempool's entries follow it.
    let mut w = ListWriter::after(&confirmed, 256);
    mempool_list(state, &sh.hashx(), &mut w);
    let (mut prefix, mut suffix) = ("[".to_string(), w.finish());
    if s.flavour == ScriptMethod::ScriptPubKey {
        prefix.insert_str(0, "{\"history\":");
        suffix.push('}');
    }
    Ok(Reply::Spliced {
        prefix,
        body: vec![SharedSlice::whole(confirmed)],
        suffix,
    })
}

/// `get_mempool`: the mempool's entries, with fees.
pub fn mempool(state: &ServerState, s: ScriptArg) -> Answer {
    let mut w = ListWriter::with_capacity(256);
    mempool_list(state, &s.script.hashx(), &mut w);
    Ok(wrap(s, "history", w.finish()))
}

/// `listunspent`: confirmed UTXOs the mempool does not spend, then the mempool's.
pub async fn unspent(state: &Arc<ServerState>, s: ScriptArg) -> Answer {
    let sh = s.script;
    let limit = state.limits.max_history();
    let list = match state.script_cache.get_utxos(&sh.hashx()) {
        Some(u) if u.len() <= INLINE_MAX_ITEMS => utxo_list(state, &sh, &u),
        Some(u) if u.len() > limit => return Err(history_too_large()),
        cached => {
            let st = state.clone();
            blocking(move || {
                let utxos = match cached {
                    Some(u) => u,
                    None => confirmed_utxos(&st, &sh)?,
                };
                Ok(utxo_list(&st, &sh, &utxos))
            })
            .await?
        }
    };
    Ok(wrap(s, "utxos", list))
}

/// `subscribe`: the status now, and a notification whenever it changes. Charged by the
/// entries hashed.
pub async fn subscribe(state: &Arc<ServerState>, ctx: &mut SessionCtx, s: ScriptArg) -> Answer {
    let sh = s.script;
    // A round of notifications sent while the status was computed may have left this
    // script out: then the status is computed again, from the newer view.
    let mut tries = 0;
    loop {
        let round = state.subs.round();
        let (status, entries) = match state.script_cache.get(&sh.hashx()) {
            Some(h) if h.len() <= INLINE_MAX_ITEMS => (status_of(state, &sh.hashx(), &h), h.len()),
            cached => {
                let st = state.clone();
                blocking(move || script_status_from(&st, &sh, cached)).await?
            }
        };
        ctx.pending_cost += status_cost(entries);
        tries += 1;
        // Rounds come at most a few times a second; a third try uses the next.
        let round = if tries >= 3 {
            state.subs.round()
        } else {
            round
        };
        if state
            .subs
            .subscribe_script(ctx.id, sh, status.clone(), s.flavour, round)
        {
            return Ok(json!(status).into());
        }
    }
}

/// `unsubscribe`: whether the session was subscribed.
pub fn unsubscribe(state: &ServerState, ctx: &SessionCtx, s: ScriptArg) -> Answer {
    Ok(json!(state.subs.unsubscribe_script(ctx.id, &s.script)).into())
}

fn history_too_large() -> RpcError {
    RpcError::new(code::HISTORY_TOO_LARGE, "history too large")
}

/// Writes a JSON list of `{"tx_hash": …, key: n, …}` objects without building values.
struct ListWriter {
    out: String,
    first: bool,
}

impl ListWriter {
    fn with_capacity(n: usize) -> Self {
        let mut out = String::with_capacity(n + 2);
        out.push('[');
        ListWriter { out, first: true }
    }

    /// The rest of a list whose first entries, `written` (comma-separated, no brackets),
    /// are sent separately: holds only what follows them (no opening bracket).
    fn after(written: &str, more: usize) -> Self {
        ListWriter {
            out: String::with_capacity(more + 1),
            first: written.is_empty(),
        }
    }

    /// The entries written, without the brackets.
    fn into_entries(self) -> String {
        let mut s = self.out;
        s.remove(0);
        s
    }

    fn entry(&mut self, txid: &Hash32, fields: &[(&str, i64)]) {
        if !self.first {
            self.out.push(',');
        }
        self.first = false;
        self.out.push_str("{\"tx_hash\":\"");
        let mut rev = txid.0;
        rev.reverse();
        let mut buf = [0u8; 64];
        const_hex::encode_to_slice(rev, &mut buf).expect("64 hex digits");
        self.out
            .push_str(std::str::from_utf8(&buf).expect("hex is ASCII"));
        self.out.push('"');
        for (k, v) in fields {
            self.out.push_str(",\"");
            self.out.push_str(k);
            self.out.push_str("\":");
            push_int(&mut self.out, *v);
        }
        self.out.push('}');
    }

    fn finish(mut self) -> String {
        self.out.push(']');
        self.out
    }
}

/// Appends a script's mempool entries (with fees) to a list.
fn mempool_list(state: &ServerState, hashx: &HashX, w: &mut ListWriter) {
    for e in mempool_history(state, hashx) {
        w.entry(
            &e.txid,
            &[("height", e.electrum_height()), ("fee", e.fee as i64)],
        );
    }
}

/// `get_history`'s list (brackets included) of a script whose confirmed history is
/// `confirmed`, the mempool's entries after it.
fn history_list(state: &ServerState, sh: &ScriptHash, confirmed: &[HistoryItem]) -> String {
    let mut w = ListWriter::with_capacity(confirmed.len() * 100 + 256);
    for h in confirmed {
        w.entry(&h.txid, &[("height", h.height as i64)]);
    }
    mempool_list(state, &sh.hashx(), &mut w);
    w.finish()
}

/// A script's confirmed history as `get_history` list entries (no brackets): from the
/// rendered cache, or written from `cached` (the history cache's answer, already looked up)
/// or the index, and kept if long.
fn confirmed_history_json(
    state: &ServerState,
    sh: &ScriptHash,
    cached: Option<Arc<Vec<HistoryItem>>>,
) -> Result<Arc<String>, RpcError> {
    if let Some(json) = state.script_cache.get_rendered(&sh.hashx()) {
        return Ok(json);
    }
    let generation = state.script_cache.generation();
    let confirmed = match cached {
        Some(h) if h.len() > state.limits.max_history() => return Err(history_too_large()),
        Some(h) => h,
        None => confirmed_history(state, sh)?,
    };
    let mut w = ListWriter::with_capacity(confirmed.len() * 100);
    for h in confirmed.iter() {
        w.entry(&h.txid, &[("height", h.height as i64)]);
    }
    let json = Arc::new(w.into_entries());
    state
        .script_cache
        .insert_rendered(sh.hashx(), json.clone(), confirmed.len(), generation);
    Ok(json)
}

/// A script's confirmed history from the index (then cached); "history too large" above the
/// `MAX_SEND`-derived limit.
fn confirmed_history(
    state: &ServerState,
    sh: &ScriptHash,
) -> Result<Arc<Vec<HistoryItem>>, RpcError> {
    let limit = state.limits.max_history();
    let generation = state.script_cache.generation();
    // Counted from the keys before any txid is read: a history over the limit (a script
    // with millions of transactions) is refused at the cost of a key scan (5.6M entries:
    // 52 ms → 0.5 ms).
    let history = state
        .index
        .history_within(sh, limit)
        .map_err(index_err)?
        .ok_or_else(history_too_large)?;
    let history = Arc::new(history);
    state
        .script_cache
        .insert(sh.hashx(), history.clone(), generation);
    Ok(history)
}

/// A script's confirmed UTXOs from the index (then cached); "history too large" above the
/// same limit as histories.
fn confirmed_utxos(state: &ServerState, sh: &ScriptHash) -> Result<Arc<Vec<Utxo>>, RpcError> {
    let limit = state.limits.max_history();
    let generation = state.script_cache.generation();
    let utxos = state.index.utxos(sh, limit + 1).map_err(index_err)?;
    if utxos.len() > limit {
        return Err(history_too_large());
    }
    let utxos = Arc::new(utxos);
    state
        .script_cache
        .insert_utxos(sh.hashx(), utxos.clone(), generation);
    Ok(utxos)
}

/// `listunspent`'s list: the confirmed UTXOs the mempool does not spend, then the mempool's.
fn utxo_list(state: &ServerState, sh: &ScriptHash, confirmed: &[Utxo]) -> String {
    let mut w = ListWriter::with_capacity(confirmed.len() * 128 + 256);
    for u in confirmed
        .iter()
        .filter(|u| state.mempool.spender(&u.txid, u.vout).is_none())
    {
        w.entry(
            &u.txid,
            &[
                ("tx_pos", u.vout as i64),
                ("height", u.height as i64),
                ("value", u.value as i64),
            ],
        );
    }
    let confirmed_meanwhile = confirmed_meanwhile(state, &sh.hashx());
    for u in state
        .mempool
        .utxos(&sh.hashx())
        .into_iter()
        .filter(|u| !confirmed_meanwhile.contains(&u.txid))
    {
        w.entry(
            &u.txid,
            &[
                ("tx_pos", u.vout as i64),
                ("height", 0),
                ("value", u.value as i64),
            ],
        );
    }
    w.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    #[test]
    fn list_writer_writes_json() {
        let txid = Hash32([0xab; 32]);
        let mut w = ListWriter::with_capacity(0);
        w.entry(&txid, &[("height", -1), ("fee", 0)]);
        w.entry(&txid, &[("height", 1_234_567_890_123)]);
        let entries = w.into_entries();
        let mut w = ListWriter::after(&entries, 0);
        w.entry(&txid, &[("height", i64::MIN + 1)]);
        let v: Value = serde_json::from_str(&format!("[{entries}{}", w.finish())).unwrap();
        let h = "ab".repeat(32);
        assert_eq!(
            v,
            json!([
                {"tx_hash": h, "height": -1, "fee": 0},
                {"tx_hash": h, "height": 1_234_567_890_123_i64},
                {"tx_hash": h, "height": i64::MIN + 1},
            ])
        );
        let mut w = ListWriter::after("", 0);
        assert_eq!(format!("[{}", ListWriter::after("", 0).finish()), "[]");
        w.entry(&txid, &[("height", 0)]);
        let v: Value = serde_json::from_str(&format!("[{}", w.finish())).unwrap();
        assert_eq!(v, json!([{"tx_hash": h, "height": 0}]));
    }
}
