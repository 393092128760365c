//! The Electrum methods: argument checks, answers from the index, the mempool and the node,
//! with the method set and result shapes of the negotiated protocol version.

use crate::header_chunks::{CHUNK, HeadersForm};
use crate::jsonrpc::{Params, RpcError, code};
use crate::merkle::branch_and_root;
use crate::method::Method;
use crate::outgoing::SharedSlice;
use crate::state::{ServerState, server_version};
use crate::subscriptions::{Outpoint, ScriptMethod};
use crate::version::{self, Version};
use bitcoin::hashes::{Hash, HashEngine, sha256};
use electrumx_core::{
    ChainIndex, DaemonError, Hash32, HashX, HistoryItem, IndexError, MempoolEntry, ScriptHash,
    Txid, Utxo,
};
use serde_json::{Value, json};
use std::ops::ControlFlow;
use std::sync::Arc;

/// What a session knows about itself while answering.
#[derive(Clone, Debug)]
pub struct SessionCtx {
    /// Session id (for subscriptions).
    pub id: u64,
    /// Negotiated version, once `server.version` was answered.
    pub version: Option<Version>,
    /// Client name from `server.version`.
    pub client_name: String,
    /// Cost of the requests handled since the session last collected it.
    pub pending_cost: f64,
    /// Transactions broadcast since the session last collected the count.
    pub pending_txs_sent: u64,
    /// The client's address (for `server.add_peer` and `server.peers.subscribe`).
    pub remote: Option<std::net::IpAddr>,
}

impl SessionCtx {
    /// A copy for one request handled alongside others: same identity and version, nothing
    /// pending yet (the session adds what the request accrued when it is done).
    pub fn for_request(&self) -> SessionCtx {
        SessionCtx {
            pending_cost: 0.0,
            pending_txs_sent: 0,
            ..self.clone()
        }
    }

    /// A new session's context, before `server.version`.
    pub fn new(id: u64, remote: Option<std::net::IpAddr>) -> SessionCtx {
        SessionCtx {
            id,
            version: None,
            client_name: String::new(),
            pending_cost: 0.0,
            pending_txs_sent: 0,
            remote,
        }
    }
}

/// What a handler asks the session to do besides answering.
#[derive(Debug, PartialEq, Eq)]
pub enum After {
    /// Nothing.
    Continue,
    /// Close the connection after sending the reply.
    Disconnect,
}

type Answer = Result<Value, RpcError>;

/// A method's result: a JSON value, or JSON text already written (long lists).
pub enum Reply {
    /// A value, serialized with the reply.
    Value(Value),
    /// Serialized JSON.
    Raw(String),
    /// Serialized JSON in parts: `prefix`, the shared `body` slices (a long answer kept
    /// rendered in a cache, sent without a copy), then `suffix`.
    Spliced {
        /// The text before the body.
        prefix: String,
        /// The shared middle.
        body: Vec<SharedSlice>,
        /// The text after it.
        suffix: String,
    },
}

fn internal(e: impl std::fmt::Display) -> RpcError {
    tracing::warn!("internal error: {e}");
    RpcError::new(code::INTERNAL_ERROR, "internal server error")
}

fn index_err(e: IndexError) -> RpcError {
    internal(e)
}

fn daemon_err(e: DaemonError) -> RpcError {
    match e {
        DaemonError::Rpc { code, message } => RpcError::new(
            code::DAEMON_ERROR,
            format!("daemon error: {{'code': {code}, 'message': {message:?}}}"),
        ),
        other => RpcError::new(code::DAEMON_ERROR, format!("daemon error: {other}")),
    }
}

/// Index work in progress at once, server-wide: twice the cores. With sessions handling
/// several requests each, unbounded blocking tasks would be hundreds of runnable threads
/// starving the async workers (accepts, replies) of the CPU; waiting here is asynchronous.
static INDEX_WORK: std::sync::LazyLock<Arc<tokio::sync::Semaphore>> =
    std::sync::LazyLock::new(|| {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        Arc::new(tokio::sync::Semaphore::new(cores * 2))
    });

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, RpcError> + Send + 'static,
) -> Result<T, RpcError> {
    let permit = INDEX_WORK.clone().acquire_owned().await.map_err(internal)?;
    // The permit goes with the work: it is returned when the work is done, whether or not
    // the request's future is being polled then.
    tokio::task::spawn_blocking(move || {
        let _permit = permit;
        f()
    })
    .await
    .map_err(internal)?
}

