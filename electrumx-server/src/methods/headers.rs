//! `blockchain.block.header`, `blockchain.block.headers` (with checkpoint proofs) and
//! `blockchain.headers.subscribe`.

use super::{Answer, Reply, SessionCtx, blocking, hexes, internal};
use crate::cache::header_chunks::{CHUNK, HeadersForm};
use crate::protocol::jsonrpc::RpcError;
use crate::protocol::version::Version;
use crate::state::ServerState;
use electrumx_core::{ChainIndex, Hash32};
use serde_json::{Value, json};
use std::sync::Arc;

/// `blockchain.block.header`: the header at `height`, with a proof to `cp_height` if not 0.
pub async fn header(state: &Arc<ServerState>, height: u32, cp_height: u32) -> Answer {
    let header = state
        .index
        .header(height)
        .ok_or_else(|| RpcError::bad_request(format!("height {height} out of range")))?;
    if cp_height == 0 {
        return Ok(json!(const_hex::encode(header)).into());
    }
    let (branch, root) = cp_proof_anywhere(state, height, cp_height).await?;
    Ok(json!({
        "header": const_hex::encode(header),
        "branch": hexes(&branch),
        "root": root.to_display_hex(),
    })
    .into())
}

/// `blockchain.headers.subscribe`: the tip's header, and its successors as they come.
pub fn subscribe(state: &ServerState, ctx: &SessionCtx) -> Answer {
    state.subs.subscribe_headers(ctx.id);
    tip_header(state).map(Reply::Value)
}

/// `blockchain.block.headers`, written as JSON text directly: a full answer is 322 KB of
/// hex. The headers come as slices of rendered chunks (see [`crate::cache::header_chunks`]), sent
/// without a copy.
pub async fn headers(
    state: &Arc<ServerState>,
    v: Version,
    start: u32,
    count: u32,
    cp_height: u32,
) -> Answer {
    let count = count.min(CHUNK);
    let form = if v >= Version(1, 6, 0) {
        HeadersForm::List
    } else {
        HeadersForm::Concatenated
    };
    // The slices are read in steps: taken again if a block or reorg came in between, so
    // that an answer never mixes two chains.
    let mut attempts = 0;
    let (returned, body) = loop {
        let tip = state.index.tip();
        let Some((tip_height, _)) = tip else {
            break (0, Vec::new());
        };
        let returned = count.min(tip_height.saturating_add(1).saturating_sub(start));
        let body = state
            .header_chunks
            .slices(&state.index, tip_height, start, returned, form);
        attempts += 1;
        if state.index.tip() == tip || attempts == 3 {
            break (returned, body);
        }
    };
    let (open, close) = form.brackets();
    let prefix = format!("{{\"count\":{returned},\"max\":{CHUNK},{open}");
    let mut suffix = close.to_string();
    if cp_height != 0 && returned > 0 {
        let last = start + returned - 1;
        let (branch, root) = cp_proof_anywhere(state, last, cp_height).await?;
        suffix.push_str(",\"branch\":");
        suffix.push_str(&json!(hexes(&branch)).to_string());
        suffix.push_str(&format!(",\"root\":\"{}\"", root.to_display_hex()));
    }
    suffix.push('}');
    Ok(Reply::Spliced {
        prefix,
        body,
        suffix,
    })
}

fn header_json(height: u32, header: &[u8]) -> Value {
    json!({"height": height, "hex": const_hex::encode(header)})
}

fn tip_header(state: &ServerState) -> Result<Value, RpcError> {
    let (height, _) = state.index.tip().ok_or_else(|| internal("no tip"))?;
    let header = state
        .index
        .header(height)
        .ok_or_else(|| internal("no tip header"))?;
    Ok(header_json(height, &header))
}

/// The header notification for the current tip.
pub fn headers_notification(state: &ServerState) -> Option<String> {
    let h = tip_header(state).ok()?;
    Some(
        crate::protocol::jsonrpc::notification("blockchain.headers.subscribe", json!([h]))
            .to_string(),
    )
}

/// A `cp_height` proof: answered at once when the cached levels already cover the chain
/// (microseconds: a trip through the blocking pool would cost more than the proof), else
/// on the blocking pool, which extends them (up to a million hashes, once).
async fn cp_proof_anywhere(
    state: &Arc<ServerState>,
    height: u32,
    cp_height: u32,
) -> Result<(Vec<Hash32>, Hash32), RpcError> {
    let hashes = |start: u64, count: u64| {
        let count = u32::try_from(count).unwrap_or(u32::MAX);
        state.index.block_hashes(start as u32, count)
    };
    if state
        .header_tree
        .is_ready(u64::from(cp_height) + 1, &hashes)
    {
        return cp_proof(state, height, cp_height);
    }
    let st = state.clone();
    blocking(move || cp_proof(&st, height, cp_height)).await
}

fn cp_proof(
    state: &ServerState,
    height: u32,
    cp_height: u32,
) -> Result<(Vec<Hash32>, Hash32), RpcError> {
    let tip = state.index.tip().map(|t| t.0).unwrap_or(0);
    if height > cp_height || cp_height > tip {
        return Err(RpcError::bad_request(format!(
            "require header height {height} <= cp_height {cp_height} <= chain height {tip}"
        )));
    }
    let hashes = |start: u64, count: u64| {
        let count = u32::try_from(count).unwrap_or(u32::MAX);
        state.index.block_hashes(start as u32, count)
    };
    state
        .header_tree
        .branch_and_root(u64::from(cp_height) + 1, u64::from(height), &hashes)
        .ok_or_else(|| internal("cp proof"))
}
