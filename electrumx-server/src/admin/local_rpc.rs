//! LocalRPC: ElectrumX's admin interface on the `rpc://` service (default `localhost:8000`).
//!
//! Wire-compatible with ElectrumX 2.0: newline-delimited JSON-RPC 2.0, named parameters as
//! ElectrumX's `electrumx_rpc` sends them (positional ones are accepted too), the same
//! commands with the same result shapes, so `electrumx_rpc` works unchanged; `electrumx-rpc`
//! is our own client. No authentication, as in ElectrumX: it listens on loopback unless the
//! operator binds it elsewhere (the binary warns loudly then). Served from process start,
//! before the index has caught up.
//!
//! Beyond ElectrumX: `sync` (sync progress), `db` (column family sizes), `notify` (poll the
//! node now: `-blocknotify='electrumx-rpc notify'` makes new blocks known at once instead of
//! at the next `DAEMON_POLL_INTERVAL_BLOCKS`), `snapshot` (a consistent copy of the index
//! to seed a replica from), and extra keys in `getinfo` (`sync`, `db`, `mempool`).

use crate::protocol::framing::{Line, LineReader};
use crate::protocol::jsonrpc::{self, Incoming, Params, RpcError, code};
use crate::protocol::registry::{SessionEntry, formatted_time};
use crate::protocol::version::server_version;
use crate::state::ServerState;
use electrumx_core::daemon::{DaemonUrl, RpcDaemon};
use electrumx_core::{ChainIndex, Controller, ScriptHash};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// Longest admin request accepted, in bytes.
const MAX_REQUEST: usize = 1_000_000;

/// What the admin commands act on.
pub struct AdminContext {
    /// The indexer.
    pub controller: Arc<Controller>,
    /// The client-facing state: sessions, groups, caches, mempool, peers.
    pub state: Arc<ServerState>,
    /// The node client, when the index is fed by a node (`daemon_url` needs it).
    pub rpc_daemon: Option<Arc<RpcDaemon>>,
    /// `DAEMON_URL` as configured (what `daemon_url` without an argument restores).
    pub configured_daemon_url: String,
    /// Cancelled by the `stop` command: the binary then shuts down cleanly.
    pub stop: CancellationToken,
}

/// Accepts admin connections on `listener` until `shutdown`.
pub async fn serve(listener: TcpListener, ctx: Arc<AdminContext>, shutdown: CancellationToken) {
    let stop = shutdown.clone();
    crate::protocol::accept::accept_each(listener, "LocalRPC", shutdown, move |stream, _| {
        connection(stream, ctx.clone(), stop.clone())
    })
    .await;
}

async fn connection(stream: TcpStream, ctx: Arc<AdminContext>, shutdown: CancellationToken) {
    let (reader, mut writer) = stream.into_split();
    let mut lines = LineReader::new(reader, MAX_REQUEST);
    loop {
        let line = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = lines.next_line() => match r {
                Ok(Line::Text(line)) => line,
                Ok(Line::TooLong) => {
                    let err = RpcError::new(code::INVALID_REQUEST, "request too large");
                    let reply = jsonrpc::error_response(&Value::Null, &err, true).to_string();
                    let _ = writer.write_all(format!("{reply}\n").as_bytes()).await;
                    return;
                }
                Ok(Line::Eof) | Err(_) => return,
            },
        };
        let text = line.as_str();
        if text.trim().is_empty() {
            continue;
        }
        if is_http_request_line(text) {
            // A web page in a browser on this host can make it POST here, with a JSON
            // line in the body: nothing of such a connection is run.
            tracing::warn!("LocalRPC: HTTP request refused; connection closed");
            return;
        }
        let parsed = jsonrpc::parse_message(text, 1);
        // A line that is not JSON-RPC at all ends the connection after its error: the
        // admin protocol has no reason to carry on after garbage.
        let garbage =
            matches!(&parsed, Incoming::Single(Err((_, e))) if e.code == code::PARSE_ERROR);
        let reply = match parsed {
            Incoming::Single(Ok(req)) => {
                let answer = dispatch(&ctx, &req.method, &req.params).await;
                let Some(id) = req.id else { continue };
                match answer {
                    Ok(v) => jsonrpc::response(&id, v, req.v2),
                    Err(e) => jsonrpc::error_response(&id, &e, req.v2),
                }
            }
            Incoming::Single(Err((id, e))) => {
                jsonrpc::error_response(&id.unwrap_or(Value::Null), &e, true)
            }
            Incoming::Batch(_) => {
                let e = RpcError::new(code::INVALID_REQUEST, "batches are not supported");
                jsonrpc::error_response(&Value::Null, &e, true)
            }
        };
        let mut out = reply.to_string();
        out.push('\n');
        if writer.write_all(out.as_bytes()).await.is_err() || garbage {
            return;
        }
    }
}

