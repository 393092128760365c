//! `electrumx-server`: runs the electrumx-core indexer from ElectrumX-style settings and
//! exits cleanly, with a flush, on SIGINT or SIGTERM.

/// jemalloc instead of glibc malloc: glibc's per-thread arenas fragmented to several hundred
/// MB during sync (blocks are allocated on the prefetch threads and freed on the indexer's).
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's built-in options (the `MALLOC_CONF` environment variable still overrides
/// them): no transparent huge pages, even where the kernel would use them by default. With
/// 2 MB pages a first touch of fresh memory zeroes the whole page: a cold long-history
/// query, which fills the block cache, took 1.3–1.7× as long, and the initial sync was no
/// faster (3 % slower, 130 MB more peak RSS) once its flushes stopped going through
/// memtables.
#[unsafe(export_name = "malloc_conf")]
pub static MALLOC_CONF: &[u8; 10] = b"thp:never\0";

use anyhow::Context;
use electrumx_core::daemon::{BlockFileDaemon, Daemon, HybridDaemon, RpcDaemon, RpcDaemonConfig};
use electrumx_core::{Controller, Mempool, PrefetchOptions};
use electrumx_server::admin::local_rpc::{self, AdminContext};
use electrumx_server::config::{Resolved, Settings};
use electrumx_server::services::{Protocol, Service};
use electrumx_server::state::{Identity, ServerState};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

fn main() {
    let settings = match Settings::load_from(std::env::args_os()) {
        Ok(s) => s,
        Err(e) => e.exit(),
    };
    init_logging(&settings.log_level);
    for var in Settings::ignored_env() {
        tracing::warn!("{var} is an ElectrumX setting with no effect in electrumx-rs; ignored");
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("electrumx-server: cannot start the runtime: {e}");
            std::process::exit(1);
        }
    };
    let result = runtime.block_on(run(settings));
    // Tasks still holding the controller or the index (sessions, admin services, the
    // progress bar) end with the runtime, and with them the last handles of the database:
    // it is closed (a controller dropped without `stop()` flushes first) before the
    // process exits, on every path but the deliberate `exit_at_once`.
    runtime.shutdown_timeout(Duration::from_secs(30));
    if let Err(e) = result {
        tracing::error!("{e:#}");
        eprintln!("electrumx-server: {e:#}");
        std::process::exit(1);
    }
}

fn init_logging(level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(level).unwrap_or_else(|e| {
        eprintln!("electrumx-server: LOG_LEVEL {level:?} is invalid ({e}); using info");
        tracing_subscriber::EnvFilter::new("info")
    });
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .with_writer(|| LogWriter)
        .init();
}

/// True while the progress bar is on the terminal.
static BAR_ACTIVE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Log output (stdout) that first wipes the progress bar's line, so a log line never
/// starts with a piece of the bar; the bar is drawn again on its next tick.
struct LogWriter;

impl std::io::Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if BAR_ACTIVE.load(std::sync::atomic::Ordering::Relaxed) {
            let _ = std::io::stderr().write_all(b"\r\x1b[2K");
        }
        std::io::stdout().write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stdout().flush()
    }
}

