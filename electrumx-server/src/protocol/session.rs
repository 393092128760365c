//! One client connection: newline-delimited JSON-RPC in, replies and notifications out.
//!
//! Reading and writing are separate tasks joined by a bounded queue: a client that stops
//! reading fills its queue and is disconnected; it never holds up other sessions or the
//! notifier. A message longer than `MAX_RECV` is dropped and the stream resynchronises at
//! the next newline, as in ElectrumX.

use crate::admin::metrics::UNKNOWN_METHOD_LABEL;
use crate::admin::registry::SessionEntry;
use crate::methods::{self, After, Reply, SessionCtx};
use crate::protocol::cost::{SessionCost, Throttle, UNKNOWN_METHOD_COST, error_cost};
use crate::protocol::framing::{Line, LineReader};
use crate::protocol::jsonrpc::{self, Incoming, Request, RpcError, code};
use crate::protocol::method::Method;
use crate::protocol::outgoing::{Outbox, Outgoing};
use crate::services::Protocol;
use crate::state::ServerState;
use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use futures_util::stream::FuturesUnordered;
use serde_json::Value;
use std::net::SocketAddr;
use std::ops::ControlFlow;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

/// Serves one connection until the client leaves, misbehaves, idles out, or `shutdown`.
pub async fn serve<S>(
    state: Arc<ServerState>,
    stream: S,
    peer: SocketAddr,
    protocol: Protocol,
    id: u64,
    shutdown: CancellationToken,
) where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (reader, mut writer) = tokio::io::split(stream);
    let (tx, mut rx) =
        crate::protocol::outgoing::queue(state.limits.send_queue, state.limits.send_queue_bytes());
    let kill = shutdown.child_token();
    state.subs.add_session(id, tx.clone(), kill.clone());
    let group = crate::protocol::cost::group_of(peer.ip(), &state.cost);
    let entry = state.sessions.open(id, protocol, peer, group, kill.clone());
    let shown = state.log_addr(&peer);
    tracing::debug!(id, peer = %shown, "session opened");

    let writer_kill = kill.clone();
    let writer_entry = entry.clone();
    let mut writer_task = tokio::spawn(async move {
        'session: while let Some(msg) = rx.recv().await {
            if !write_counted(&mut writer, msg, &writer_entry).await {
                break;
            }
            // Write whatever else is queued before flushing.
            while let Some(more) = rx.try_recv() {
                if !write_counted(&mut writer, more, &writer_entry).await {
                    break 'session;
                }
            }
            if !matches!(
                tokio::time::timeout(WRITE_TIMEOUT, writer.flush()).await,
                Ok(Ok(()))
            ) {
                break;
            }
        }
        writer_kill.cancel();
        let _ = tokio::time::timeout(WRITE_TIMEOUT, writer.shutdown()).await;
    });

    let mut lines = LineReader::new(reader, state.limits.max_recv);
    let mut ctx = SessionCtx::new(id, Some(peer.ip()));
    let mut cost = SessionCost::new(state.cost.clone(), state.cost_groups.clone(), id, peer.ip());
    // Requests in progress (after `server.version`, up to the allowed concurrency); their
    // replies go out as they finish, in any order (clients match them by id).
    let mut running: FuturesUnordered<BoxFuture<'static, Handled>> = FuturesUnordered::new();
    let mut allowed = 1usize;
    // Only requests keep a session alive: blank and oversized lines do not.
    let mut idle_deadline = tokio::time::Instant::now() + state.limits.session_timeout;
    loop {
        let next = tokio::select! {
            _ = kill.cancelled() => break,
            Some(done) = running.next(), if !running.is_empty() => {
                entry.counters.pending.store(running.len() as u64, Ordering::Relaxed);
                if done.finish(&state, &mut ctx, &mut cost, &entry, &tx).is_break() {
                    break;
                }
                continue;
            }
            r = tokio::time::timeout_at(idle_deadline, lines.next_line()),
                if running.len() < allowed && tx.queued_bytes() <= PAUSE_BYTES => r,
            // Paused until the writer drains the queue (checked every few milliseconds).
            _ = tokio::time::sleep(Duration::from_millis(10)),
                if running.is_empty() && tx.queued_bytes() > PAUSE_BYTES => continue,
        };
        let line = match next {
            Err(_) => {
                tracing::debug!(id, "session idle too long; closing");
                break;
            }
            Ok(Ok(Line::Eof)) => {
                // The client is done sending; answer what it asked before leaving.
                loop {
                    let done = tokio::select! {
                        _ = kill.cancelled() => break,
                        done = running.next() => done,
                    };
                    let Some(done) = done else { break };
                    if done
                        .finish(&state, &mut ctx, &mut cost, &entry, &tx)
                        .is_break()
                    {
                        break;
                    }
                }
                break;
            }
            Ok(Err(_)) => break,
            Ok(Ok(Line::TooLong)) => {
                tracing::info!(
                    id,
                    "dropping message over {} bytes and re-synchronizing",
                    state.limits.max_recv
                );
                // Paid for like any bad request: its bytes and an error.
                cost.charge_bytes(state.limits.max_recv);
                cost.charge(error_cost(code::INVALID_REQUEST));
                if cost.throttle(state.subs.count(id)) == Throttle::Disconnect {
                    tracing::info!(id, peer = %shown, "closing session: excessive resource usage");
                    break;
                }
                continue;
            }
            Ok(Ok(Line::Text(line))) => line,
        };
        if line.trim().is_empty() {
            cost.charge_bytes(line.len() + 1);
            continue;
        }
        idle_deadline = tokio::time::Instant::now() + state.limits.session_timeout;
        entry.counters.recv_count.fetch_add(1, Ordering::Relaxed);
        entry
            .counters
            .recv_size
            .fetch_add(line.len() as u64 + 1, Ordering::Relaxed);
        if entry.log_me.load(Ordering::Relaxed) {
            tracing::info!(id, peer = %shown, "request: {}", truncate(&line, 500));
        }
        match cost.throttle(state.subs.count(id)) {
            Throttle::Proceed => {}
            Throttle::Sleep(d) => {
                // Requests already running finish (and send their replies) meanwhile.
                let sleep = tokio::time::sleep(d);
                tokio::pin!(sleep);
                let mut end = false;
                while !end {
                    tokio::select! {
                        _ = &mut sleep => break,
                        _ = kill.cancelled() => end = true,
                        Some(done) = running.next(), if !running.is_empty() => {
                            end = done.finish(&state, &mut ctx, &mut cost, &entry, &tx).is_break();
                        }
                    }
                }
                if end {
                    break;
                }
            }
            Throttle::Disconnect => {
                tracing::info!(id, peer = %shown, "closing session: excessive resource usage");
                let err = RpcError::new(code::EXCESSIVE_RESOURCE_USAGE, "excessive resource usage");
                // Answer the request that went over the limit, by its id if it has one.
                let req_id = serde_json::from_str::<Value>(&line)
                    .ok()
                    .and_then(|v| v.get("id").cloned());
                let reply = jsonrpc::error_response(&req_id.unwrap_or(Value::Null), &err, true);
                let _ = tx.push(reply.to_string().into());
                break;
            }
        }
        allowed = cost.allowed_concurrency(state.limits.initial_concurrent);
        entry
            .counters
            .concurrency
            .store(allowed as u64, Ordering::Relaxed);
        if ctx.version.is_none() {
            // Until the version is negotiated requests go one at a time: the first one sets
            // what every later one sees.
            entry.counters.pending.store(1, Ordering::Relaxed);
            let budget = cost.room(state.subs.count(id));
            let (reply, after) = handle_message(&state, &mut ctx, &line, &entry, budget).await;
            entry.counters.pending.store(0, Ordering::Relaxed);
            if finish_request(
                &state,
                &mut ctx,
                &mut cost,
                &entry,
                &tx,
                line.len(),
                reply,
                after,
            )
            .is_break()
            {
                break;
            }
            continue;
        }
        let (st, en, mut rctx) = (state.clone(), entry.clone(), ctx.for_request());
        let budget = cost.room(state.subs.count(id));
        running.push(Box::pin(async move {
            let (reply, after) = handle_message(&st, &mut rctx, &line, &en, budget).await;
            Handled {
                line_len: line.len(),
                reply,
                after,
                cost: rctx.pending_cost,
                txs_sent: rctx.pending_txs_sent,
            }
        }));
        entry
            .counters
            .pending
            .store(running.len() as u64, Ordering::Relaxed);
    }
    state.subs.remove_session(id);
    state.sessions.close(id);
    drop(tx);
    // Let queued replies (e.g. the error before a disconnect) go out, briefly: then the
    // writer ends with the session, releasing its queue and the socket.
    if tokio::time::timeout(Duration::from_secs(2), &mut writer_task)
        .await
        .is_err()
    {
        writer_task.abort();
    }
    tracing::debug!(id, "session closed");
}

