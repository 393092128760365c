//! The mempool and fee methods: the fee histogram (from the mirror), `mempool.get_info`,
//! `mempool.recent`, and the node's fee estimates (`blockchain.estimatefee`,
//! `blockchain.relayfee`), cached per block.

use super::{Answer, daemon_err, tip_hash};
use crate::state::ServerState;
use serde_json::{Value, json};

/// `blockchain.estimatefee`: the node's estimate in BTC/kB, or -1 when it has none (never
/// an error).
pub async fn estimate_fee(state: &ServerState, blocks: u32) -> Answer {
    let rate = match state
        .node
        .estimate_fee(tip_hash(state), blocks.max(1))
        .await
    {
        Ok(Some(rate)) => json!(rate),
        Ok(None) => json!(-1),
        Err(e) => {
            tracing::debug!("estimatefee: {e}");
            json!(-1)
        }
    };
    Ok(rate.into())
}

/// `blockchain.relayfee` (up to 1.5): the node's minimum relay fee.
pub async fn relay_fee(state: &ServerState) -> Answer {
    state
        .node
        .relay_fee(tip_hash(state))
        .await
        .map(|f| json!(f).into())
        .map_err(daemon_err)
}

/// `mempool.get_info`: the node's fee floors.
pub async fn info(state: &ServerState) -> Answer {
    let info = state.node.mempool_info().await.map_err(daemon_err)?;
    let relay = state.node.relay_fee(tip_hash(state)).await.unwrap_or(0.0);
    let get = |k: &str, d: f64| info.get(k).and_then(Value::as_f64).unwrap_or(d);
    let min_relay = get("minrelaytxfee", relay);
    Ok(json!({
        "mempoolminfee": get("mempoolminfee", min_relay).max(min_relay),
        "minrelaytxfee": min_relay,
        "incrementalrelayfee": get("incrementalrelayfee", min_relay),
    })
    .into())
}

/// `mempool.get_fee_histogram`: `[fee rate, vbytes]` pairs, highest rate first.
pub fn fee_histogram(state: &ServerState) -> Answer {
    let pairs: Vec<Value> = state
        .mempool
        .fee_histogram()
        .into_iter()
        .map(|(rate, size)| json!([rate, size]))
        .collect();
    Ok(json!(pairs).into())
}

/// `mempool.recent`: the last transactions to enter the mempool.
pub fn recent(state: &ServerState) -> Answer {
    let recent: Vec<Value> = state
        .mempool
        .recent(10)
        .into_iter()
        .map(|e| json!({"txid": e.txid.to_display_hex(), "fee": e.fee, "vsize": e.vsize}))
        .collect();
    Ok(json!(recent).into())
}