/// Whether `line` is an HTTP request line (`METHOD target HTTP/x.y`).
fn is_http_request_line(line: &str) -> bool {
    let mut words = line.split_ascii_whitespace();
    let (Some(method), Some(_target), Some(version)) = (words.next(), words.next(), words.next())
    else {
        return false;
    };
    !method.is_empty()
        && method.bytes().all(|b| b.is_ascii_uppercase())
        && version.starts_with("HTTP/")
}

/// Answers one admin command.
pub async fn dispatch(ctx: &AdminContext, method: &str, p: &Params) -> Result<Value, RpcError> {
    match method {
        "getinfo" => Ok(getinfo(ctx)),
        "sessions" => Ok(sessions(ctx)),
        "groups" => Ok(groups(ctx)),
        "peers" => Ok(ctx.state.peers.rpc_data()),
        "add_peer" => {
            let name = string_arg(p, 0, "real_name")?;
            ctx.state
                .peers
                .add_local_rpc_peer(&name)
                .await
                .map_err(RpcError::bad_request)?;
            Ok(json!(format!("peer '{name}' added")))
        }
        "disconnect" => Ok(disconnect(ctx, &session_refs(p)?)),
        "log" => Ok(log(ctx, &session_refs(p)?)),
        "daemon_url" => daemon_url(ctx, p),
        "query" => query(ctx, p).await,
        "reorg" => reorg(ctx, p),
        "inspect_session" => inspect_session(ctx, p),
        "sync" => Ok(sync(ctx)),
        "notify" => {
            ctx.controller.notify_new_block();
            Ok(json!("polling the node for new blocks"))
        }
        "db" => db(ctx).await,
        "snapshot" => snapshot(ctx, p).await,
        "stop" => {
            tracing::info!("LocalRPC: stop requested");
            ctx.stop.cancel();
            Ok(json!("stopping"))
        }
        other => Err(RpcError::new(
            code::METHOD_NOT_FOUND,
            format!("unknown method \"{other}\""),
        )),
    }
}

fn string_arg(p: &Params, i: usize, name: &str) -> Result<String, RpcError> {
    match p.get(i, name) {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(v) => Err(RpcError::bad_request(format!(
            "{name}: {v} is not a string"
        ))),
        None => Err(RpcError::new(
            code::INVALID_PARAMS,
            format!("missing argument {name}"),
        )),
    }
}

fn uint_arg(p: &Params, i: usize, name: &str, default: u64) -> Result<u64, RpcError> {
    match p.get(i, name) {
        None => Ok(default),
        Some(v) => v
            .as_u64()
            .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
            .ok_or_else(|| {
                RpcError::bad_request(format!("{name}: {v} is not a non-negative integer"))
            }),
    }
}

/// ElectrumX's coin class name: `Bitcoin`, `BitcoinTestnet`, `BitcoinSVRegtest`, …
fn coin_class(ctx: &AdminContext) -> String {
    let c = &ctx.state.coin;
    let net = format!("{:?}", c.network);
    if net == "Mainnet" {
        c.coin.name().to_string()
    } else {
        format!("{}{net}", c.coin.name())
    }
}

