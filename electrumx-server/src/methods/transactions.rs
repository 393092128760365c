//! The transaction methods: raw and verbose transactions, broadcasts (single and package),
//! `testmempoolaccept`, and positions in blocks (`get_merkle`, `id_from_pos`) from cached
//! merkle trees.

use super::{Answer, SessionCtx, blocking, daemon_err, hexes, index_err, internal, tip_hash};
use crate::protocol::jsonrpc::{RpcError, code};
use crate::state::ServerState;
use electrumx_core::{ChainIndex, DaemonError, Txid};
use serde_json::{Value, json};
use std::sync::Arc;

/// `blockchain.transaction.get`: the raw transaction in hex (confirmed ones cached), or the
/// node's decoded form (`verbose`, cached per block).
pub async fn get(state: &Arc<ServerState>, txid: Txid, verbose: bool) -> Answer {
    if verbose {
        return state
            .node
            .verbose_transaction(tip_hash(state), txid)
            .await
            .map(|v| (*v).clone().into())
            .map_err(daemon_err);
    }
    if let Some(hex) = state.tx_cache.get(&txid) {
        return Ok(json!(&*hex).into());
    }
    let generation = state.tx_cache.generation();
    let hex: Arc<str> = const_hex::encode(transaction_raw(state, txid).await?).into();
    // Only confirmed transactions are kept: their bytes are fixed by their block (a
    // reorg clears the cache), a mempool one may yet be replaced.
    if state.mempool.get(&txid).is_none() {
        let st = state.clone();
        let confirmed = blocking(move || st.index.tx_position(&txid).map_err(index_err)).await?;
        if confirmed.is_some() {
            state.tx_cache.insert(txid, hex.clone(), generation);
        }
    }
    Ok(json!(&*hex).into())
}

/// `blockchain.transaction.broadcast`: hands the transaction to the node; its txid, or the
/// node's reason for refusing it.
pub async fn broadcast(state: &ServerState, ctx: &mut SessionCtx, raw: Vec<u8>) -> Answer {
    match state.node.broadcast(&raw).await {
        Ok(txid) => {
            state.mempool_wake.notify_one();
            ctx.pending_txs_sent += 1;
            Ok(json!(txid.to_display_hex()).into())
        }
        Err(DaemonError::Rpc { message, .. }) => Err(RpcError::bad_request(format!(
            "the transaction was rejected by network rules.\n\n{message}\n[{}]",
            const_hex::encode(&raw)
        ))),
        Err(e) => Err(daemon_err(e)),
    }
}

/// `blockchain.transaction.broadcast_package`: `submitpackage` on the node.
pub async fn broadcast_package(state: &ServerState, txs: Vec<Value>, verbose: bool) -> Answer {
    let result = match state.node.call_json("submitpackage", json!([txs])).await {
        Ok(r) => r,
        Err(DaemonError::Rpc { code: -32601, .. }) => {
            return Err(RpcError::bad_request(
                "the node does not support package relay (submitpackage)",
            ));
        }
        Err(DaemonError::Rpc { message, .. }) => {
            return Err(RpcError::bad_request(format!(
                "the tx package was rejected by network rules.\n\n{message}."
            )));
        }
        Err(e) => return Err(daemon_err(e)),
    };
    state.mempool_wake.notify_one();
    if verbose {
        return Ok(result.into());
    }
    let success = result.get("package_msg").and_then(Value::as_str) == Some("success");
    let mut out = json!({"success": success});
    let errors: Vec<Value> = result
        .get("tx-results")
        .and_then(Value::as_object)
        .map(|m| {
            m.values()
                .filter_map(|r| {
                    Some(json!({"txid": r.get("txid")?, "error": r.get("error")?.as_str()?}))
                })
                .collect()
        })
        .unwrap_or_default();
    if !errors.is_empty() {
        out["errors"] = json!(errors);
    }
    Ok(out.into())
}

/// `blockchain.transaction.testmempoolaccept`: the node's verdict, in the protocol's shape.
pub async fn test_mempool_accept(state: &ServerState, txs: Vec<Value>) -> Answer {
    let result = state
        .node
        .call_json("testmempoolaccept", json!([txs]))
        .await
        .map_err(daemon_err)?;
    let items = result.as_array().cloned().unwrap_or_default();
    let answer: Vec<Value> = items
        .iter()
        .map(|r| {
            let mut o = json!({"txid": r.get("txid"), "wtxid": r.get("wtxid").or(r.get("txid"))});
            if let Some(a) = r.get("allowed") {
                o["allowed"] = a.clone();
            }
            let reason = r
                .get("package-error")
                .or(r.get("reject-details"))
                .or(r.get("reject-reason"));
            if let Some(reason) = reason {
                o["reason"] = reason.clone();
            }
            o
        })
        .collect();
    Ok(json!(answer).into())
}

