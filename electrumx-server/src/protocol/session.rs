//! One client connection: newline-delimited JSON-RPC in, replies and notifications out.
//!
//! Reading and writing are separate tasks joined by a bounded queue: a client that stops
//! reading fills its queue and is disconnected; it never holds up other sessions or the
//! notifier. A message longer than `MAX_RECV` is dropped and the stream resynchronises at
//! the next newline, as in ElectrumX.

use crate::admin::metrics::UNKNOWN_METHOD_LABEL;
use crate::methods::{self, After, Reply, SessionCtx};
use crate::protocol::cost::{SessionCost, Throttle, UNKNOWN_METHOD_COST, error_cost};
use crate::protocol::framing::{Line, LineReader};
use crate::protocol::jsonrpc::{self, Incoming, Request, RpcError, code};
use crate::protocol::method::Method;
use crate::protocol::outgoing::Outgoing;
use crate::protocol::registry::SessionEntry;
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
    let (reader, writer) = tokio::io::split(stream);
    let (outbox, inbox) =
        crate::protocol::outgoing::queue(state.limits.send_queue, state.limits.send_queue_bytes());
    let kill = shutdown.child_token();
    let group = crate::protocol::cost::group_of(peer.ip(), &state.cost);
    let entry = state
        .sessions
        .open(id, protocol, peer, group, kill.clone(), outbox);
    state.subs.add_session(entry.clone());
    let shown = state.log_addr(&peer);
    tracing::debug!(id, peer = %shown, "session opened");

    // The writer ends when the session is done (after writing what is queued), or ends
    // the session when a write fails or stalls.
    let done = CancellationToken::new();
    let mut writer_task = tokio::spawn(write_messages(writer, inbox, entry.clone(), done.clone()));
    let session = Session {
        ctx: SessionCtx::new(id, Some(peer.ip())),
        cost: SessionCost::new(state.cost.clone(), state.cost_groups.clone(), id, peer.ip()),
        lines: LineReader::new(reader, state.limits.max_recv),
        running: FuturesUnordered::new(),
        allowed: 1,
        shown,
        entry,
        state,
    };
    let state = session.run().await;
    state.subs.remove_session(id);
    state.sessions.close(id);
    done.cancel();
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