fn getinfo(ctx: &AdminContext) -> Value {
    let st = &ctx.state;
    let list = st.sessions.list();
    let mut with_sh = 0;
    let mut with_txo = 0;
    let mut with_any = 0;
    let (mut subs_sh, mut subs_txo) = (0, 0);
    for s in &list {
        let (sh, txo) = s.counters.subscription_counts();
        with_sh += (sh > 0) as usize;
        with_txo += (txo > 0) as usize;
        with_any += (sh + txo > 0) as usize;
        subs_sh += sh;
        subs_txo += txo;
    }
    let sum = |f: &dyn Fn(&SessionEntry) -> u64| list.iter().map(|s| f(s)).sum::<u64>();
    let group_count = {
        let mut names: BTreeSet<String> = st.sessions.groups().into_keys().collect();
        names.extend(st.cost_groups.snapshot().into_keys());
        names.len()
    };
    let counts = st.requests.counts();
    let total: u64 = counts.values().sum();
    let status = ctx.controller.status().borrow().clone();
    let mempool = st.mempool.info();
    let daemon_stats = st.daemon.stats();
    json!({
        "caches": {
            "history": st.script_cache.stats().summary(),
            "utxos": st.script_cache.utxo_stats().summary(),
            "balance": st.script_cache.balance_stats().summary(),
            "merkle txid": st.merkle_cache.stats().summary(),
            "headers": st.header_chunks.stats().summary(),
            "tx": st.tx_cache.stats().summary(),
        },
        "coin": coin_class(ctx),
        "daemon": daemon_stats.as_ref().map_or_else(|| st.daemon.describe(), |d| d.current_url.clone()),
        "daemon height": status.daemon_height,
        "db height": status.height,
        "groups": group_count,
        "pid": std::process::id(),
        "peers": st.peers.info(),
        "request counts": counts,
        "request total": total,
        "sessions": {
            "count": list.len(),
            "count with subs_sh": with_sh,
            "count with subs_txo": with_txo,
            "count with subs_any": with_any,
            "errors": sum(&|s| s.counters.errors.load(Ordering::Relaxed)),
            "logged": list.iter().filter(|s| s.log_me.load(Ordering::Relaxed)).count(),
            "pending requests": sum(&|s| s.counters.pending.load(Ordering::Relaxed)),
            "subs_sh": subs_sh,
            "subs_txo": subs_txo,
        },
        "txs sent": st.sessions.txs_sent(),
        "uptime": formatted_time(st.sessions.uptime().as_secs(), " "),
        "version": server_version(),
        "sync": sync(ctx),
        "db": {
            "size bytes": ctx.controller.db_size(),
            "txs": ctx.controller.progress().txs,
        },
        "mempool": {"txs": mempool.count, "vsize": mempool.vsize, "fees": mempool.fees},
    })
}

fn session_row(s: &SessionEntry) -> Value {
    let c = &s.counters;
    let get = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    let client: String = s.client.lock().chars().take(17).collect();
    json!([
        s.id,
        s.flags(),
        s.peer.to_string(),
        client,
        s.protocol_version.lock().clone(),
        c.cost(),
        c.extra_cost(),
        get(&c.pending),
        get(&c.txs_sent),
        s.counters.subscriptions(),
        get(&c.recv_count),
        get(&c.recv_size),
        get(&c.send_count),
        get(&c.send_size),
        s.started.elapsed().as_secs_f64(),
    ])
}

fn sessions(ctx: &AdminContext) -> Value {
    let st = &ctx.state;
    Value::Array(st.sessions.list().iter().map(|s| session_row(s)).collect())
}

fn groups(ctx: &AdminContext) -> Value {
    let st = &ctx.state;
    let costs = st.cost_groups.snapshot();
    // Groups with live sessions, and those that only retain the cost of closed ones.
    let mut all = st.sessions.groups();
    for name in costs.keys() {
        all.entry(name.clone()).or_default();
    }
    let mut rows = Vec::new();
    for (name, members) in all {
        let (cost, retained) = costs.get(&name).copied().unwrap_or((0.0, 0.0));
        let sum = |f: &dyn Fn(&SessionEntry) -> u64| members.iter().map(|s| f(s)).sum::<u64>();
        let get = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        rows.push(json!([
            name,
            members.len(),
            cost,
            retained,
            sum(&|s| get(&s.counters.pending)),
            sum(&|s| get(&s.counters.txs_sent)),
            sum(&|s| s.counters.subscriptions() as u64),
            sum(&|s| get(&s.counters.recv_count)),
            sum(&|s| get(&s.counters.recv_size)),
            sum(&|s| get(&s.counters.send_count)),
            sum(&|s| get(&s.counters.send_size)),
        ]));
    }
    Value::Array(rows)
}