/// `blockchain.transaction.get_merkle`: the transaction's branch in its block.
pub async fn merkle(state: &Arc<ServerState>, txid: Txid, height: u32) -> Answer {
    let cached = cached_block_tree(state, height);
    if let Some(tree) = cached.as_ref().filter(|t| inline_tree(t)) {
        return merkle_answer(tree, txid, height).map(Into::into);
    }
    let st = state.clone();
    blocking(move || merkle_answer(&*block_tree(&st, height, cached)?, txid, height))
        .await
        .map(Into::into)
}

/// `blockchain.transaction.id_from_pos`: the txid at a position, with its branch if asked.
pub async fn id_from_pos(
    state: &Arc<ServerState>,
    height: u32,
    pos: usize,
    merkle: bool,
) -> Answer {
    let cached = cached_block_tree(state, height);
    if let Some(tree) = cached.as_ref().filter(|t| inline_tree(t)) {
        return id_from_pos_answer(tree, height, pos, merkle).map(Into::into);
    }
    let st = state.clone();
    blocking(move || id_from_pos_answer(&*block_tree(&st, height, cached)?, height, pos, merkle))
        .await
        .map(Into::into)
}

/// A raw transaction: from the node (mempool, or any with `txindex`), else from its block
/// via the index (works without `txindex`).
async fn transaction_raw(state: &Arc<ServerState>, txid: Txid) -> Result<Vec<u8>, RpcError> {
    match state.node.raw_transactions(&[txid]).await {
        Ok(mut v) => {
            if let Some(Some(raw)) = v.pop() {
                return Ok(raw);
            }
        }
        Err(e) => tracing::debug!("getrawtransaction {txid}: {e}"),
    }
    let st = state.clone();
    let pos = blocking(move || st.index.tx_position(&txid).map_err(index_err)).await?;
    let Some((height, pos)) = pos else {
        return Err(RpcError::new(
            code::DAEMON_ERROR,
            format!(
                "daemon error: {{'code': -5, 'message': 'No such mempool or blockchain transaction {txid}'}}"
            ),
        ));
    };
    let hash = state
        .index
        .block_hash(height)
        .ok_or_else(|| internal("block hash"))?;
    let mut blocks = state.node.raw_blocks(&[hash]).await.map_err(daemon_err)?;
    let raw = blocks.pop().ok_or_else(|| internal("no block"))?;
    let block = electrumx_core::parse::ParsedBlock::parse(raw).map_err(internal)?;
    let tx = block
        .txs
        .get(pos as usize)
        .ok_or_else(|| internal("tx position"))?;
    Ok(block.raw[tx.bytes.clone()].to_vec())
}

/// Most transactions a cached block's tree may have to be searched on the async worker.
const INLINE_MAX_LEAVES: usize = 100_000;

/// The cached merkle tree of the block at `height`, if any.
fn cached_block_tree(
    state: &ServerState,
    height: u32,
) -> Option<Arc<crate::cache::merkle::MerkleTree>> {
    state.merkle_cache.get(&state.index.block_hash(height)?)
}

/// Whether a tree is small enough to search on the async worker (see [`INLINE_MAX_ITEMS`]).
fn inline_tree(tree: &crate::cache::merkle::MerkleTree) -> bool {
    tree.leaves().len() <= INLINE_MAX_LEAVES
}

/// The merkle tree of the block at `height`: `cached`, or built and cached; "out of range"
/// for a height beyond the tip.
fn block_tree(
    state: &ServerState,
    height: u32,
    cached: Option<Arc<crate::cache::merkle::MerkleTree>>,
) -> Result<Arc<crate::cache::merkle::MerkleTree>, RpcError> {
    if let Some(tree) = cached {
        return Ok(tree);
    }
    let out_of_range = || RpcError::bad_request(format!("height {height} out of range"));
    let hash = state.index.block_hash(height).ok_or_else(out_of_range)?;
    state.merkle_cache.build(hash, || {
        state
            .index
            .block_txids(height)
            .map_err(index_err)?
            .ok_or_else(out_of_range)
    })
}

/// `get_merkle`'s answer from a block's tree.
fn merkle_answer(
    tree: &crate::cache::merkle::MerkleTree,
    txid: Txid,
    height: u32,
) -> Result<Value, RpcError> {
    let pos = tree
        .leaves()
        .iter()
        .position(|t| *t == txid)
        .ok_or_else(|| {
            RpcError::bad_request(format!("tx {txid} not in block at height {height}"))
        })?;
    let branch = tree.branch(pos).ok_or_else(|| internal("branch"))?;
    Ok(json!({"block_height": height, "merkle": hexes(&branch), "pos": pos}))
}

/// `id_from_pos`'s answer from a block's tree.
fn id_from_pos_answer(
    tree: &crate::cache::merkle::MerkleTree,
    height: u32,
    pos: usize,
    merkle: bool,
) -> Result<Value, RpcError> {
    let txid = tree.leaves().get(pos).ok_or_else(|| {
        RpcError::bad_request(format!(
            "no tx at position {pos} in block at height {height}"
        ))
    })?;
    if !merkle {
        return Ok(json!(txid.to_display_hex()));
    }
    let branch = tree.branch(pos).ok_or_else(|| internal("branch"))?;
    Ok(json!({"tx_hash": txid.to_display_hex(), "merkle": hexes(&branch)}))
}