// ----- argument helpers -----

fn arg_u32(p: &Params, i: usize, name: &str, default: Option<u32>) -> Result<u32, RpcError> {
    match p.get(i, name) {
        None => default.ok_or_else(|| {
            RpcError::new(code::INVALID_PARAMS, format!("missing argument \"{name}\""))
        }),
        Some(v) => {
            let n = match v {
                Value::Number(n) => n.as_u64(),
                Value::String(s) => s.trim().parse::<u64>().ok(),
                _ => None,
            };
            n.and_then(|n| u32::try_from(n).ok()).ok_or_else(|| {
                RpcError::bad_request(format!("{v} should be a non-negative integer"))
            })
        }
    }
}

fn arg_bool(p: &Params, i: usize, name: &str) -> Result<bool, RpcError> {
    match p.get(i, name) {
        None => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => Err(RpcError::bad_request(format!(
            "\"{name}\" must be a boolean"
        ))),
    }
}

fn arg_str<'a>(p: &'a Params, i: usize, name: &str) -> Result<&'a str, RpcError> {
    match p.get(i, name) {
        Some(Value::String(s)) => Ok(s),
        Some(v) => Err(RpcError::bad_request(format!("{v} should be a string"))),
        None => Err(RpcError::new(
            code::INVALID_PARAMS,
            format!("missing argument \"{name}\""),
        )),
    }
}

fn arg_scripthash(p: &Params) -> Result<ScriptHash, RpcError> {
    let s = arg_str(p, 0, "scripthash")?;
    if s.len() != 64 {
        return Err(RpcError::bad_request(format!(
            "{s} is not a valid script hash"
        )));
    }
    ScriptHash::from_hex(s)
        .ok_or_else(|| RpcError::bad_request(format!("{s} is not a valid script hash")))
}

fn arg_txid(p: &Params, i: usize, name: &str) -> Result<Txid, RpcError> {
    let s = arg_str(p, i, name)?;
    if s.len() != 64 {
        return Err(RpcError::bad_request(format!(
            "{s} should be a transaction hash"
        )));
    }
    Hash32::from_display_hex(s)
        .ok_or_else(|| RpcError::bad_request(format!("{s} should be a transaction hash")))
}

fn arg_hex(p: &Params, i: usize, name: &str) -> Result<Vec<u8>, RpcError> {
    let s = arg_str(p, i, name)?;
    const_hex::decode(s).map_err(|_| RpcError::bad_request(format!("{name} is not valid hex")))
}

fn arg_hex_list(p: &Params, i: usize, name: &str) -> Result<Vec<Value>, RpcError> {
    match p.get(i, name) {
        Some(Value::Array(a))
            if !a.is_empty()
                && a.iter()
                    .all(|v| v.as_str().is_some_and(|s| const_hex::decode(s).is_ok())) =>
        {
            Ok(a.clone())
        }
        _ => Err(RpcError::bad_request(format!(
            "{name} must be a non-empty list of hex strings"
        ))),
    }
}

// ----- shared computations -----

/// Most entries a cached answer may hold to be written on the async worker rather than the
/// blocking pool: a cache hit of that size takes microseconds, less than the pool's round
/// trip (two thread wake-ups), which was most of a light query's latency.
const INLINE_MAX_ITEMS: usize = 1000;

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
fn status_cost(entries: usize) -> f64 {
    0.1 + entries as f64 * 0.00136
}

