//! The Electrum methods: a request's method is looked up once in the table
//! ([`crate::protocol::method`]), checked against the session's protocol version, its
//! arguments parsed once into a typed [`Call`], and dispatched in one line per method to
//! its family's file: [`headers`], [`scripts`], [`transactions`], [`outpoints`],
//! [`mempool`] (with fees), [`server`].

mod call;
pub mod headers;
pub mod mempool;
pub mod outpoints;
pub mod scripts;
pub mod server;
mod status;
pub mod transactions;

pub use call::{Call, ScriptArg};
pub use status::script_status;

use crate::protocol::jsonrpc::{Params, RpcError, code};
use crate::protocol::method::Method;
use crate::protocol::outgoing::SharedSlice;
use crate::protocol::version::Version;
use crate::state::ServerState;
use electrumx_core::{ChainIndex, DaemonError, Hash32, IndexError};
use serde_json::Value;
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

impl From<Value> for Reply {
    fn from(v: Value) -> Reply {
        Reply::Value(v)
    }
}

/// A method's outcome.
type Answer = Result<Reply, RpcError>;

/// Answers one request for `method` (`None`: a name the table does not have).
pub async fn handle(
    state: &Arc<ServerState>,
    ctx: &mut SessionCtx,
    method: Option<Method>,
    name: &str,
    p: &Params,
) -> (Answer, After) {
    if method == Some(Method::ServerVersion) {
        let answer = Call::parse(Method::ServerVersion, ctx.version, p);
        return match answer {
            Ok(Call::Version {
                client_name,
                protocol_version,
            }) => server::version(state, ctx, client_name, protocol_version),
            Ok(_) => unreachable!("server.version parses as Call::Version"),
            Err(e) => (Err(e), After::Continue),
        };
    }
    let Some(version) = ctx.version else {
        let e = RpcError::bad_request("use server.version to identify client");
        return (Err(e), After::Disconnect);
    };
    // The table says which methods this version has; anything else is unknown to it.
    let Some(method) = method.filter(|m| m.available_in(version)) else {
        let e = RpcError::new(code::METHOD_NOT_FOUND, format!("unknown method \"{name}\""));
        return (Err(e), After::Continue);
    };
    let answer = match Call::parse(method, Some(version), p) {
        Ok(call) => dispatch(state, ctx, version, call).await,
        Err(e) => Err(e),
    };
    (answer, After::Continue)
}

/// Runs a parsed call: one line per method.
async fn dispatch(
    state: &Arc<ServerState>,
    ctx: &mut SessionCtx,
    v: Version,
    call: Call,
) -> Answer {
    match call {
        Call::BlockHeader { height, cp_height } => headers::header(state, height, cp_height).await,
        Call::BlockHeaders {
            start,
            count,
            cp_height,
        } => headers::headers(state, v, start, count, cp_height).await,
        Call::HeadersSubscribe => headers::subscribe(state, ctx),
        Call::EstimateFee { blocks } => mempool::estimate_fee(state, blocks).await,
        Call::RelayFee => mempool::relay_fee(state).await,
        Call::GetBalance(s) => scripts::balance(state, s).await,
        Call::GetHistory(s) => scripts::history(state, s).await,
        Call::GetMempool(s) => scripts::mempool(state, s),
        Call::ListUnspent(s) => scripts::unspent(state, s).await,
        Call::Subscribe(s) => scripts::subscribe(state, ctx, s).await,
        Call::Unsubscribe(s) => scripts::unsubscribe(state, ctx, s),
        Call::TransactionGet { txid, verbose } => transactions::get(state, txid, verbose).await,
        Call::Broadcast { raw } => transactions::broadcast(state, ctx, raw).await,
        Call::BroadcastPackage { txs, verbose } => {
            transactions::broadcast_package(state, txs, verbose).await
        }
        Call::GetMerkle { txid, height } => transactions::merkle(state, txid, height).await,
        Call::IdFromPos {
            height,
            pos,
            merkle,
        } => transactions::id_from_pos(state, height, pos, merkle).await,
        Call::TestMempoolAccept { txs } => transactions::test_mempool_accept(state, txs).await,
        Call::OutpointStatus {
            outpoint,
            subscribe,
        } => outpoints::status(state, ctx, outpoint, subscribe).await,
        Call::OutpointUnsubscribe { outpoint } => outpoints::unsubscribe(state, ctx, outpoint),
        Call::FeeHistogram => mempool::fee_histogram(state),
        Call::MempoolInfo => mempool::info(state).await,
        Call::MempoolRecent => mempool::recent(state),
        Call::AddPeer { features } => server::add_peer(state, ctx, features).await,
        Call::Banner => server::banner(state),
        Call::DonationAddress => server::donation_address(state),
        Call::Features => server::features(state, v),
        Call::PeersSubscribe => server::peers_subscribe(state, ctx),
        Call::Ping { pong_len } => server::ping(state, pong_len),
        Call::Version { .. } => Err(RpcError::bad_request("server.version already sent")),
    }
}

// ----- what the families share -----

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

fn hexes(hs: &[Hash32]) -> Vec<String> {
    hs.iter().map(|h| h.to_display_hex()).collect()
}

/// The indexed tip's hash: what node answers cached per block are keyed by.
fn tip_hash(state: &ServerState) -> Option<electrumx_core::BlockHash> {
    state.index.tip().map(|t| t.1)
}

/// Most entries a cached answer may hold to be written on the async worker rather than the
/// blocking pool: a cache hit of that size takes microseconds, less than the pool's round
/// trip (two thread wake-ups), which was most of a light query's latency.
const INLINE_MAX_ITEMS: usize = 1000;

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