async fn run(settings: Settings) -> anyhow::Result<()> {
    // Listening from the start: a signal during start-up is a clean stop, not a kill.
    let mut signals = Signals::new();
    let resolved = settings.resolve().map_err(anyhow::Error::msg)?;
    // Every part's settings are checked before the index is opened. Servers found on
    // IRC's channel become candidates of peer discovery.
    let (irc_peers, mut found) = tokio::sync::mpsc::unbounded_channel();
    let irc = electrumx_server::discovery::irc::prepare(&settings, &resolved, Some(irc_peers))
        .map_err(anyhow::Error::msg)?;
    tracing::info!(
        "electrumx-server {} starting: {}, DB_DIRECTORY {}",
        env!("CARGO_PKG_VERSION"),
        resolved.coin,
        settings.db_directory.display()
    );
    let cancel = CancellationToken::new();
    let mut rpc_daemon = None;
    let daemon: Arc<dyn Daemon> = match &settings.blocks_dir {
        Some(dir) if resolved.daemon_urls.is_empty() => {
            Arc::new(BlockFileDaemon::open(dir, resolved.coin.genesis_hash).context("BLOCKS_DIR")?)
        }
        _ => {
            let mut cfg = RpcDaemonConfig::new(resolved.daemon_urls.clone());
            cfg.cookie_file = resolved.cookie_file.clone();
            cfg.request_timeout = Duration::from_secs(settings.daemon_timeout);
            let d = Arc::new(RpcDaemon::new(cfg, cancel.clone()).context("DAEMON_URL")?);
            rpc_daemon = Some(d.clone());
            match &resolved.node_blocks_dir {
                Some(dir) => {
                    tracing::info!(
                        "initial sync from the node's block files in {} (BLOCK_FILES=off: over RPC only)",
                        dir.display()
                    );
                    Arc::new(
                        HybridDaemon::new(d, dir, resolved.coin.genesis_hash)
                            .context("BLOCK_FILES")?,
                    )
                }
                None => d,
            }
        }
    };
    let mut builder = Controller::builder()
        .coin(resolved.coin.clone())
        .db_dir(&settings.db_directory)
        .daemon(daemon)
        .cache_mb(settings.cache_mb as usize)
        // On a terminal the bar shows progress; the periodic line is for logs.
        .progress_interval(if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
            Duration::from_secs(86_400)
        } else {
            Duration::from_secs(settings.progress_interval)
        })
        .poll_interval(resolved.poll_interval)
        .prefetch_options({
            let mut o = PrefetchOptions::default();
            o.memory_budget = (settings.prefetch_mb as usize) << 20;
            o
        });
    if let Some(limit) = settings.reorg_limit {
        builder = builder.reorg_limit(limit);
    }
    let controller = Arc::new(builder.build().context("opening the index")?);
    controller.start()?;
    let serving = CancellationToken::new();
    let admin_stop = CancellationToken::new();
    let stop_requested = CancellationToken::new();
    let state = server_state(&settings, &resolved, &controller);
    let admin = Arc::new(AdminContext {
        controller: controller.clone(),
        state: state.clone(),
        rpc_daemon,
        configured_daemon_url: settings.daemon_url.clone().unwrap_or_default(),
        stop: stop_requested.clone(),
    });
    // The admin services run from the start, before the index has caught up.
    let mut admin_tasks = tokio::task::JoinSet::new();
    for svc in &resolved.services {
        let listener = match svc.protocol {
            Protocol::Rpc | Protocol::Metrics => bind_admin(svc).await?,
            _ => continue,
        };
        let (ctx, token) = (admin.clone(), admin_stop.clone());
        if svc.protocol == Protocol::Rpc {
            admin_tasks.spawn(local_rpc::serve(listener, ctx, token));
        } else {
            admin_tasks.spawn(electrumx_server::admin::metrics_service::serve(
                listener, ctx, token,
            ));
        }
    }
    if settings.log_sessions > 0 {
        let every = Duration::from_secs(settings.log_sessions);
        tokio::spawn(log_sessions(state.clone(), every, serving.clone()));
    }
    if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        tokio::spawn(progress_bar(controller.clone(), serving.clone()));
    }
    let clients = resolved
        .services
        .iter()
        .any(|s| !matches!(s.protocol, Protocol::Rpc | Protocol::Metrics));
    // A task of its own: it keeps serving while the process drains after a signal, and
    // ends once `serving` is cancelled.
    let mut server_task = if clients {
        let services = resolved.services.clone();
        let poll = Duration::from_millis(settings.daemon_poll_interval_mempool);
        let (token, tls, controller) = (serving.clone(), resolved.tls.clone(), controller.clone());
        let state = state.clone();
        Some(tokio::spawn(async move {
            electrumx_server::server::run(state, &controller, services, tls, poll, token).await
        }))
    } else {
        tracing::info!("no client service in SERVICES: indexing only");
        None
    };
    // IRC advertising (`IRC`) until `serving` is cancelled.
    let irc = irc.map(|advertiser| {
        electrumx_server::discovery::irc::start(advertiser, controller.status(), serving.clone())
    });
    {
        let peers = state.peers.clone();
        tokio::spawn(async move {
            while let Some(p) = found.recv().await {
                peers.add_irc_peer(&p.nick, &p.real_name);
            }
        });
    }
    let mut status = controller.status();
    let sync_ended = async {
        while status.changed().await.is_ok() {
            if status.borrow().stopped {
                break;
            }
        }
    };
    let server_running = server_task.is_some();
    let serve = async {
        match server_task.as_mut() {
            Some(t) => t
                .await
                .unwrap_or_else(|e| Err(anyhow::anyhow!("client service: {e}"))),
            None => std::future::pending().await,
        }
    };
    let outcome: anyhow::Result<()> = tokio::select! {
        sig = signals.next() => { tracing::info!("{sig} received: flushing and stopping"); Ok(()) }
        _ = stop_requested.cancelled() => { tracing::info!("stop requested over LocalRPC: flushing and stopping"); Ok(()) }
        _ = sync_ended => {
            Err(anyhow::anyhow!("{}", controller.status().borrow().error.clone().unwrap_or_else(|| "sync loop ended".into())))
        }
        r = serve => r.and(Err(anyhow::anyhow!("client service ended"))),
    };
    // Draining: unready on `GET /health` first, so that a load balancer sends no one new;
    // the established sessions are served for the grace period, then closed.
    let grace = std::time::Duration::from_secs(settings.shutdown_grace);
    if outcome.is_ok() && server_running && !grace.is_zero() {
        state.health.set_draining();
        tracing::info!(
            "reporting unready; serving established sessions for {grace:?} before closing"
        );
        tokio::select! {
            _ = tokio::time::sleep(grace) => {}
            sig = signals.next() => tracing::info!("{sig} received: closing now"),
        }
    }
    serving.cancel();
    cancel.cancel();
    if let Some(t) = server_task.take().filter(|t| !t.is_finished()) {
        // The sessions end with `serving`; what they queued goes out briefly.
        let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
    }
    // LocalRPC and metrics stay up while the index flushes and stops.
    let stopped = tokio::select! {
        r = controller.stop() => r,
        sig = signals.next() => {
            tracing::warn!("second {sig}: exiting at once (the database stays consistent)");
            exit_at_once(130)
        }
    };
    admin_stop.cancel();
    while admin_tasks.join_next().await.is_some() {}
    if let Some(irc) = irc {
        let _ = irc.await; // IRC's QUIT: at most 3 s after `serving.cancel()`
    }
    // A sync failure is the error to report; stopping then repeats it.
    outcome?;
    stopped.context("stopping the index")?;
    tracing::info!("stopped cleanly");
    Ok(())
}