/// Sessions named by a `disconnect` or `log` command.
struct SessionRefs {
    sessions: Vec<Arc<SessionEntry>>,
    groups: Vec<(String, Vec<Arc<SessionEntry>>)>,
    specials: BTreeSet<String>,
    unknown: Vec<String>,
}

fn session_refs(p: &Params) -> Result<Vec<String>, RpcError> {
    let bad = || RpcError::bad_request("expected a list of session IDs");
    let items: Vec<Value> = match (p, p.get(0, "session_ids")) {
        (_, Some(Value::Array(a))) => a.clone(),
        // Positional ids given flat: `["1", "2"]`.
        (Params::Positional(v), _) => v.clone(),
        (Params::Named(_), _) => return Err(bad()),
    };
    items
        .into_iter()
        .map(|v| match v {
            Value::String(s) => Ok(s),
            Value::Number(n) => Ok(n.to_string()),
            _ => Err(bad()),
        })
        .collect()
}

fn resolve_refs(ctx: &AdminContext, items: &[String], specials: &[&str]) -> SessionRefs {
    let st = &ctx.state;
    let groups = st.sessions.groups();
    let mut out = SessionRefs {
        sessions: Vec::new(),
        groups: Vec::new(),
        specials: BTreeSet::new(),
        unknown: Vec::new(),
    };
    for item in items {
        if !item.is_empty() && item.bytes().all(|b| b.is_ascii_digit()) {
            match item.parse().ok().and_then(|id| st.sessions.get(id)) {
                Some(s) => out.sessions.push(s),
                None => out.unknown.push(item.clone()),
            }
            continue;
        }
        let lc = item.to_lowercase();
        if specials.contains(&lc.as_str()) {
            out.specials.insert(lc);
        } else if let Some(members) = groups.get(&lc) {
            out.groups.push((lc, members.clone()));
        } else {
            out.unknown.push(item.clone());
        }
    }
    out
}

fn disconnect(ctx: &AdminContext, items: &[String]) -> Value {
    let refs = resolve_refs(ctx, items, &["all"]);
    let mut lines = Vec::new();
    let mut targets: Vec<Arc<SessionEntry>> = Vec::new();
    if refs.specials.contains("all") {
        targets = ctx.state.sessions.list();
        lines.push("disconnecting all sessions".to_string());
    } else {
        for s in &refs.sessions {
            lines.push(format!("disconnecting session {}", s.id));
            targets.push(s.clone());
        }
        for (name, members) in &refs.groups {
            lines.push(format!("disconnecting group {name}"));
            targets.extend(members.iter().cloned());
        }
    }
    lines.extend(refs.unknown.iter().map(|u| format!("unknown: {u}")));
    for s in targets {
        tracing::info!(id = s.id, peer = %ctx.state.log_addr(&s.peer), "closing session: local RPC request to disconnect");
        s.kill.cancel();
    }
    json!(lines)
}