/// [`script_status`] given the cache's answer (`cached`) already looked up, with the number
/// of confirmed entries hashed.
fn script_status_from(
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
        let new = state
            .index
            .history(sh, mid.confirmed, usize::MAX)
            .map_err(index_err)?;
        let mut status = StatusHasher {
            engine: mid.engine,
            entries: mid.confirmed,
            line: String::new(),
        };
        for item in &new {
            status.add(&item.txid, item.height as i64);
        }
        state
            .status_midstates
            .insert(hashx, status.engine.clone(), status.entries, reorgs);
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
            .insert(hashx, status.engine.clone(), status.entries, reorgs),
    }
    let entries = status.entries;
    Ok((status.finish(state, &hashx), entries))
}

/// The status of a script whose confirmed history is `confirmed`.
fn status_of(state: &ServerState, hashx: &HashX, confirmed: &[HistoryItem]) -> Option<String> {
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
}

impl StatusHasher {
    fn add(&mut self, txid: &Hash32, height: i64) {
        self.line.clear();
        self.line.push_str(&txid.to_display_hex());
        self.line.push(':');
        push_int(&mut self.line, height);
        self.line.push(':');
        self.engine.input(self.line.as_bytes());
        self.entries += 1;
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

fn history_too_large() -> RpcError {
    RpcError::new(code::HISTORY_TOO_LARGE, "history too large")
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
    Some(crate::jsonrpc::notification("blockchain.headers.subscribe", json!([h])).to_string())
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
    let leaves = state.index.block_hashes(0, cp_height + 1);
    branch_and_root(&leaves, height as usize).ok_or_else(|| internal("cp proof"))
}

/// Most transactions a cached block's tree may have to be searched on the async worker.
const INLINE_MAX_LEAVES: usize = 100_000;

/// The cached merkle tree of the block at `height`, if any.
fn cached_block_tree(state: &ServerState, height: u32) -> Option<Arc<crate::merkle::MerkleTree>> {
    state.merkle_cache.get(&state.index.block_hash(height)?)
}

/// Whether a tree is small enough to search on the async worker (see [`INLINE_MAX_ITEMS`]).
fn inline_tree(tree: &crate::merkle::MerkleTree) -> bool {
    tree.leaves().len() <= INLINE_MAX_LEAVES
}

/// The merkle tree of the block at `height`: `cached`, or built and cached; "out of range"
/// for a height beyond the tip.
fn block_tree(
    state: &ServerState,
    height: u32,
    cached: Option<Arc<crate::merkle::MerkleTree>>,
) -> Result<Arc<crate::merkle::MerkleTree>, RpcError> {
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
    tree: &crate::merkle::MerkleTree,
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
    tree: &crate::merkle::MerkleTree,
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

fn hexes(hs: &[Hash32]) -> Vec<String> {
    hs.iter().map(|h| h.to_display_hex()).collect()
}

// ----- dispatch -----

/// Answers one request.
pub async fn handle(
    state: &Arc<ServerState>,
    ctx: &mut SessionCtx,
    method: &str,
    p: &Params,
) -> (Result<Reply, RpcError>, After) {
    if method == "server.version" {
        let (answer, after) = server_version_method(state, ctx, p);
        return (answer.map(Reply::Value), after);
    }
    let Some(version) = ctx.version else {
        return (
            Err(RpcError::bad_request(
                "use server.version to identify client",
            )),
            After::Disconnect,
        );
    };
    // The table says which methods this version has; anything else is unknown to it.
    if !Method::from_name(method).is_some_and(|m| m.available_in(version)) {
        return (
            Err(RpcError::new(
                code::METHOD_NOT_FOUND,
                format!("unknown method \"{method}\""),
            )),
            After::Continue,
        );
    }
    if let Some((op, flavour)) = script_method(method) {
        return (
            script_method_call(state, ctx, method, op, flavour, p).await,
            After::Continue,
        );
    }
    if method == "blockchain.block.headers" {
        return (block_headers(state, version, p).await, After::Continue);
    }
    (
        dispatch(state, ctx, version, method, p)
            .await
            .map(Reply::Value),
        After::Continue,
    )
}

/// `blockchain.block.headers`, written as JSON text directly: a full answer is 322 KB of
/// hex. The headers come as slices of rendered chunks (see [`crate::header_chunks`]), sent
/// without a copy.
async fn block_headers(
    state: &Arc<ServerState>,
    v: Version,
    p: &Params,
) -> Result<Reply, RpcError> {
    p.check(
        "blockchain.block.headers",
        &["start_height", "count", "cp_height"],
    )?;
    let start = arg_u32(p, 0, "start_height", None)?;
    let count = arg_u32(p, 1, "count", None)?.min(CHUNK);
    let cp_height = arg_u32(p, 2, "cp_height", Some(0))?;
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
        let st = state.clone();
        let (branch, root) = blocking(move || cp_proof(&st, last, cp_height)).await?;
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

async fn script_method_call(
    state: &Arc<ServerState>,
    ctx: &mut SessionCtx,
    method: &str,
    op: &str,
    flavour: ScriptMethod,
    p: &Params,
) -> Result<Reply, RpcError> {
    let arg_name = if flavour == ScriptMethod::ScriptPubKey {
        "spk"
    } else {
        "scripthash"
    };
    p.check(method, &[arg_name])?;
    let sh = match flavour {
        ScriptMethod::ScriptHash => arg_scripthash(p)?,
        ScriptMethod::ScriptPubKey => ScriptHash::of_script(&arg_hex(p, 0, "spk")?),
    };
    script_query(state, ctx, op, flavour, sh).await
}

fn server_version_method(state: &ServerState, ctx: &mut SessionCtx, p: &Params) -> (Answer, After) {
    if ctx.version.is_some() {
        return (
            Err(RpcError::bad_request("server.version already sent")),
            After::Continue,
        );
    }
    if let Some(Value::String(name)) = p.get(0, "client_name") {
        ctx.client_name = name.chars().take(100).collect();
    }
    if let Some(re) = &state.drop_client
        && re.is_match(&ctx.client_name)
    {
        let msg = format!("unsupported client: {}", ctx.client_name);
        return (Err(RpcError::bad_request(msg)), After::Disconnect);
    }
    match version::negotiate(p.get(1, "protocol_version")) {
        Some(v) => {
            ctx.version = Some(v);
            (
                Ok(json!([server_version(), v.to_string()])),
                After::Continue,
            )
        }
        None => {
            let asked = p
                .get(1, "protocol_version")
                .map(|v| v.to_string())
                .unwrap_or_default();
            (
                Err(RpcError::bad_request(format!(
                    "unsupported protocol version: {asked}"
                ))),
                After::Disconnect,
            )
        }
    }
}

async fn dispatch(
    state: &Arc<ServerState>,
    ctx: &mut SessionCtx,
    v: Version,
    method: &str,
    p: &Params,
) -> Answer {
    let v17 = v >= Version(1, 7, 0);
    match method {
        "blockchain.block.header" => {
            p.check(method, &["height", "cp_height"])?;
            let height = arg_u32(p, 0, "height", None)?;
            let cp_height = arg_u32(p, 1, "cp_height", Some(0))?;
            let header = state
                .index
                .header(height)
                .ok_or_else(|| RpcError::bad_request(format!("height {height} out of range")))?;
            if cp_height == 0 {
                return Ok(json!(const_hex::encode(header)));
            }
            let st = state.clone();
            let (branch, root) = blocking(move || cp_proof(&st, height, cp_height)).await?;
            Ok(
                json!({"header": const_hex::encode(header), "branch": hexes(&branch), "root": root.to_display_hex()}),
            )
        }
        "blockchain.headers.subscribe" => {
            p.check(method, &[])?;
            state.subs.subscribe_headers(ctx.id);
            tip_header(state)
        }
        "blockchain.estimatefee" => {
            p.check(method, &["number", "mode"])?;
            let number = arg_u32(p, 0, "number", None)?;
            if let Some(mode) = p.get(1, "mode") {
                let m = mode.as_str().unwrap_or("").to_ascii_uppercase();
                if m != "CONSERVATIVE" && m != "ECONOMICAL" {
                    return Err(RpcError::bad_request(format!(
                        "unknown estimatefee mode: {mode}"
                    )));
                }
            }
            // A number, or -1 when the node cannot estimate: never an error.
            match state
                .node
                .estimate_fee(tip_hash(state), number.max(1))
                .await
            {
                Ok(Some(rate)) => Ok(json!(rate)),
                Ok(None) => Ok(json!(-1)),
                Err(e) => {
                    tracing::debug!("estimatefee: {e}");
                    Ok(json!(-1))
                }
            }
        }
        "blockchain.relayfee" => {
            p.check(method, &[])?;
            state
                .node
                .relay_fee(tip_hash(state))
                .await
                .map(|f| json!(f))
                .map_err(daemon_err)
        }
        "mempool.get_info" => {
            p.check(method, &[])?;
            let info = state.node.mempool_info().await.map_err(daemon_err)?;
            let relay = state.node.relay_fee(tip_hash(state)).await.unwrap_or(0.0);
            let get = |k: &str, d: f64| info.get(k).and_then(Value::as_f64).unwrap_or(d);
            let min_relay = get("minrelaytxfee", relay);
            Ok(json!({
                "mempoolminfee": get("mempoolminfee", min_relay).max(min_relay),
                "minrelaytxfee": min_relay,
                "incrementalrelayfee": get("incrementalrelayfee", min_relay),
            }))
        }
        "mempool.get_fee_histogram" => {
            p.check(method, &[])?;
            Ok(json!(
                state
                    .mempool
                    .fee_histogram()
                    .into_iter()
                    .map(|(rate, size)| json!([rate, size]))
                    .collect::<Vec<_>>()
            ))
        }
        "blockchain.transaction.get" => {
            p.check(method, &["tx_hash", "verbose"])?;
            let txid = arg_txid(p, 0, "tx_hash")?;
            let verbose = arg_bool(p, 1, "verbose")?;
            if verbose {
                return state
                    .node
                    .verbose_transaction(tip_hash(state), txid)
                    .await
                    .map(|v| (*v).clone())
                    .map_err(daemon_err);
            }
            if let Some(hex) = state.tx_cache.get(&txid) {
                return Ok(json!(&*hex));
            }
            let generation = state.tx_cache.generation();
            let hex: Arc<str> = const_hex::encode(transaction_raw(state, txid).await?).into();
            // Only confirmed transactions are kept: their bytes are fixed by their block (a
            // reorg clears the cache), a mempool one may yet be replaced.
            if state.mempool.get(&txid).is_none() {
                let st = state.clone();
                let confirmed =
                    blocking(move || st.index.tx_position(&txid).map_err(index_err)).await?;
                if confirmed.is_some() {
                    state.tx_cache.insert(txid, hex.clone(), generation);
                }
            }
            Ok(json!(&*hex))
        }
        "blockchain.transaction.broadcast" => {
            p.check(method, &["raw_tx"])?;
            let raw = arg_hex(p, 0, "raw_tx")?;
            match state.node.broadcast(&raw).await {
                Ok(txid) => {
                    state.mempool_wake.notify_one();
                    ctx.pending_txs_sent += 1;
                    Ok(json!(txid.to_display_hex()))
                }
                Err(DaemonError::Rpc { message, .. }) => Err(RpcError::bad_request(format!(
                    "the transaction was rejected by network rules.\n\n{message}\n[{}]",
                    const_hex::encode(&raw)
                ))),
                Err(e) => Err(daemon_err(e)),
            }
        }
        "blockchain.transaction.broadcast_package" => {
            p.check(method, &["raw_txs", "verbose"])?;
            let txs = arg_hex_list(p, 0, "raw_txs")?;
            let verbose = arg_bool(p, 1, "verbose")?;
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
                return Ok(result);
            }
            let success = result.get("package_msg").and_then(Value::as_str) == Some("success");
            let mut out = json!({"success": success});
            let errors: Vec<Value> = result
                .get("tx-results")
                .and_then(Value::as_object)
                .map(|m| {
                    m.values()
                        .filter_map(|r| {
                            Some(
                                json!({"txid": r.get("txid")?, "error": r.get("error")?.as_str()?}),
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            if !errors.is_empty() {
                out["errors"] = json!(errors);
            }
            Ok(out)
        }
        "blockchain.transaction.get_merkle" => {
            p.check(method, &["tx_hash", "height"])?;
            let txid = arg_txid(p, 0, "tx_hash")?;
            let height = arg_u32(p, 1, "height", None)?;
            let cached = cached_block_tree(state, height);
            if let Some(tree) = cached.as_ref().filter(|t| inline_tree(t)) {
                return merkle_answer(tree, txid, height);
            }
            let st = state.clone();
            blocking(move || merkle_answer(&*block_tree(&st, height, cached)?, txid, height)).await
        }
        "blockchain.transaction.id_from_pos" => {
            p.check(method, &["height", "tx_pos", "merkle"])?;
            let height = arg_u32(p, 0, "height", None)?;
            let pos = arg_u32(p, 1, "tx_pos", None)? as usize;
            let merkle = arg_bool(p, 2, "merkle")?;
            let cached = cached_block_tree(state, height);
            if let Some(tree) = cached.as_ref().filter(|t| inline_tree(t)) {
                return id_from_pos_answer(tree, height, pos, merkle);
            }
            let st = state.clone();
            blocking(move || {
                id_from_pos_answer(&*block_tree(&st, height, cached)?, height, pos, merkle)
            })
            .await
        }
        "blockchain.outpoint.subscribe" | "blockchain.outpoint.get_status" => {
            p.check(method, &["tx_hash", "txout_idx", "spk_hint"])?;
            let txid = arg_txid(p, 0, "tx_hash")?;
            let vout = arg_u32(p, 1, "txout_idx", None)?;
            match p.get(2, "spk_hint") {
                Some(Value::String(h)) if const_hex::decode(h).is_ok() => {}
                Some(_) => return Err(RpcError::bad_request("spk_hint must be hex")),
                None => {
                    return Err(RpcError::new(
                        code::INVALID_PARAMS,
                        "missing argument \"spk_hint\"",
                    ));
                }
            }
            let st = state.clone();
            let status = blocking(move || outpoint_status(&st, &(txid, vout))).await?;
            if method == "blockchain.outpoint.subscribe" {
                state
                    .subs
                    .subscribe_outpoint(ctx.id, (txid, vout), status.clone());
            }
            Ok(status)
        }
        "blockchain.outpoint.unsubscribe" => {
            p.check(method, &["tx_hash", "txout_idx"])?;
            let txid = arg_txid(p, 0, "tx_hash")?;
            let vout = arg_u32(p, 1, "txout_idx", None)?;
            Ok(json!(
                state.subs.unsubscribe_outpoint(ctx.id, &(txid, vout))
            ))
        }
        "blockchain.transaction.testmempoolaccept" => {
            p.check(method, &["raw_txs"])?;
            let txs = arg_hex_list(p, 0, "raw_txs")?;
            let result = state
                .node
                .call_json("testmempoolaccept", json!([txs]))
                .await
                .map_err(daemon_err)?;
            let items = result.as_array().cloned().unwrap_or_default();
            Ok(json!(
                items
                    .iter()
                    .map(|r| {
                        let mut o = json!({"txid": r.get("txid"), "wtxid": r.get("wtxid").or(r.get("txid"))});
                        if let Some(a) = r.get("allowed") {
                            o["allowed"] = a.clone();
                        }
                        let reason = r.get("package-error").or(r.get("reject-details")).or(r.get("reject-reason"));
                        if let Some(reason) = reason {
                            o["reason"] = reason.clone();
                        }
                        o
                    })
                    .collect::<Vec<_>>()
            ))
        }
        "mempool.recent" => {
            p.check(method, &[])?;
            Ok(json!(
                state
                    .mempool
                    .recent(10)
                    .into_iter()
                    .map(
                        |e| json!({"txid": e.txid.to_display_hex(), "fee": e.fee, "vsize": e.vsize})
                    )
                    .collect::<Vec<_>>()
            ))
        }
        "server.ping" if v17 => {
            p.check(method, &["pong_len", "data"])?;
            let pong_len = arg_u32(p, 0, "pong_len", Some(0))? as usize;
            if let Some(d) = p.get(1, "data")
                && !d.is_string()
            {
                return Err(RpcError::bad_request("data must be a hex string"));
            }
            if pong_len > state.limits.max_send {
                return Err(RpcError::bad_request("pong_len value too high"));
            }
            Ok(json!({"data": "0".repeat(pong_len)}))
        }
        "server.banner" => {
            p.check(method, &[])?;
            Ok(json!(state.identity.banner()))
        }
        "server.donation_address" => {
            p.check(method, &[])?;
            Ok(json!(state.identity.donation_address))
        }
        "server.features" => {
            p.check(method, &[])?;
            let mut f = features(state);
            if v17 && let Some(o) = f.as_object_mut() {
                o.remove("hash_function");
            }
            Ok(f)
        }
        "server.peers.subscribe" => {
            p.check(method, &[])?;
            Ok(state.peers.subscribe_result(ctx.remote))
        }
        "server.add_peer" => {
            p.check(method, &["features"])?;
            let features = p.get(0, "features").cloned().unwrap_or(Value::Null);
            Ok(json!(state.peers.add_peer(&features, ctx.remote).await))
        }
        "server.ping" => {
            p.check(method, &[])?;
            Ok(Value::Null)
        }
        _ => Err(RpcError::new(
            code::METHOD_NOT_FOUND,
            format!("unknown method \"{method}\""),
        )),
    }
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

/// The indexed tip's hash: what node answers cached per block are keyed by.
fn tip_hash(state: &ServerState) -> Option<electrumx_core::BlockHash> {
    state.index.tip().map(|t| t.1)
}

fn features(state: &ServerState) -> Value {
    features_of(&state.identity.report_services, &state.coin)
}

/// `server.features` for services reported as `proto://host:port` on `coin`.
pub fn features_of(report_services: &[String], coin: &electrumx_core::CoinParams) -> Value {
    let mut hosts = serde_json::Map::new();
    for svc in report_services {
        if let Some((proto, rest)) = svc.split_once("://")
            && let Some((host, port)) = rest.rsplit_once(':')
            && let Ok(port) = port.parse::<u16>()
        {
            let key = match proto {
                "tcp" => "tcp_port",
                "ssl" => "ssl_port",
                "ws" => "ws_port",
                "wss" => "wss_port",
                _ => continue,
            };
            let entry = hosts
                .entry(host.to_string())
                .or_insert_with(|| json!({"tcp_port": null, "ssl_port": null}));
            entry[key] = json!(port);
        }
    }
    json!({
        "hosts": hosts,
        "genesis_hash": coin.genesis_hash.to_display_hex(),
        "hash_function": "sha256",
        "server_version": server_version(),
        "protocol_min": version::MIN.to_string(),
        "protocol_max": version::MAX.to_string(),
        "pruning": null,
        "services": report_services,
    })
}

/// The script query a method name asks for, in the negotiated version's flavour.
/// A script method's operation and flavour (which versions have it is the table's
/// business, checked before).
fn script_method(method: &str) -> Option<(&str, ScriptMethod)> {
    if let Some(op) = method.strip_prefix("blockchain.scripthash.") {
        return SCRIPT_OPS
            .contains(&op)
            .then_some((op, ScriptMethod::ScriptHash));
    }
    if let Some(op) = method.strip_prefix("blockchain.scriptpubkey.") {
        return SCRIPT_OPS
            .contains(&op)
            .then_some((op, ScriptMethod::ScriptPubKey));
    }
    None
}

const SCRIPT_OPS: [&str; 6] = [
    "get_balance",
    "get_history",
    "get_mempool",
    "listunspent",
    "subscribe",
    "unsubscribe",
];

async fn script_query(
    state: &Arc<ServerState>,
    ctx: &mut SessionCtx,
    op: &str,
    flavour: ScriptMethod,
    sh: ScriptHash,
) -> Result<Reply, RpcError> {
    // 1.7 wraps lists in objects.
    let wrap = move |key: &str, list: String| {
        if flavour == ScriptMethod::ScriptPubKey {
            format!("{{\"{key}\":{list}}}")
        } else {
            list
        }
    };
    match op {
        "get_balance" => {
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
            let unconfirmed = state.mempool.balance_delta(&hashx);
            Ok(Reply::Value(
                json!({"confirmed": confirmed, "unconfirmed": unconfirmed}),
            ))
        }
        "get_history" => {
            let cached = state.script_cache.get(&sh.hashx());
            let list = match cached {
                Some(h) if h.len() <= INLINE_MAX_ITEMS.min(state.limits.max_history()) => {
                    history_list(state, &sh, &h)
                }
                cached => {
                    let st = state.clone();
                    let confirmed = match state.script_cache.get_rendered(&sh.hashx()) {
                        Some(json) => json,
                        None => blocking(move || confirmed_history_json(&st, &sh, cached)).await?,
                    };
                    // The confirmed part goes out as it is cached; the mempool's entries
                    // follow it.
                    let mut w = ListWriter::after(&confirmed, 256);
                    mempool_list(state, &sh.hashx(), &mut w);
                    let (mut prefix, mut suffix) = ("[".to_string(), w.finish());
                    if flavour == ScriptMethod::ScriptPubKey {
                        prefix.insert_str(0, "{\"history\":");
                        suffix.push('}');
                    }
                    return Ok(Reply::Spliced {
                        prefix,
                        body: vec![SharedSlice::whole(confirmed)],
                        suffix,
                    });
                }
            };
            Ok(Reply::Raw(wrap("history", list)))
        }
        "get_mempool" => {
            let mut w = ListWriter::with_capacity(256);
            mempool_list(state, &sh.hashx(), &mut w);
            Ok(Reply::Raw(wrap("history", w.finish())))
        }
        "listunspent" => {
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
            Ok(Reply::Raw(wrap("utxos", list)))
        }
        "subscribe" => {
            // A round of notifications sent while the status was computed may have left
            // this script out: then the status is computed again, from the newer view.
            let mut tries = 0;
            loop {
                let round = state.subs.round();
                let (status, entries) = match state.script_cache.get(&sh.hashx()) {
                    Some(h) if h.len() <= INLINE_MAX_ITEMS => {
                        (status_of(state, &sh.hashx(), &h), h.len())
                    }
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
                    .subscribe_script(ctx.id, sh, status.clone(), flavour, round)
                {
                    return Ok(Reply::Value(json!(status)));
                }
            }
        }
        "unsubscribe" => Ok(Reply::Value(json!(
            state.subs.unsubscribe_script(ctx.id, &sh)
        ))),
        _ => Err(RpcError::new(
            code::METHOD_NOT_FOUND,
            format!("unknown method \"{op}\""),
        )),
    }
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

/// A script's mempool entries in the protocol's order, as answers and statuses show them.
///
/// Between a block's commit and the next mempool refresh, the mirror may still list
/// transactions the block confirmed; those are left out here (a transaction is never
/// both confirmed and pending in one answer), so an answer given in that window is already
/// the one the refresh will confirm. The check reads the index only in that window.
fn mempool_history(state: &ServerState, hashx: &HashX) -> Vec<MempoolEntry> {
    let mut entries = state.mempool.history(hashx);
    if entries.is_empty() || state.mempool.synced_tip() == state.index.tip() {
        return entries;
    }
    entries.retain(|e| !matches!(state.index.tx_position(&e.txid), Ok(Some(_))));
    entries
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

/// Appends the decimal form of `n` (without `fmt`'s machinery: lists have many numbers).
fn push_int(out: &mut String, n: i64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    let mut m = n.unsigned_abs();
    loop {
        i -= 1;
        buf[i] = b'0' + (m % 10) as u8;
        m /= 10;
        if m == 0 {
            break;
        }
    }
    if n < 0 {
        out.push('-');
    }
    out.push_str(std::str::from_utf8(&buf[i..]).expect("digits are ASCII"));
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
    let history = state.index.history(sh, 0, limit + 1).map_err(index_err)?;
    if history.len() > limit {
        return Err(history_too_large());
    }
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
    for u in state.mempool.utxos(&sh.hashx()) {
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

#[cfg(test)]
mod tests {
    use super::*;

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
