//! The Electrum service: waits for the index to catch up, then listens, runs sessions,
//! keeps the mempool mirror fresh and sends notifications.
//!
//! One task owns the follow-up of changes: on a new tip it notifies headers, refreshes the
//! mempool at once, then re-evaluates only the touched scripts that someone subscribed to,
//! computing each status once for all its subscribers; between blocks it polls the mempool.

use crate::methods::headers::headers_notification;
use crate::methods::outpoints::outpoint_status;
use crate::methods::script_status;
use crate::protocol::subscriptions::Outpoint;
use crate::protocol::transport::{TlsFiles, websocket_bridge};
use crate::services::{Protocol, Service};
use crate::state::ServerState;
use electrumx_core::{ChainIndex, Controller, HashX, IndexEvent, ScriptHash};
use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;

/// Runs the client services until `shutdown`. Returns once listeners and sessions ended.
///
/// The services' sockets are bound once the index has caught up with the node, as
/// ElectrumX does (a wallet is never served a stale chain). [`run_with_listeners`] takes
/// sockets bound beforehand instead (port 0 included).
pub async fn run(
    state: Arc<ServerState>,
    controller: &Controller,
    services: Vec<Service>,
    tls: Option<Arc<TlsFiles>>,
    mempool_poll: Duration,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let client_services: Vec<Service> = services
        .into_iter()
        .filter(|s| !matches!(s.protocol, Protocol::Rpc | Protocol::Metrics))
        .collect();
    check_tls(
        client_services.iter().map(|s| (s.protocol, s.to_string())),
        &tls,
    )?;
    let events = controller.subscribe();
    if !wait_ready(&state, controller, &shutdown).await? {
        return Ok(());
    }
    let mut listeners = Vec::with_capacity(client_services.len());
    for svc in &client_services {
        let listener = listen(&svc.bind_addr())
            .await
            .map_err(|e| anyhow::anyhow!("SERVICES: cannot listen on {svc}: {e}"))?;
        tracing::info!(
            "listening for clients on {svc} ({})",
            listener.local_addr()?
        );
        listeners.push((svc.protocol, listener));
    }
    serve(state, events, listeners, tls, mempool_poll, shutdown).await
}

/// [`run`] on sockets the caller bound (each with the protocol it speaks: `Tcp`, `Ssl`,
/// `Ws` or `Wss`), so an embedder or a test can listen on port 0 and know the port at
/// once. Connections wait in the sockets' backlog until the index has caught up.
pub async fn run_with_listeners(
    state: Arc<ServerState>,
    controller: &Controller,
    listeners: Vec<(Protocol, TcpListener)>,
    tls: Option<Arc<TlsFiles>>,
    mempool_poll: Duration,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    check_tls(
        listeners.iter().map(|(p, l)| {
            let addr = l
                .local_addr()
                .map_or_else(|_| "?".into(), |a| a.to_string());
            (*p, format!("{p:?} on {addr}"))
        }),
        &tls,
    )?;
    if let Some((p, _)) = listeners
        .iter()
        .find(|(p, _)| matches!(p, Protocol::Rpc | Protocol::Metrics))
    {
        anyhow::bail!("run_with_listeners: {p:?} is not a client service");
    }
    let events = controller.subscribe();
    if !wait_ready(&state, controller, &shutdown).await? {
        return Ok(());
    }
    for (p, l) in &listeners {
        tracing::info!("listening for clients ({p:?}) on {}", l.local_addr()?);
    }
    serve(state, events, listeners, tls, mempool_poll, shutdown).await
}

/// Fails if a TLS service (`ssl`, `wss`) is asked for without certificate files.
fn check_tls(
    services: impl Iterator<Item = (Protocol, String)>,
    tls: &Option<Arc<TlsFiles>>,
) -> anyhow::Result<()> {
    if tls.is_some() {
        return Ok(());
    }
    for (protocol, name) in services {
        if matches!(protocol, Protocol::Ssl | Protocol::Wss) {
            anyhow::bail!("SERVICES: {name} needs SSL_CERTFILE and SSL_KEYFILE");
        }
    }
    Ok(())
}