fn log(ctx: &AdminContext, items: &[String]) -> Value {
    let refs = resolve_refs(ctx, items, &["all", "none", "new"]);
    let reg = &ctx.state.sessions;
    let mut lines = Vec::new();
    let say = |lines: &mut Vec<String>, what: String, on: bool| {
        lines.push(if on {
            format!("logging {what}")
        } else {
            format!("not logging {what}")
        })
    };
    if refs.specials.contains("all") {
        for s in reg.list() {
            s.log_me.store(true, Ordering::Relaxed);
        }
        reg.set_log_new(true);
        lines.push("logging all sessions".into());
    }
    if refs.specials.contains("none") {
        for s in reg.list() {
            s.log_me.store(false, Ordering::Relaxed);
        }
        reg.set_log_new(false);
        lines.push("logging no sessions".into());
    }
    if refs.specials.contains("new") {
        let on = !reg.log_new();
        reg.set_log_new(on);
        say(&mut lines, "new sessions".into(), on);
    }
    let mut done = BTreeSet::new();
    let toggle = |s: &SessionEntry, lines: &mut Vec<String>| {
        let on = !s.log_me.load(Ordering::Relaxed);
        s.log_me.store(on, Ordering::Relaxed);
        say(lines, format!("session {}", s.id), on);
    };
    for s in &refs.sessions {
        if done.insert(s.id) {
            toggle(s, &mut lines);
        }
    }
    for (_, members) in &refs.groups {
        for s in members {
            if done.insert(s.id) {
                toggle(s, &mut lines);
            }
        }
    }
    lines.extend(refs.unknown.iter().map(|u| format!("unknown: {u}")));
    json!(lines)
}

fn daemon_url(ctx: &AdminContext, p: &Params) -> Result<Value, RpcError> {
    let Some(daemon) = &ctx.rpc_daemon else {
        return Err(RpcError::bad_request(
            "the index is fed from block files, not a node",
        ));
    };
    let given = match p.get(0, "daemon_url") {
        Some(Value::String(s)) => s.clone(),
        None => String::new(),
        Some(v) => return Err(RpcError::bad_request(format!("{v} is not a string"))),
    };
    let text = if given.is_empty() {
        ctx.configured_daemon_url.clone()
    } else {
        given
    };
    let urls = DaemonUrl::parse_list(&text, ctx.state.coin.rpc_port)
        .map_err(|e| RpcError::bad_request(format!("an error occurred: {e}")))?;
    daemon
        .set_urls(urls)
        .map_err(|e| RpcError::bad_request(format!("an error occurred: {e}")))?;
    Ok(json!(format!(
        "now using daemon at {}",
        daemon.logged_url()
    )))
}

fn reorg(ctx: &AdminContext, p: &Params) -> Result<Value, RpcError> {
    let count = uint_arg(p, 0, "count", 3)?;
    if !ctx.controller.status().borrow().caught_up {
        return Err(RpcError::bad_request("still catching up with daemon"));
    }
    let limit = ctx.controller.reorg_limit() as u64;
    if count > limit {
        return Err(RpcError::bad_request(format!(
            "cannot take back {count} blocks: REORG_LIMIT is {limit}"
        )));
    }
    ctx.controller.request_reorg(count as u32);
    Ok(json!(format!(
        "scheduled a reorg of {} blocks",
        grouped(count)
    )))
}

fn inspect_session(ctx: &AdminContext, p: &Params) -> Result<Value, RpcError> {
    let id = uint_arg(p, 0, "session_id", u64::MAX)?;
    let s = ctx
        .state
        .sessions
        .get(id)
        .ok_or_else(|| RpcError::bad_request(format!("no session with id={id}")))?;
    let (sh, txo) = s.counters.subscription_counts();
    let counts: BTreeMap<&str, u64> = s.method_counts.lock().clone().into_iter().collect();
    let c = &s.counters;
    Ok(json!({
        "client_name": s.client.lock().clone(),
        "request counts": counts,
        "request total": c.requests.load(Ordering::Relaxed),
        "subs_sh": sh,
        "subs_txo": txo,
        "errors": c.errors.load(Ordering::Relaxed),
        "is_logged": s.log_me.load(Ordering::Relaxed),
        "pending requests": c.pending.load(Ordering::Relaxed),
        "txs sent": c.txs_sent.load(Ordering::Relaxed),
        "conn_time": formatted_time(s.started.elapsed().as_secs(), " "),
        "peer": s.peer.to_string(),
        "protocol": s.protocol.name(),
        "protocol version": s.protocol_version.lock().clone(),
    }))
}

