//! A `Controller`'s lifecycle as an embedder meets it: dropped without `stop()` on a
//! current-thread and on a multi-thread runtime (mid-sync and at the tip), dropped after
//! its runtime shut down and during the shutdown, it neither deadlocks nor leaves the
//! database open: the same directory opens again in the same process, at a prefix of the
//! chain, and a new controller resumes from there. Misuse (starting twice, after a stop,
//! outside a runtime; a builder without a required setting) gets its own error.
//!
//! Blocks: mainnet 0..438 from the shared data (`../shared/data`, or
//! `ELECTRUMX_SHARED_DIR/data`), read by a `BlockFileDaemon`: no node needed.

use electrumx_core::daemon::BlockFileDaemon;
use electrumx_core::{
    BuildError, ChainIndex, Controller, Index, IndexError, LifecycleError, PrefetchOptions,
};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

mod common;
use common::{TIP, blocks_dir, coin};

fn daemon() -> Arc<BlockFileDaemon> {
    Arc::new(BlockFileDaemon::open(&blocks_dir(), coin().genesis_hash).unwrap())
}

/// A controller that syncs slowly enough to be dropped mid-sync: one block per request,
/// small caches (a flush every few blocks).
fn controller(db: &Path) -> Controller {
    let mut prefetch = PrefetchOptions::default();
    prefetch.max_blocks_per_request = 1;
    prefetch.concurrent_requests = 1;
    prefetch.memory_budget = 1 << 14;
    Controller::builder()
        .coin(coin())
        .db_dir(db)
        .daemon(daemon())
        .cache_mb(1)
        .poll_interval(Duration::from_millis(50))
        .prefetch_options(prefetch)
        .build()
        .unwrap()
}

/// Runs `f` on a thread of its own and fails the test if it takes longer than `secs`
/// (a deadlock would otherwise hang the test run).
fn within<T: Send + 'static>(secs: u64, what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(Duration::from_secs(secs))
        .unwrap_or_else(|_| panic!("{what}: did not finish within {secs} s (deadlock?)"))
}

/// Opens the database again (it must have been closed) and checks that it holds a prefix
/// of the chain. Returns the committed height (`None`: empty).
fn reopen_and_check(db: &Path) -> Option<u32> {
    let index =
        Index::open(db, &coin()).unwrap_or_else(|e| panic!("the database was left open: {e}"));
    let tip = index.tip();
    if let Some((height, hash)) = tip {
        assert!(height <= TIP);
        // Block files are named `HHHHHHH-<hash>.bin`.
        let want = std::fs::read_dir(blocks_dir())
            .unwrap()
            .flatten()
            .find_map(|e| {
                let name = e.file_name().into_string().ok()?;
                let rest = name.strip_prefix(&format!("{height:07}-"))?;
                Some(rest.trim_end_matches(".bin").to_string())
            });
        assert_eq!(
            want,
            Some(hash.to_display_hex()),
            "the tip is the chain's block at {height}"
        );
        let stats = index.db_stats();
        assert!(stats.column_families.iter().any(|c| c.keys > 0));
    }
    tip.map(|t| t.0)
}

/// Syncs to the end with a new controller (no resync from scratch needed).
fn resume(db: &Path, from: Option<u32>) {
    let db = db.to_path_buf();
    within(120, "resume", move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let c = controller(&db);
            assert_eq!(c.status().borrow().height, from, "resumes where it stopped");
            c.start().unwrap();
            assert_eq!(c.wait_caught_up().await.unwrap(), TIP);
            c.stop().await.unwrap();
        });
    });
}

/// Starts a controller on a runtime of `flavor`, lets it run for `run_ms` (0: until
/// caught up), then drops it, on the runtime's thread, without `stop()`.
fn drop_without_stop(multi_thread: bool, run_ms: u64) {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().to_path_buf();
    let what = format!("drop (multi_thread {multi_thread}, after {run_ms} ms)");
    within(60, &what, move || {
        let rt = match multi_thread {
            true => tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build(),
            false => tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build(),
        }
        .unwrap();
        rt.block_on(async {
            let c = controller(&db);
            let index = c.index();
            c.start().unwrap();
            if run_ms == 0 {
                c.wait_caught_up().await.unwrap();
            } else {
                tokio::time::sleep(Duration::from_millis(run_ms)).await;
            }
            drop(index);
            drop(c);
            // Closed as soon as the drop returned, with the runtime still running.
            reopen_and_check(&db)
        })
    });
    resume(dir.path(), reopen_and_check(dir.path()));
}