/// Waits until the index has caught up, then learns the node's version and loads the
/// mempool; false if `shutdown` came first.
async fn wait_ready(
    state: &ServerState,
    controller: &Controller,
    shutdown: &CancellationToken,
) -> anyhow::Result<bool> {
    if !controller.status().borrow().caught_up {
        tracing::info!("clients are not served until the index has caught up with the node");
    }
    tokio::select! {
        _ = shutdown.cancelled() => return Ok(false),
        r = controller.wait_caught_up() => { r?; }
    }
    state
        .identity
        .learn_daemon_version(state.daemon.as_ref(), Duration::from_secs(10))
        .await;
    match state.mempool.refresh().await {
        Ok(Some(u)) => tracing::info!(txs = u.added, "mempool loaded"),
        Ok(None) => {}
        Err(e) => tracing::warn!("mempool refresh failed: {e}"),
    }
    Ok(true)
}

/// Accepts clients on `listeners`, follows changes and runs peer discovery until
/// `shutdown`.
async fn serve(
    state: Arc<ServerState>,
    events: tokio::sync::broadcast::Receiver<IndexEvent>,
    listeners: Vec<(Protocol, TcpListener)>,
    tls: Option<Arc<TlsFiles>>,
    mempool_poll: Duration,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let sessions = Arc::new(AtomicUsize::new(0));
    let next_id = Arc::new(AtomicU64::new(1));
    let mut tasks = tokio::task::JoinSet::new();
    for (protocol, listener) in listeners {
        let conn = Conn {
            protocol,
            tls: tls.clone(),
        };
        tasks.spawn(accept_loop(
            listener,
            conn,
            state.clone(),
            sessions.clone(),
            next_id.clone(),
            shutdown.clone(),
        ));
    }
    tasks.spawn(follow_changes(
        state.clone(),
        events,
        mempool_poll,
        shutdown.clone(),
    ));
    // Peer discovery starts once we listen, so that we can verify ourselves.
    tasks.spawn(
        state
            .peers
            .clone()
            .run(Arc::new(state.index.clone()), shutdown.clone()),
    );
    state.health.set_serving(true);
    shutdown.cancelled().await;
    state.health.set_serving(false);
    while tasks.join_next().await.is_some() {}
    Ok(())
}

/// How to turn an accepted socket into a session.
#[derive(Clone)]
struct Conn {
    protocol: Protocol,
    tls: Option<Arc<TlsFiles>>,
}

/// Longest a TLS or WebSocket handshake may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

async fn open_session(
    conn: Conn,
    state: Arc<ServerState>,
    stream: tokio::net::TcpStream,
    peer: std::net::SocketAddr,
    id: u64,
    stop: CancellationToken,
) {
    let max = state.limits.max_recv;
    let tls_acceptor = || -> Option<tokio_rustls::TlsAcceptor> {
        match conn.tls.as_ref()?.acceptor() {
            Ok(a) => Some(a),
            Err(e) => {
                tracing::warn!("TLS unavailable: {e}");
                None
            }
        }
    };
    match conn.protocol {
        Protocol::Tcp => {
            crate::protocol::session::serve(state, stream, peer, conn.protocol, id, stop).await
        }
        Protocol::Ws => {
            if let Ok(Some(pipe)) =
                tokio::time::timeout(HANDSHAKE_TIMEOUT, websocket_bridge(stream, max)).await
            {
                crate::protocol::session::serve(state, pipe, peer, conn.protocol, id, stop).await;
            }
        }
        Protocol::Ssl | Protocol::Wss => {
            let Some(acceptor) = tls_acceptor() else {
                return;
            };
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::debug!(peer = %state.log_addr(&peer), "TLS handshake failed: {e}");
                    return;
                }
                Err(_) => return,
            };
            if conn.protocol == Protocol::Ssl {
                crate::protocol::session::serve(state, tls, peer, conn.protocol, id, stop).await;
            } else if let Ok(Some(pipe)) =
                tokio::time::timeout(HANDSHAKE_TIMEOUT, websocket_bridge(tls, max)).await
            {
                crate::protocol::session::serve(state, pipe, peer, conn.protocol, id, stop).await;
            }
        }
        Protocol::Rpc | Protocol::Metrics => {}
    }
}

