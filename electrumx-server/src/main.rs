//! `electrumx-server`: runs the electrumx-core indexer from ElectrumX-style settings and
//! exits cleanly, with a flush, on SIGINT or SIGTERM.

mod config;

/// jemalloc instead of glibc malloc: glibc's per-thread arenas fragmented to several hundred
/// MB during sync (blocks are allocated on the prefetch threads and freed on the indexer's).
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

use anyhow::Context;
use clap::Parser;
use config::Settings;
use electrumx_core::Controller;
use electrumx_core::daemon::{BlockFileDaemon, Daemon, RpcDaemon, RpcDaemonConfig};
use electrumx_core::prefetch::PrefetchOptions;
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
    let mut status = controller.status();
    let outcome = tokio::select! {
        sig = shutdown_signal() => { tracing::info!("{sig} received: flushing and stopping"); Ok(()) }
        _ = async { while status.changed().await.is_ok() { if status.borrow().stopped { break; } } } => {
            Err(anyhow::anyhow!("{}", status.borrow().error.clone().unwrap_or_else(|| "sync loop ended".into())))
        }
    };
    cancel.cancel();
    let stop = controller.stop();
    tokio::select! {
        r = stop => r.context("stopping the index")?,
        sig = shutdown_signal() => {
            tracing::warn!("second {sig}: exiting at once (the database stays consistent)");
            std::process::exit(130);
        }
    }
    if outcome.is_ok() {
        tracing::info!("stopped cleanly");
    }
    outcome
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