fn sync(ctx: &AdminContext) -> Value {
    let status = ctx.controller.status().borrow().clone();
    let p = ctx.controller.progress();
    let processed = p.blocks.saturating_sub(1);
    let target = p.daemon_height.max(processed);
    json!({
        "caught up": status.caught_up,
        "db height": status.height,
        "processed height": processed,
        "daemon height": status.daemon_height,
        "lag blocks": target - processed,
        "percent": if target == 0 { 100.0 } else { (processed as f64 * 1000.0 / target as f64).round() / 10.0 },
        "txs": p.txs,
        "blocks this run": p.blocks_this_run,
        "txs this run": p.txs_this_run,
        "cache MB": p.cache_bytes >> 20,
        "flushes": p.flushes,
        "reorgs": p.reorgs,
        "uptime": formatted_time(ctx.state.sessions.uptime().as_secs(), " "),
        "error": status.error,
    })
}

async fn db(ctx: &AdminContext) -> Result<Value, RpcError> {
    let controller = ctx.controller.clone();
    let stats = tokio::task::spawn_blocking(move || controller.db_stats())
        .await
        .map_err(|e| RpcError::new(code::INTERNAL_ERROR, e.to_string()))?;
    let families: BTreeMap<&str, Value> = stats
        .column_families
        .iter()
        .map(|c| {
            (
                c.name,
                json!({"sst bytes": c.sst_bytes, "memtable bytes": c.memtable_bytes, "keys": c.keys}),
            )
        })
        .collect();
    Ok(json!({
        "directory": ctx.controller.db_dir().display().to_string(),
        "size bytes": stats.disk_bytes,
        "column families": families,
    }))
}

/// `snapshot DIR`: a consistent copy of the index in `DIR` (an absolute path on the
/// server's host that does not exist yet, or an empty directory), taken while serving
/// ([`Controller::snapshot`]), with the known peers (`peers.json`); answers the snapshot's
/// metadata (its height, tip, format, chain, when, size and time taken).
async fn snapshot(ctx: &AdminContext, p: &Params) -> Result<Value, RpcError> {
    let dir = std::path::PathBuf::from(string_arg(p, 0, "dir")?);
    if !dir.is_absolute() {
        return Err(RpcError::bad_request(format!(
            "dir: {} is not an absolute path (it is a directory on the server's host)",
            dir.display()
        )));
    }
    let controller = ctx.controller.clone();
    let target = dir.clone();
    let info = tokio::task::spawn_blocking(move || controller.snapshot(&target))
        .await
        .map_err(|e| RpcError::new(code::INTERNAL_ERROR, e.to_string()))?
        .map_err(|e| match e {
            electrumx_core::IndexError::Snapshot(e) => RpcError::bad_request(e.to_string()),
            e => RpcError::new(
                code::INTERNAL_ERROR,
                format!(
                    "snapshot failed: {}",
                    electrumx_core::error::error_chain(&e)
                ),
            ),
        })?;
    // Known peers are not part of the index, but worth as much to a replica (the file is
    // written atomically, so a copy is never half-written).
    let peers = crate::discovery::peers::store::FILE_NAME;
    let source = ctx.controller.db_dir().join(peers);
    if source.exists()
        && let Err(e) = std::fs::copy(&source, dir.join(peers))
    {
        tracing::warn!("snapshot: cannot copy {}: {e}", source.display());
    }
    let mut answer: Value = serde_json::from_str(&info.to_json())
        .map_err(|e| RpcError::new(code::INTERNAL_ERROR, e.to_string()))?;
    answer["directory"] = json!(dir.display().to_string());
    Ok(answer)
}

async fn query(ctx: &AdminContext, p: &Params) -> Result<Value, RpcError> {
    let limit = uint_arg(p, 1, "limit", 1000)? as usize;
    let items: Vec<String> = match p.get(0, "items") {
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| v.as_str().map(str::to_string))
            .collect::<Option<_>>()
            .ok_or_else(|| RpcError::bad_request("items must be strings"))?,
        Some(Value::String(s)) => vec![s.clone()],
        _ => {
            return Err(RpcError::new(
                code::INVALID_PARAMS,
                "missing argument items",
            ));
        }
    };
    let st = ctx.state.clone();
    tokio::task::spawn_blocking(move || query_lines(&st, &items, limit))
        .await
        .map_err(|e| RpcError::new(code::INTERNAL_ERROR, e.to_string()))?
        .map(|lines| json!(lines))
}