/// A request handled alongside others, with what it accrued.
struct Handled {
    line_len: usize,
    reply: Option<Outgoing>,
    after: After,
    cost: f64,
    txs_sent: u64,
}

impl Handled {
    /// Adds what the request accrued to the session's context, then books it.
    fn finish(
        self,
        state: &ServerState,
        ctx: &mut SessionCtx,
        cost: &mut SessionCost,
        entry: &SessionEntry,
        tx: &Outbox,
    ) -> ControlFlow<()> {
        ctx.pending_cost += self.cost;
        ctx.pending_txs_sent += self.txs_sent;
        let (len, reply, after) = (self.line_len, self.reply, self.after);
        finish_request(state, ctx, cost, entry, tx, len, reply, after)
    }
}

/// Books a handled request (cost, counters, the version once negotiated) and queues its
/// reply; `Break` when the session must end.
#[allow(clippy::too_many_arguments)]
fn finish_request(
    state: &ServerState,
    ctx: &mut SessionCtx,
    cost: &mut SessionCost,
    entry: &SessionEntry,
    tx: &Outbox,
    line_len: usize,
    reply: Option<Outgoing>,
    after: After,
) -> ControlFlow<()> {
    let id = ctx.id;
    cost.charge(std::mem::take(&mut ctx.pending_cost));
    cost.charge_bytes(line_len + reply.as_ref().map_or(0, Outgoing::len));
    entry.counters.set_cost(cost.cost(state.subs.count(id)));
    entry.counters.set_extra_cost(cost.last_extra());
    for _ in 0..std::mem::take(&mut ctx.pending_txs_sent) {
        state.sessions.count_tx_sent(entry);
    }
    if ctx.version.is_some() && entry.protocol_version.lock().is_empty() {
        *entry.client.lock() = ctx.client_name.clone();
        if let Some(v) = ctx.version {
            *entry.protocol_version.lock() = v.to_string();
        }
    }
    if let Some(reply) = reply
        && tx.push(reply).is_err()
    {
        tracing::info!(id, "client not reading its replies; closing");
        return ControlFlow::Break(());
    }
    if after == After::Disconnect {
        return ControlFlow::Break(());
    }
    ControlFlow::Continue(())
}