/// Binds an admin service (LocalRPC, metrics), warning loudly when it is reachable from
/// other machines: neither has authentication.
async fn bind_admin(svc: &Service) -> anyhow::Result<tokio::net::TcpListener> {
    let listener = tokio::net::TcpListener::bind(svc.bind_addr())
        .await
        .map_err(|e| anyhow::anyhow!("SERVICES: cannot listen on {svc}: {e}"))?;
    let addr = listener.local_addr()?;
    if !addr.ip().is_loopback() {
        tracing::warn!(
            "{svc} listens on {addr}, which is NOT loopback: anyone who can reach it can \
             administer this server (no authentication). Bind it to localhost unless this \
             is intended and firewalled."
        );
    }
    tracing::info!(
        "{} service listening on {svc} ({addr})",
        svc.protocol.name()
    );
    Ok(listener)
}

/// The state client sessions and the admin services share.
fn server_state(
    settings: &Settings,
    resolved: &Resolved,
    controller: &Controller,
) -> Arc<ServerState> {
    let daemon = controller.daemon();
    let index = controller.index();
    let mempool = Arc::new(Mempool::new(
        daemon.clone(),
        Arc::new(index.clone()),
        resolved.coin.clone(),
    ));
    let mut state = ServerState::new(resolved.coin.clone(), index, mempool, daemon.clone());
    state.identity = Identity {
        banner_file: settings.banner_file.clone(),
        donation_address: settings.donation_address.clone(),
        report_services: resolved
            .report_services
            .iter()
            .map(|s| s.to_string())
            .collect(),
        daemon_version: Default::default(),
    };
    state.limits = resolved.limits.clone();
    state.cost = Arc::new(resolved.cost.clone());
    state.drop_client = resolved.drop_client.clone();
    state.anon_logs = settings.anon_logs;
    state.health = Arc::new(electrumx_server::admin::health::Health::new(
        std::time::Duration::from_secs(settings.health_node_timeout),
    ));
    // Peer discovery: runs with the client services (server::run).
    state.peers = Arc::new(electrumx_server::discovery::peers::PeerManager::new(
        resolved.peers.clone(),
    ));
    Arc::new(state)
}

