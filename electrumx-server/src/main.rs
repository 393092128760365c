//! `electrumx-server`: runs the electrumx-core indexer from ElectrumX-style settings and
//! exits cleanly, with a flush, on SIGINT or SIGTERM.

/// jemalloc instead of glibc malloc: glibc's per-thread arenas fragmented to several hundred
/// MB during sync (blocks are allocated on the prefetch threads and freed on the indexer's).
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

use anyhow::Context;
use clap::Parser;
use electrumx_core::daemon::{BlockFileDaemon, Daemon, RpcDaemon, RpcDaemonConfig};
use electrumx_core::prefetch::PrefetchOptions;
use electrumx_core::{Controller, Mempool};
use electrumx_server::config::Settings;
use electrumx_server::state::{Identity, ServerState};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

fn main() {
    let settings = Settings::parse();
    init_logging(&settings.log_level);
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
    if let Err(e) = runtime.block_on(run(settings)) {
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
        .init();
}

async fn run(settings: Settings) -> anyhow::Result<()> {
    let resolved = settings.resolve().map_err(anyhow::Error::msg)?;
    tracing::info!(
        "electrumx-server {} starting: {}, DB_DIRECTORY {}",
        env!("CARGO_PKG_VERSION"),
        resolved.coin,
        settings.db_directory.display()
    );
    let cancel = CancellationToken::new();
    let daemon: Arc<dyn Daemon> = match &settings.blocks_dir {
        Some(dir) => {
            Arc::new(BlockFileDaemon::open(dir, resolved.coin.genesis_hash).context("BLOCKS_DIR")?)
        }
        None => {
            let mut cfg = RpcDaemonConfig::new(resolved.daemon_urls.clone());
            cfg.cookie_file = settings.daemon_cookie_file.clone();
            cfg.request_timeout = Duration::from_secs(settings.daemon_timeout);
            Arc::new(RpcDaemon::new(cfg, cancel.clone()).context("DAEMON_URL")?)
        }
    };
    let mut builder = Controller::builder()
        .coin(resolved.coin.clone())
        .db_dir(&settings.db_directory)
        .daemon(daemon)
        .cache_mb(settings.cache_mb as usize)
        .progress_interval(Duration::from_secs(settings.progress_interval))
        .prefetch_options(PrefetchOptions {
            memory_budget: (settings.prefetch_mb as usize) << 20,
            poll_interval: resolved.poll_interval,
            ..PrefetchOptions::default()
        });
    if let Some(limit) = settings.reorg_limit {
        builder = builder.reorg_limit(limit);
    }
    let controller = builder.build().context("opening the index")?;
    controller.start()?;
    let serving = CancellationToken::new();
    let server_task = if resolved.services.is_empty() {
        tracing::info!("SERVICES is empty: indexing only, no client service");
        None
    } else {
        let daemon = controller.daemon();
        let index = controller.index();
        let mempool = Arc::new(Mempool::new(
            daemon.clone(),
            Arc::new(index.clone()),
            resolved.coin.clone(),
        ));
        let identity = Identity {
            banner: banner(&settings, &daemon).await,
            donation_address: settings.donation_address.clone(),
            report_services: resolved
                .report_services
                .iter()
                .map(|s| s.to_string())
                .collect(),
        };
        let state = Arc::new(ServerState {
            coin: resolved.coin.clone(),
            index,
            mempool,
            daemon,
            limits: resolved.limits.clone(),
            identity,
            subs: Default::default(),
            mempool_wake: Default::default(),
            cost: Arc::new(resolved.cost.clone()),
            cost_groups: Default::default(),
            drop_client: resolved.drop_client.clone(),
            history_cache: electrumx_server::cache::HistoryCache::new(2_000_000),
            // Peer discovery: runs with the client services (server::run).
            peers: Arc::new(electrumx_server::peers::PeerManager::new(
                resolved.peers.clone(),
            )),
        });
        let services = resolved.services.clone();
        let poll = Duration::from_millis(settings.daemon_poll_interval_mempool);
        let token = serving.clone();
        let controller_ref = &controller;
        let tls = resolved.tls.clone();
        Some(async move {
            electrumx_server::server::run(state, controller_ref, services, tls, poll, token).await
        })
    };
    let mut status = controller.status();
    let sync_ended = async {
        while status.changed().await.is_ok() {
            if status.borrow().stopped {
                break;
            }
        }
    };
    let serve = async {
        match server_task {
            Some(t) => t.await,
            None => std::future::pending().await,
        }
    };
    let outcome: anyhow::Result<()> = tokio::select! {
        sig = shutdown_signal() => { tracing::info!("{sig} received: flushing and stopping"); Ok(()) }
        _ = sync_ended => {
            Err(anyhow::anyhow!("{}", controller.status().borrow().error.clone().unwrap_or_else(|| "sync loop ended".into())))
        }
        r = serve => r.and(Err(anyhow::anyhow!("client service ended"))),
    };
    serving.cancel();
    cancel.cancel();
    let stopped = tokio::select! {
        r = controller.stop() => r,
        sig = shutdown_signal() => {
            tracing::warn!("second {sig}: exiting at once (the database stays consistent)");
            std::process::exit(130);
        }
    };
    // A sync failure is the error to report; stopping then repeats it.
    outcome?;
    stopped.context("stopping the index")?;
    tracing::info!("stopped cleanly");
    Ok(())
}

/// The banner: BANNER_FILE with ElectrumX's variables substituted, or a default line.
async fn banner(settings: &Settings, daemon: &Arc<dyn Daemon>) -> String {
    let version = electrumx_server::state::server_version();
    let Some(path) = &settings.banner_file else {
        return format!("You are connected to an {version} server.");
    };
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let info = daemon
        .call_json("getnetworkinfo", serde_json::json!([]))
        .await
        .ok();
    let field = |k: &str| {
        info.as_ref()
            .and_then(|i| i.get(k))
            .map(|v| v.to_string().trim_matches('"').to_string())
    };
    text.replace("$SERVER_VERSION", env!("CARGO_PKG_VERSION"))
        .replace("$SERVER_SUBVERSION", &version)
        .replace("$DAEMON_VERSION", &field("version").unwrap_or_default())
        .replace(
            "$DAEMON_SUBVERSION",
            &field("subversion").unwrap_or_default(),
        )
        .replace("$DONATION_ADDRESS", &settings.donation_address)
}

async fn shutdown_signal() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => "SIGINT",
        _ = term.recv() => "SIGTERM",
    }
}