fn query_lines(st: &ServerState, items: &[String], limit: usize) -> Result<Vec<String>, RpcError> {
    let internal =
        |e: electrumx_core::IndexError| RpcError::new(code::INTERNAL_ERROR, e.to_string());
    let mut lines = Vec::new();
    for item in items {
        let script = if let Ok(bytes) = const_hex::decode(item) {
            lines.push(format!("Script: {item}"));
            bytes
        } else if let Some(s) = st.coin.address_script(item) {
            lines.push(format!("Address: {item}"));
            s
        } else {
            lines.push(format!("Not a script or an address: {item}"));
            continue;
        };
        let sh = ScriptHash::of_script(&script);
        let history = st.index.history(&sh, 0, limit).map_err(internal)?;
        for (n, h) in history.iter().enumerate() {
            lines.push(format!(
                "History #{}: height {} txid {}",
                grouped(n as u64),
                grouped(h.height as u64),
                h.txid.to_display_hex()
            ));
        }
        if history.is_empty() {
            lines.push("No history found".into());
        }
        let utxos = st.index.utxos(&sh, limit).map_err(internal)?;
        for (n, u) in utxos.iter().enumerate() {
            lines.push(format!(
                "UTXO #{}: txid {} tx_pos {} height {} value {}",
                grouped(n as u64 + 1),
                u.txid.to_display_hex(),
                grouped(u.vout as u64),
                grouped(u.height as u64),
                grouped(u.value)
            ));
        }
        if utxos.is_empty() {
            lines.push("No UTXOs found".into());
        }
        let balance = st.index.balance(&sh).map_err(internal)?;
        lines.push(format!(
            "Balance: {} {}",
            coin_amount(balance),
            st.coin.coin.ticker()
        ));
    }
    Ok(lines)
}

/// `1234567` → `1,234,567` (Python's `{:,d}`).
pub fn grouped(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Satoshis as coins the way ElectrumX prints them: exact, no trailing zeros, grouped.
pub fn coin_amount(sats: u64) -> String {
    let whole = grouped(sats / 100_000_000);
    let frac = sats % 100_000_000;
    if frac == 0 {
        return whole;
    }
    let f = format!("{frac:08}");
    format!("{whole}.{}", f.trim_end_matches('0'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_print_as_electrumx_prints_them() {
        assert_eq!(grouped(0), "0");
        assert_eq!(grouped(999), "999");
        assert_eq!(grouped(1000), "1,000");
        assert_eq!(grouped(1234567), "1,234,567");
        assert_eq!(coin_amount(0), "0");
        assert_eq!(coin_amount(5_000_000_000), "50");
        assert_eq!(coin_amount(1_234_500_000), "12.345");
        assert_eq!(coin_amount(1), "0.00000001");
        assert_eq!(coin_amount(123_456_789_000_000), "1,234,567.89");
    }

    proptest::proptest! {
        /// Every HTTP request line is recognised (so its connection is closed unrun),
        /// whatever its method, target and version; and no JSON-RPC request is mistaken
        /// for one.
        #[test]
        fn http_request_lines_are_recognised_and_json_never_is(
            method in "[A-Z]{1,10}",
            target in "[!-~]{1,40}",
            minor in 0u8..3,
            json_method in "[a-z._]{0,30}",
        ) {
            let line = format!("{method} {target} HTTP/1.{minor}");
            proptest::prop_assert!(is_http_request_line(&line));
            let request = format!(r#"{{"id": 1, "method": "{json_method}", "params": []}}"#);
            proptest::prop_assert!(!is_http_request_line(&request));
        }

        /// Any line at all: classified without a panic.
        #[test]
        fn any_line_is_classified(line in "\\PC{0,100}") {
            let _ = is_http_request_line(&line);
        }
    }
}