/// The client's address for a connection accepted from `peer` (counted under
/// `MAX_SESSIONS_PER_IP` as `counted`), with the stream past any PROXY header; `None` when
/// the connection is refused (an untrusted or invalid header, or the real client over
/// its per-address cap).
///
/// Without `TRUSTED_PROXIES` nothing is looked at. Otherwise the connection's first bytes
/// are peeked at: a header from a trusted proxy is read and its client counted under its
/// own address; a header from anyone else closes the connection; without one, the
/// connection is served as it is.
async fn client_address(
    state: &ServerState,
    mut stream: tokio::net::TcpStream,
    peer: std::net::SocketAddr,
    trusted: bool,
    counted: Option<std::net::IpAddr>,
) -> Option<(
    tokio::net::TcpStream,
    std::net::SocketAddr,
    Option<std::net::IpAddr>,
)> {
    use crate::protocol::proxy::{Header, Origin, ProxyError};
    if state.limits.trusted_proxies.is_empty() {
        return Some((stream, peer, counted));
    }
    let client = match crate::protocol::proxy::accept(&mut stream, trusted).await {
        Ok(Origin::Direct | Origin::Header(Header::Local)) => return Some((stream, peer, counted)),
        // An IPv4 client of a dual-stack proxy may come as `::ffff:a.b.c.d`: it is the
        // IPv4 address (its cost group, its cap).
        Ok(Origin::Header(Header::Proxied { source, .. })) => {
            std::net::SocketAddr::new(source.ip().to_canonical(), source.port())
        }
        Err(e @ ProxyError::Io(_)) => {
            tracing::debug!(peer = %state.log_addr(&peer), "{e}; closing connection");
            return None;
        }
        Err(e) => {
            tracing::info!(peer = %state.log_addr(&peer), trusted, "{e}; closing connection");
            return None;
        }
    };
    tracing::debug!(peer = %state.log_addr(&client), proxy = %state.log_addr(&peer), "client address from a PROXY header");
    if !state.sessions_per_ip.admit(
        client.ip(),
        state.limits.max_sessions_per_ip,
        &state.limits.per_ip_exempt,
    ) {
        tracing::debug!(peer = %state.log_addr(&client), "MAX_SESSIONS_PER_IP reached; refusing connection");
        return None;
    }
    Some((stream, client, Some(client.ip())))
}

async fn accept_loop(
    listener: TcpListener,
    conn: Conn,
    state: Arc<ServerState>,
    sessions: Arc<AtomicUsize>,
    next_id: Arc<AtomicU64>,
    shutdown: CancellationToken,
) {
    let mut children = tokio::task::JoinSet::new();
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            a = listener.accept() => a,
            Some(_) = children.join_next(), if !children.is_empty() => continue,
        };
        let (stream, peer) = match accepted {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        if sessions.load(Ordering::Relaxed) >= state.limits.max_sessions {
            tracing::info!(peer = %state.log_addr(&peer), "MAX_SESSIONS reached; refusing connection");
            drop(stream);
            continue;
        }
        // A trusted proxy is not capped as a client: the address its header names is,
        // once read. Any other connection is counted under its own address at once.
        let trusted = state
            .limits
            .trusted_proxies
            .iter()
            .any(|c| c.contains(peer.ip()));
        if !trusted
            && !state.sessions_per_ip.admit(
                peer.ip(),
                state.limits.max_sessions_per_ip,
                &state.limits.per_ip_exempt,
            )
        {
            tracing::debug!(peer = %state.log_addr(&peer), "MAX_SESSIONS_PER_IP reached; refusing connection");
            drop(stream);
            continue;
        }
        let _ = stream.set_nodelay(true);
        let id = next_id.fetch_add(1, Ordering::Relaxed);
        sessions.fetch_add(1, Ordering::Relaxed);
        let (st, count, stop) = (state.clone(), sessions.clone(), shutdown.clone());
        let conn = conn.clone();
        children.spawn(async move {
            let counted = if trusted { None } else { Some(peer.ip()) };
            if let Some((stream, client, counted)) =
                client_address(&st, stream, peer, trusted, counted).await
            {
                open_session(conn, st.clone(), stream, client, id, stop).await;
                if let Some(ip) = counted {
                    st.sessions_per_ip.release(ip);
                }
            } else if let Some(ip) = counted {
                st.sessions_per_ip.release(ip);
            }
            count.fetch_sub(1, Ordering::Relaxed);
        });
    }
    // Sessions see the same shutdown token; wait for them to finish.
    while children.join_next().await.is_some() {}
}