/// Writes the session's messages until `done` (then what is still queued) or a write fails
/// or stalls (then the session is ended through its `kill`).
async fn write_messages<W: AsyncWrite + Unpin>(
    mut writer: W,
    mut inbox: crate::protocol::outgoing::Inbox,
    entry: Arc<SessionEntry>,
    done: CancellationToken,
) {
    'session: loop {
        let msg = tokio::select! {
            msg = inbox.recv() => msg,
            _ = done.cancelled() => inbox.try_recv(),
        };
        let Some(msg) = msg else { break };
        if !write_counted(&mut writer, msg, &entry).await {
            break;
        }
        // Write whatever else is queued before flushing.
        while let Some(more) = inbox.try_recv() {
            if !write_counted(&mut writer, more, &entry).await {
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
    entry.kill.cancel();
    let _ = tokio::time::timeout(WRITE_TIMEOUT, writer.shutdown()).await;
}

/// A session being served: what it reads, what it has running, what it owes.
struct Session<R> {
    state: Arc<ServerState>,
    /// The session's record (identity, outbox, counters), shared with the registry.
    entry: Arc<SessionEntry>,
    /// What requests see of the session (version, client name, pending cost).
    ctx: SessionCtx,
    cost: SessionCost,
    lines: LineReader<R>,
    /// Requests in progress (after `server.version`, up to `allowed`); their replies go
    /// out as they finish, in any order (clients match them by id).
    running: FuturesUnordered<BoxFuture<'static, Handled>>,
    /// Requests the cost model lets it have in progress.
    allowed: usize,
    /// The client's address as logs show it.
    shown: String,
}

impl<R: AsyncRead + Unpin> Session<R> {
    /// Reads and answers requests until the session ends; returns the server's state.
    async fn run(mut self) -> Arc<ServerState> {
        let state = self.state.clone();
        let limits = &state.limits;
        let kill = self.entry.kill.clone();
        // Only requests keep a session alive: blank and oversized lines do not.
        let mut idle_deadline = tokio::time::Instant::now() + limits.session_timeout;
        loop {
            let queued = self.entry.outbox.queued_bytes();
            let next = tokio::select! {
                _ = kill.cancelled() => break,
                Some(done) = self.running.next(), if !self.running.is_empty() => {
                    if self.book(done).is_break() {
                        break;
                    }
                    continue;
                }
                r = tokio::time::timeout_at(idle_deadline, self.lines.next_line()),
                    if self.running.len() < self.allowed && queued <= PAUSE_BYTES => r,
                // Paused until the writer drains the queue (checked every few milliseconds).
                _ = tokio::time::sleep(Duration::from_millis(10)),
                    if self.running.is_empty() && queued > PAUSE_BYTES => continue,
            };
            let line = match next {
                Err(_) => {
                    tracing::debug!(id = self.ctx.id, "session idle too long; closing");
                    break;
                }
                Ok(Ok(Line::Eof)) => {
                    // The client is done sending; answer what it asked before leaving.
                    self.finish_running().await;
                    break;
                }
                Ok(Err(_)) => break,
                Ok(Ok(Line::TooLong)) => {
                    if self.too_long().is_break() {
                        break;
                    }
                    continue;
                }
                Ok(Ok(Line::Text(line))) => line,
            };
            if line.trim().is_empty() {
                self.cost.charge_bytes(line.len() + 1);
                continue;
            }
            idle_deadline = tokio::time::Instant::now() + limits.session_timeout;
            if self.request(line).await.is_break() {
                break;
            }
        }
        state
    }

    /// A message over `MAX_RECV` was skipped: paid for like any bad request.
    fn too_long(&mut self) -> ControlFlow<()> {
        let max = self.state.limits.max_recv;
        tracing::info!(
            id = self.ctx.id,
            "dropping message over {max} bytes and re-synchronizing"
        );
        self.cost.charge_bytes(max);
        self.cost.charge(error_cost(code::INVALID_REQUEST));
        if self.cost.throttle(self.entry.counters.subscriptions()) == Throttle::Disconnect {
            tracing::info!(id = self.ctx.id, peer = %self.shown, "closing session: excessive resource usage");
            return ControlFlow::Break(());
        }
        ControlFlow::Continue(())
    }

    /// Takes one request line: throttled or refused as the cost model says, then run
    /// alone (before `server.version`) or alongside the others.
    async fn request(&mut self, line: String) -> ControlFlow<()> {
        let (state, entry) = (self.state.clone(), self.entry.clone());
        let counters = self.entry.clone();
        let c = &counters.counters;
        c.recv_count.fetch_add(1, Ordering::Relaxed);
        c.recv_size
            .fetch_add(line.len() as u64 + 1, Ordering::Relaxed);
        if entry.log_me.load(Ordering::Relaxed) {
            tracing::info!(id = self.ctx.id, peer = %self.shown, "request: {}", truncate(&line, 500));
        }
        match self.cost.throttle(c.subscriptions()) {
            Throttle::Proceed => {}
            // Requests already running finish (and send their replies) meanwhile.
            Throttle::Sleep(d) => self.serve_running_for(d).await?,
            Throttle::Disconnect => {
                tracing::info!(id = self.ctx.id, peer = %self.shown, "closing session: excessive resource usage");
                let err = RpcError::new(code::EXCESSIVE_RESOURCE_USAGE, "excessive resource usage");
                // Answer the request that went over the limit, by its id if it has one.
                let req_id = serde_json::from_str::<Value>(&line)
                    .ok()
                    .and_then(|v| v.get("id").cloned());
                let reply = jsonrpc::error_response(&req_id.unwrap_or(Value::Null), &err, true);
                let _ = entry.outbox.push(reply.to_string().into());
                return ControlFlow::Break(());
            }
        }
        self.allowed = self
            .cost
            .allowed_concurrency(state.limits.initial_concurrent);
        c.concurrency.store(self.allowed as u64, Ordering::Relaxed);
        let budget = self.cost.room(c.subscriptions());
        if self.ctx.version.is_none() {
            // Until the version is negotiated requests go one at a time: the first one sets
            // what every later one sees.
            c.pending.store(1, Ordering::Relaxed);
            let (reply, after) = handle_message(&state, &mut self.ctx, &line, &entry, budget).await;
            c.pending.store(0, Ordering::Relaxed);
            let handled = Handled {
                line_len: line.len(),
                reply,
                after,
                cost: 0.0,
                txs_sent: 0,
            };
            return self.book(handled);
        }
        let mut rctx = self.ctx.for_request();
        self.running.push(Box::pin(async move {
            let (reply, after) = handle_message(&state, &mut rctx, &line, &entry, budget).await;
            Handled {
                line_len: line.len(),
                reply,
                after,
                cost: rctx.pending_cost,
                txs_sent: rctx.pending_txs_sent,
            }
        }));
        c.pending
            .store(self.running.len() as u64, Ordering::Relaxed);
        ControlFlow::Continue(())
    }

    /// Books a handled request (its cost, the counters, the version once negotiated) and
    /// queues its reply; `Break` when the session must end.
    fn book(&mut self, done: Handled) -> ControlFlow<()> {
        let entry = &self.entry;
        let c = &entry.counters;
        c.pending
            .store(self.running.len() as u64, Ordering::Relaxed);
        self.ctx.pending_cost += done.cost;
        self.ctx.pending_txs_sent += done.txs_sent;
        self.cost.charge(std::mem::take(&mut self.ctx.pending_cost));
        self.cost
            .charge_bytes(done.line_len + done.reply.as_ref().map_or(0, Outgoing::len));
        c.set_cost(self.cost.cost(c.subscriptions()));
        c.set_extra_cost(self.cost.last_extra());
        for _ in 0..std::mem::take(&mut self.ctx.pending_txs_sent) {
            self.state.sessions.count_tx_sent(entry);
        }
        if let Some(v) = self.ctx.version
            && entry.protocol_version.lock().is_empty()
        {
            *entry.client.lock() = self.ctx.client_name.clone();
            *entry.protocol_version.lock() = v.to_string();
        }
        if let Some(reply) = done.reply
            && entry.outbox.push(reply).is_err()
        {
            tracing::info!(id = self.ctx.id, "client not reading its replies; closing");
            return ControlFlow::Break(());
        }
        if done.after == After::Disconnect {
            return ControlFlow::Break(());
        }
        ControlFlow::Continue(())
    }

    /// Books the running requests as they finish, until none is left (or the session is
    /// killed).
    async fn finish_running(&mut self) {
        let kill = self.entry.kill.clone();
        loop {
            let done = tokio::select! {
                _ = kill.cancelled() => return,
                done = self.running.next() => done,
            };
            let Some(done) = done else { return };
            if self.book(done).is_break() {
                return;
            }
        }
    }

    /// Books the running requests as they finish for `d` (a throttled session's pause).
    async fn serve_running_for(&mut self, d: Duration) -> ControlFlow<()> {
        let kill = self.entry.kill.clone();
        let sleep = tokio::time::sleep(d);
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                _ = &mut sleep => return ControlFlow::Continue(()),
                _ = kill.cancelled() => return ControlFlow::Break(()),
                Some(done) = self.running.next(), if !self.running.is_empty() => self.book(done)?,
            }
        }
    }
}

/// A handled request, with what it accrued.
struct Handled {
    line_len: usize,
    reply: Option<Outgoing>,
    after: After,
    /// Cost accrued by a request run alongside others (one run alone adds its cost to the
    /// session's context directly).
    cost: f64,
    /// Transactions it broadcast (likewise).
    txs_sent: u64,
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