/// Longest the writer may take to write one message (or flush) to a client: a client that
/// stops reading is disconnected after it, its queue and socket released.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// While more than this is queued for a session, it starts no new request (its requests in
/// progress still finish): a client reading slowly is slowed down, not disconnected.
const PAUSE_BYTES: usize = 1 << 20;

/// Writes one message (with its newline) within [`WRITE_TIMEOUT`], counting it on the
/// session's entry; false if the session must end.
async fn write_counted<W: AsyncWrite + Unpin>(
    writer: &mut W,
    mut msg: Outgoing,
    entry: &SessionEntry,
) -> bool {
    msg.end_line();
    let c = &entry.counters;
    c.send_count.fetch_add(1, Ordering::Relaxed);
    c.send_size.fetch_add(msg.len() as u64, Ordering::Relaxed);
    matches!(
        tokio::time::timeout(WRITE_TIMEOUT, write_message(writer, &msg)).await,
        Ok(Ok(()))
    )
}

/// Writes a message's parts (a long cached answer among them is written from the cache).
async fn write_message<W: AsyncWrite + Unpin>(
    writer: &mut W,
    msg: &Outgoing,
) -> std::io::Result<()> {
    for part in msg.parts() {
        if !part.is_empty() {
            writer.write_all(part.as_bytes()).await?;
        }
    }
    Ok(())
}

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// Handles one message (single or batch); returns the reply text, if any. Requests are
/// counted on `entry` and in the server's metrics. `budget` is the cost the session may
/// still accrue ([`SessionCost::room`]): a batch is charged item by item, and the item that
/// passes it ends the batch with error -101 and the session.
pub async fn handle_message(
    state: &Arc<ServerState>,
    ctx: &mut SessionCtx,
    text: &str,
    entry: &SessionEntry,
    budget: f64,
) -> (Option<Outgoing>, After) {
    let max_send = state.limits.max_send;
    match jsonrpc::parse_message(text, state.limits.max_batch) {
        Incoming::Single(r) => {
            let (reply, after) = handle_one(state, ctx, r, entry).await;
            (reply.map(|r| r.fit(max_send)), after)
        }
        Incoming::Batch(items) => {
            let mut out = String::from("[");
            let mut after = After::Continue;
            let start_cost = ctx.pending_cost;
            for raw in items {
                let item = jsonrpc::parse_batch_item(&raw);
                if ctx.pending_cost - start_cost > budget {
                    let id = item.as_ref().ok().and_then(|r| r.id.clone());
                    let err =
                        RpcError::new(code::EXCESSIVE_RESOURCE_USAGE, "excessive resource usage");
                    if out.len() > 1 {
                        out.push(',');
                    }
                    out.push_str(
                        &jsonrpc::error_response(&id.unwrap_or(Value::Null), &err, true)
                            .to_string(),
                    );
                    after = After::Disconnect;
                    break;
                }
                let (reply, a) = handle_one(state, ctx, item, entry).await;
                if let Some(r) = reply {
                    // Each element that would overflow MAX_SEND becomes an error, as in ElectrumX.
                    let room = max_send.saturating_sub(out.len() + 2);
                    let text = r.fit(room);
                    if out.len() > 1 {
                        out.push(',');
                    }
                    text.append_to(&mut out);
                }
                if a == After::Disconnect {
                    after = After::Disconnect;
                    break;
                }
            }
            out.push(']');
            ((out.len() > 2).then(|| out.into()), after)
        }
    }
}

