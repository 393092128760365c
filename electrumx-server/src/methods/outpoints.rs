//! The outpoint methods of protocol 1.7: an output's status (funded, spent, by whom and at
//! what height), with or without a subscription.

use super::{Answer, SessionCtx, blocking, index_err};
use crate::protocol::jsonrpc::RpcError;
use crate::protocol::subscriptions::Outpoint;
use crate::state::ServerState;
use electrumx_core::ChainIndex;
use serde_json::{Value, json};
use std::sync::Arc;

/// `blockchain.outpoint.get_status`, and `.subscribe` when `subscribe`.
pub async fn status(
    state: &Arc<ServerState>,
    ctx: &SessionCtx,
    outpoint: Outpoint,
    subscribe: bool,
) -> Answer {
    let st = state.clone();
    let status = blocking(move || outpoint_status(&st, &outpoint)).await?;
    if subscribe {
        state
            .subs
            .subscribe_outpoint(ctx.id, outpoint, status.clone());
    }
    Ok(status.into())
}

/// `blockchain.outpoint.unsubscribe`: whether the session was subscribed.
pub fn unsubscribe(state: &ServerState, ctx: &SessionCtx, outpoint: Outpoint) -> Answer {
    Ok(json!(state.subs.unsubscribe_outpoint(ctx.id, &outpoint)).into())
}

/// An outpoint's status (protocol 1.7): `{}`, `{funder_height}` or with the spender.
pub fn outpoint_status(state: &ServerState, op: &Outpoint) -> Result<Value, RpcError> {
    let (txid, vout) = *op;
    let funder_height: i64 = match state.index.tx_position(&txid).map_err(index_err)? {
        Some((h, _)) => {
            if !state.index.output_exists(&txid, vout).map_err(index_err)? {
                return Ok(json!({}));
            }
            h as i64
        }
        None => match state.mempool.get(&txid) {
            Some(e) if state.mempool.has_output(&txid, vout) => e.electrum_height(),
            _ => return Ok(json!({})),
        },
    };
    if let Some(s) = state.index.spender(&txid, vout).map_err(index_err)? {
        return Ok(
            json!({"funder_height": funder_height, "spender_txhash": s.txid.to_display_hex(), "spender_height": s.height}),
        );
    }
    if let Some(spender) = state.mempool.spender(&txid, vout)
        && let Some(e) = state.mempool.get(&spender)
    {
        return Ok(
            json!({"funder_height": funder_height, "spender_txhash": spender.to_display_hex(), "spender_height": e.electrum_height()}),
        );
    }
    Ok(json!({"funder_height": funder_height}))
}
