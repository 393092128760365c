//! The Electrum service: waits for the index to catch up, then listens, runs sessions,
//! keeps the mempool mirror fresh and sends notifications.
//!
//! One task owns the follow-up of changes: on a new tip it notifies headers, refreshes the
//! mempool at once, then re-evaluates only the touched scripts that someone subscribed to,
//! computing each status once for all its subscribers; between blocks it polls the mempool.

use crate::methods::{headers_notification, outpoint_status, script_status};
use crate::services::{Protocol, Service};
use crate::state::ServerState;
use crate::transport::{TlsFiles, websocket_bridge};
use electrumx_core::{Controller, HashX, IndexEvent};
use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;

/// Runs the client services until `shutdown`. Returns once listeners and sessions ended.
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
    if tls.is_none()
        && let Some(s) = client_services
            .iter()
            .find(|s| matches!(s.protocol, Protocol::Ssl | Protocol::Wss))
    {
        anyhow::bail!("SERVICES: {s} needs SSL_CERTFILE and SSL_KEYFILE");
    }
    let events = controller.subscribe();
    if !controller.status().borrow().caught_up {
        tracing::info!("clients are not served until the index has caught up with the node");
    }
    tokio::select! {
        _ = shutdown.cancelled() => return Ok(()),
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
    let sessions = Arc::new(AtomicUsize::new(0));
    let next_id = Arc::new(AtomicU64::new(1));
    let mut tasks = tokio::task::JoinSet::new();
    for svc in &client_services {
        let listener = listen(&svc.bind_addr())
            .await
            .map_err(|e| anyhow::anyhow!("SERVICES: cannot listen on {svc}: {e}"))?;
        tracing::info!(
            "listening for clients on {svc} ({})",
            listener.local_addr()?
        );
        let conn = Conn {
            protocol: svc.protocol,
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
    shutdown.cancelled().await;
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
        Protocol::Tcp => crate::session::serve(state, stream, peer, conn.protocol, id, stop).await,
        Protocol::Ws => {
            if let Ok(Some(pipe)) =
                tokio::time::timeout(HANDSHAKE_TIMEOUT, websocket_bridge(stream, max)).await
            {
                crate::session::serve(state, pipe, peer, conn.protocol, id, stop).await;
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
                crate::session::serve(state, tls, peer, conn.protocol, id, stop).await;
            } else if let Ok(Some(pipe)) =
                tokio::time::timeout(HANDSHAKE_TIMEOUT, websocket_bridge(tls, max)).await
            {
                crate::session::serve(state, pipe, peer, conn.protocol, id, stop).await;
            }
        }
        Protocol::Rpc | Protocol::Metrics => {}
    }
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
        let _ = stream.set_nodelay(true);
        let id = next_id.fetch_add(1, Ordering::Relaxed);
        sessions.fetch_add(1, Ordering::Relaxed);
        let (st, count, stop) = (state.clone(), sessions.clone(), shutdown.clone());
        let conn = conn.clone();
        children.spawn(async move {
            open_session(conn, st, stream, peer, id, stop).await;
            count.fetch_sub(1, Ordering::Relaxed);
        });
    }
    // Sessions see the same shutdown token; wait for them to finish.
    while children.join_next().await.is_some() {}
}

async fn follow_changes(
    state: Arc<ServerState>,
    mut events: tokio::sync::broadcast::Receiver<IndexEvent>,
    mempool_poll: Duration,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval(mempool_poll);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let mut touched: HashSet<HashX> = HashSet::new();
        let mut everything = false;
        tokio::select! {
            _ = shutdown.cancelled() => return,
            ev = events.recv() => match ev {
                Ok(IndexEvent::NewTip { touched: t, reorg_from, .. }) => {
                    touched.extend(t.iter().copied());
                    let mut reorg = reorg_from.is_some();
                    // Take every event already queued in the same round.
                    while let Ok(IndexEvent::NewTip { touched: t, reorg_from, .. }) = events.try_recv() {
                        touched.extend(t.iter().copied());
                        reorg |= reorg_from.is_some();
                    }
                    if reorg {
                        state.tx_cache.clear();
                    }
                    state.script_cache.invalidate(&touched);
                    if let Some(msg) = headers_notification(&state) {
                        state.subs.notify_headers(&msg);
                    }
                }
                Err(RecvError::Lagged(_)) => {
                    state.script_cache.clear();
                    state.tx_cache.clear();
                    everything = true;
                }
                Err(RecvError::Closed) => return,
            },
            _ = tick.tick() => {}
            _ = state.mempool_wake.notified() => {}
        }
        match state.mempool.refresh().await {
            Ok(Some(u)) => touched.extend(u.touched),
            Ok(None) => {}
            Err(e) => tracing::warn!("mempool refresh failed: {e}"),
        }
        let scripts = if everything {
            state.subs.all_scripts()
        } else {
            state.subs.subscribed_among(&touched)
        };
        for sh in scripts {
            let st = state.clone();
            let status = match tokio::task::spawn_blocking(move || script_status(&st, &sh)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::debug!("status of {sh:?}: {}", e.message);
                    continue;
                }
                Err(_) => continue,
            };
            state.subs.notify_script(&sh, &status);
        }
        // Outpoint statuses are a few lookups each: re-evaluate every subscribed one.
        let outpoints = state.subs.all_outpoints();
        if !outpoints.is_empty() {
            let st = state.clone();
            let statuses = tokio::task::spawn_blocking(move || {
                outpoints
                    .into_iter()
                    .filter_map(|op| outpoint_status(&st, &op).ok().map(|s| (op, s)))
                    .collect::<Vec<_>>()
            })
            .await
            .unwrap_or_default();
            for (op, status) in statuses {
                state.subs.notify_outpoint(&op, &status);
            }
        }
    }
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