#[test]
fn dropped_without_stop_on_a_current_thread_runtime() {
    for ms in [1, 30, 0] {
        drop_without_stop(false, ms);
    }
}

#[test]
fn dropped_without_stop_on_a_multi_thread_runtime() {
    for ms in [1, 30, 0] {
        drop_without_stop(true, ms);
    }
}

#[test]
fn dropped_after_its_runtime_shut_down() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().to_path_buf();
    within(60, "drop after the runtime", move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let c = rt.block_on(async {
            let c = controller(&db);
            c.start().unwrap();
            let mut status = c.status();
            status
                .wait_for(|s| s.height.is_some_and(|h| h >= 5))
                .await
                .unwrap();
            c
        });
        drop(rt);
        drop(c);
        reopen_and_check(&db)
    });
    resume(dir.path(), reopen_and_check(dir.path()));
}

#[test]
fn dropped_by_its_runtime_shutting_down() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().to_path_buf();
    within(60, "drop in the runtime's shutdown", move || {
        for multi_thread in [false, true] {
            let rt = match multi_thread {
                true => tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build(),
                false => tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build(),
            }
            .unwrap();
            rt.block_on(async {
                let c = Arc::new(controller(&db));
                c.start().unwrap();
                // Tasks that hold the controller and an index handle until the runtime
                // drops them.
                let (held, index) = (c.clone(), c.index());
                tokio::spawn(async move {
                    let _keep = (held, index);
                    std::future::pending::<()>().await
                });
                tokio::time::sleep(Duration::from_millis(20)).await;
            });
            drop(rt);
            reopen_and_check(&db);
        }
    });
    resume(dir.path(), reopen_and_check(dir.path()));
}

#[tokio::test]
async fn lifecycle_misuse_has_its_own_errors() {
    let dir = tempfile::tempdir().unwrap();
    let c = controller(dir.path());
    c.start().unwrap();
    assert!(matches!(
        c.start(),
        Err(IndexError::Lifecycle(LifecycleError::AlreadyStarted))
    ));
    c.stop().await.unwrap();
    c.stop().await.unwrap();
    assert!(matches!(
        c.start(),
        Err(IndexError::Lifecycle(LifecycleError::Stopped))
    ));
    drop(c);

    let c = controller(dir.path());
    let outside = std::thread::spawn(move || c.start()).join().unwrap();
    assert!(matches!(
        outside,
        Err(IndexError::Lifecycle(LifecycleError::NoRuntime))
    ));

    let missing = Controller::builder()
        .db_dir(dir.path())
        .daemon(daemon())
        .build();
    assert!(matches!(
        missing,
        Err(IndexError::Build(BuildError::Missing("coin")))
    ));
    let zero = Controller::builder()
        .coin(coin())
        .db_dir(dir.path())
        .daemon(daemon())
        .cache_mb(0)
        .build();
    assert!(matches!(
        zero,
        Err(IndexError::Build(BuildError::Invalid(_)))
    ));
}

#[tokio::test]
async fn db_stats_of_a_synced_index() {
    let dir = tempfile::tempdir().unwrap();
    let c = Controller::builder()
        .coin(coin())
        .db_dir(dir.path())
        .daemon(daemon())
        .build()
        .unwrap();
    c.start().unwrap();
    assert_eq!(c.wait_caught_up().await.unwrap(), TIP);
    let stats = c.db_stats();
    assert_eq!(stats.column_families.len(), 9);
    assert!(stats.disk_bytes > 0);
    assert!(
        stats
            .column_families
            .iter()
            .any(|f| f.name == "headers" && f.keys > 0)
    );
    assert_eq!(c.db_dir(), dir.path());
    c.stop().await.unwrap();
    drop(c);
    let detailed = Index::open(dir.path(), &coin())
        .unwrap()
        .db_stats_detailed();
    assert!(detailed.sst_bytes() > 0);
    assert!(
        detailed
            .column_families
            .iter()
            .any(|f| f.data_block_bytes.is_some_and(|b| b > 0))
    );
}