/// Logs a summary of the sessions every `every` (ElectrumX's `LOG_SESSIONS`).
async fn log_sessions(state: Arc<ServerState>, every: Duration, stop: CancellationToken) {
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let (sessions, subs) = state.subs.counts();
        let requests: u64 = state.requests.counts().values().sum();
        tracing::info!(
            sessions,
            subscriptions = subs,
            groups = state.sessions.groups().len(),
            accepted = state.sessions.accepted(),
            requests,
            txs_sent = state.sessions.txs_sent(),
            "sessions"
        );
    }
}

/// Draws a one-line progress bar with ETA on the terminal until the index has caught up.
async fn progress_bar(controller: Arc<Controller>, stop: CancellationToken) {
    use std::io::Write;
    let started = std::time::Instant::now();
    let first = controller.progress();
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tick.tick() => {}
        }
        if controller.status().borrow().caught_up {
            break;
        }
        let p = controller.progress();
        let line = electrumx_server::admin::progress::bar_line(&first, &p, started.elapsed(), 30);
        BAR_ACTIVE.store(true, std::sync::atomic::Ordering::Relaxed);
        let mut err = std::io::stderr().lock();
        let _ = write!(err, "\r\x1b[2K{line}");
        let _ = err.flush();
    }
    BAR_ACTIVE.store(false, std::sync::atomic::Ordering::Relaxed);
    let mut err = std::io::stderr().lock();
    let _ = write!(err, "\r\x1b[2K");
    let _ = err.flush();
}

/// SIGINT and SIGTERM, listened to once for the whole run so that none is lost between
/// the first (stop cleanly) and the second (exit at once).
struct Signals {
    int: Option<tokio::signal::unix::Signal>,
    term: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    fn new() -> Signals {
        use tokio::signal::unix::{SignalKind, signal};
        Signals {
            int: signal(SignalKind::interrupt()).ok(),
            term: signal(SignalKind::terminate()).ok(),
        }
    }

    /// The next SIGINT or SIGTERM.
    async fn next(&mut self) -> &'static str {
        async fn recv(s: &mut Option<tokio::signal::unix::Signal>) {
            match s {
                Some(s) => {
                    s.recv().await;
                }
                None => std::future::pending().await,
            }
        }
        tokio::select! {
            _ = recv(&mut self.int) => "SIGINT",
            _ = recv(&mut self.term) => "SIGTERM",
        }
    }
}

/// Ends the process without running exit handlers, as a crash would (the database is
/// crash-safe). `std::process::exit` runs C++ static destructors, RocksDB's among them,
/// while its background threads and our flush thread still use the database: that
/// crashed the process (SIGSEGV) instead of exiting with `code`.
fn exit_at_once(code: i32) -> ! {
    use std::io::Write;
    let _ = std::io::stderr().flush();
    let _ = std::io::stdout().flush();
    // SAFETY: `_exit` only ends the process; nothing runs after it.
    unsafe { libc::_exit(code) }
}