fn too_large(max: usize) -> RpcError {
    RpcError::new(
        code::INVALID_REQUEST,
        format!("response too large (over {max} bytes"),
    )
}

/// A serialized reply with what it takes to replace it by an error.
struct ReplyText {
    id: Value,
    v2: bool,
    text: Outgoing,
}

impl ReplyText {
    /// The reply, or a "response too large" error if it exceeds `max` bytes.
    fn fit(self, max: usize) -> Outgoing {
        if self.text.len() <= max {
            return self.text;
        }
        jsonrpc::error_response(&self.id, &too_large(max), self.v2)
            .to_string()
            .into()
    }
}

async fn handle_one(
    state: &Arc<ServerState>,
    ctx: &mut SessionCtx,
    parsed: Result<Request, (Option<Value>, RpcError)>,
    entry: &SessionEntry,
) -> (Option<ReplyText>, After) {
    let req = match parsed {
        Ok(r) => r,
        Err((id, err)) => {
            ctx.pending_cost += error_cost(err.code);
            let id = id.unwrap_or(Value::Null);
            let text = jsonrpc::error_response(&id, &err, true).to_string().into();
            return (Some(ReplyText { id, v2: true, text }), After::Continue);
        }
    };
    // The method is looked up once: its price, its label and its handler all follow.
    let method = Method::from_name(&req.method);
    ctx.pending_cost += method.map_or(UNKNOWN_METHOD_COST, Method::cost);
    let started = Instant::now();
    let work = methods::handle(state, ctx, method, &req.method, &req.params);
    let (answer, after) = match tokio::time::timeout(state.limits.request_timeout, work).await {
        Ok(r) => r,
        Err(_) => (
            Err(RpcError::new(
                code::SERVER_BUSY,
                "server busy - request timed out",
            )),
            After::Continue,
        ),
    };
    let label = method.map_or(UNKNOWN_METHOD_LABEL, Method::name);
    state
        .requests
        .record(label, started.elapsed(), answer.is_err());
    state.sessions.count_request(entry, label, answer.is_err());
    let Some(id) = req.id else {
        return (None, after);
    };
    let text = match answer {
        Ok(Reply::Value(v)) => jsonrpc::response(&id, v, req.v2).to_string().into(),
        Ok(Reply::Raw(raw)) => jsonrpc::raw_response(&id, &raw, req.v2).into(),
        Ok(Reply::Spliced {
            prefix,
            body,
            suffix,
        }) => jsonrpc::spliced_response(&id, &prefix, body, &suffix, req.v2),
        Err(e) => {
            ctx.pending_cost += error_cost(e.code);
            jsonrpc::error_response(&id, &e, req.v2).to_string().into()
        }
    };
    (
        Some(ReplyText {
            id,
            v2: req.v2,
            text,
        }),
        after,
    )
}