/// Changes waiting to be notified: gathered from index events and mempool refreshes until
/// a consistent view lets them go out.
#[derive(Default)]
struct PendingChanges {
    /// Scripts whose status may have changed.
    touched: HashSet<HashX>,
    /// Events were lost (the channel lagged): every subscribed script is re-evaluated.
    everything: bool,
    /// The tip changed: header subscribers are told the new one.
    headers: bool,
    /// Outpoints spent, released, created or dropped by blocks or the mempool.
    outpoints: HashSet<Outpoint>,
    /// A reorg: every subscribed outpoint is re-evaluated.
    all_outpoints: bool,
    /// When the oldest change still waiting arrived.
    since: Option<Instant>,
}

impl PendingChanges {
    fn note(&mut self) {
        self.since.get_or_insert_with(Instant::now);
    }

    fn is_empty(&self) -> bool {
        self.touched.is_empty()
            && self.outpoints.is_empty()
            && !self.everything
            && !self.headers
            && !self.all_outpoints
    }

    fn waited(&self) -> Duration {
        self.since.map_or(Duration::ZERO, |t| t.elapsed())
    }
}

/// Longest that notifications wait for a consistent view (the mempool mirror reconciled at
/// the index's tip) while the node keeps moving ahead of the index; after it they go out
/// from the view at hand, and later rounds correct them.
const MAX_NOTIFY_DELAY: Duration = Duration::from_secs(5);

/// Follows index events and the node's mempool and sends notifications.
///
/// Statuses are computed only from a consistent view: the index at the node's tip and the
/// mempool mirror reconciled at that same tip. A view in between (a reorg taken back but
/// not yet replayed, a block indexed before the mirror dropped what it confirmed) is one a
/// client must never be told about: by the time it asks for the history, the history is
/// the next view's, its status does not match the one it was sent, and a later
/// notification equal to what it already holds is ignored (Electrum then waits, not
/// synchronized). So changes wait in [`PendingChanges`] until the mirror has been
/// refreshed at the index's tip, are computed, and are sent only if the index did not move
/// meanwhile (else the event of the move brings a new round at once).
async fn follow_changes(
    state: Arc<ServerState>,
    mut events: tokio::sync::broadcast::Receiver<IndexEvent>,
    mempool_poll: Duration,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval(mempool_poll);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut pending = PendingChanges::default();
    // The tip of the last index event handled: the script cache has been cleared of what
    // the blocks up to it touched. A round computes only at that tip: a round started by
    // the mempool poll may find the index already past it (its event not yet handled), and
    // would read the touched scripts' stale cached histories.
    let mut handled_tip = state.index.tip();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            ev = events.recv() => match ev {
                Ok(first) => {
                    let mut touched: HashSet<HashX> = HashSet::new();
                    let mut reorg = false;
                    // Take every event already queued in the same round.
                    let mut next = Some(first);
                    while let Some(IndexEvent::NewTip { height, hash, touched: t, spent_outpoints, reorg_from, .. }) = next {
                        handled_tip = Some((height, hash));
                        touched.extend(t.iter().copied());
                        pending.outpoints.extend(spent_outpoints.iter().copied());
                        reorg |= reorg_from.is_some();
                        next = events.try_recv().ok();
                    }
                    if reorg {
                        state.tx_cache.clear();
                        state.status_midstates.clear();
                        pending.all_outpoints = true;
                    }
                    // Cached answers of touched scripts go now, whether or not their
                    // notifications must wait.
                    state.script_cache.invalidate(&touched);
                    pending.touched.extend(touched);
                    pending.headers = true;
                    pending.note();
                }
                Err(RecvError::Lagged(_)) => {
                    // Events were lost: everything cached goes, so any tip will do.
                    handled_tip = state.index.tip();
                    state.script_cache.clear();
                    state.tx_cache.clear();
                    state.status_midstates.clear();
                    pending.everything = true;
                    pending.headers = true;
                    pending.note();
                }
                Err(RecvError::Closed) => return,
            },
            _ = tick.tick() => {}
            _ = state.mempool_wake.notified() => {}
        }
        let refreshed = state.mempool.refresh().await;
        if refreshed.is_ok() {
            state.health.node_answered();
        }
        let view = match refreshed {
            Ok(Some(u)) => {
                if !u.touched.is_empty() || !u.outpoints.is_empty() {
                    pending.touched.extend(u.touched);
                    pending.outpoints.extend(u.outpoints);
                    pending.note();
                }
                u.tip
            }
            // The index is not at the node's tip: it is catching up, or has a reorg to
            // take. Its event will bring the next round.
            Ok(None) if pending.waited() < MAX_NOTIFY_DELAY => continue,
            Ok(None) => state.index.tip(),
            Err(e) => {
                // Without the node the mirror stays as it is; the index's own changes
                // still go out.
                tracing::warn!("mempool refresh failed: {e}");
                state.index.tip()
            }
        };
        if pending.is_empty() {
            continue;
        }
        if view != handled_tip && pending.waited() < MAX_NOTIFY_DELAY {
            // The index is past the last event handled: that event starts the next round.
            continue;
        }
        let Some(notes) = compute_notifications(&state, &pending).await else {
            continue;
        };
        if state.index.tip() != view && pending.waited() < MAX_NOTIFY_DELAY {
            // Superseded while computing: the index's event starts the next round.
            continue;
        }
        pending = PendingChanges::default();
        state.subs.begin_round();
        if let Some(msg) = notes.headers {
            state.subs.notify_headers(&msg);
        }
        tracing::debug!(
            tip = ?view.map(|t| t.0),
            outpoints = notes.outpoints.len(),
            scripts = notes.scripts.len(),
            "notification round"
        );
        for (sh, status) in notes.scripts {
            tracing::trace!(script = %sh.to_hex(), ?status, "status");
            state.subs.notify_script(&sh, &status);
        }
        for (op, status) in notes.outpoints {
            state.subs.notify_outpoint(&op, &status);
        }
    }
}

/// Notifications computed from one view, not yet sent.
struct Notifications {
    headers: Option<String>,
    scripts: Vec<(ScriptHash, Option<String>)>,
    outpoints: Vec<(Outpoint, serde_json::Value)>,
}

/// Computes the headers notification and the statuses of the subscribed scripts among
/// `pending` (each once, for all its subscribers), and of every subscribed outpoint.
/// `None` if the blocking pool failed.
async fn compute_notifications(
    state: &Arc<ServerState>,
    pending: &PendingChanges,
) -> Option<Notifications> {
    let headers = if pending.headers {
        headers_notification(state)
    } else {
        None
    };
    let scripts = if pending.everything {
        state.subs.all_scripts()
    } else {
        state.subs.subscribed_among(&pending.touched)
    };
    let mut statuses = Vec::with_capacity(scripts.len());
    for sh in scripts {
        let st = state.clone();
        match tokio::task::spawn_blocking(move || script_status(&st, &sh)).await {
            Ok(Ok(s)) => statuses.push((sh, s)),
            Ok(Err(e)) => tracing::debug!("status of {sh:?}: {}", e.message),
            Err(_) => return None,
        }
    }
    // Outpoints: those the changes touched (all of them after a reorg), and those whose
    // funding transaction has not been seen yet.
    let outpoints = if pending.everything || pending.all_outpoints {
        state.subs.all_outpoints()
    } else {
        state.subs.outpoints_among(&pending.outpoints)
    };
    let outpoints = if outpoints.is_empty() {
        Vec::new()
    } else {
        let st = state.clone();
        tokio::task::spawn_blocking(move || {
            outpoints
                .into_iter()
                .filter_map(|op| outpoint_status(&st, &op).ok().map(|s| (op, s)))
                .collect::<Vec<_>>()
        })
        .await
        .ok()?
    };
    Some(Notifications {
        headers,
        scripts: statuses,
        outpoints,
    })
}

/// Pending connections the kernel may queue per listener (it caps this at `somaxconn`).
const LISTEN_BACKLOG: u32 = 4096;

/// Listens on the first address of `addr` that can be bound, with a backlog for bursts of
/// wallets connecting at once (tokio's default is 1024; a full queue resets connections).
async fn listen(addr: &str) -> std::io::Result<TcpListener> {
    let mut last_err = None;
    for sa in tokio::net::lookup_host(addr).await? {
        let bound = (|| {
            let socket = if sa.is_ipv4() {
                tokio::net::TcpSocket::new_v4()?
            } else {
                tokio::net::TcpSocket::new_v6()?
            };
            socket.set_reuseaddr(true)?;
            socket.bind(sa)?;
            socket.listen(LISTEN_BACKLOG)
        })();
        match bound {
            Ok(listener) => return Ok(listener),
            Err(e) => last_err = Some(e),
        }
    }
    Err(last_err.unwrap_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::NotFound, "no address to listen on")
    }))
}
