//! `Controller::snapshot`: refused during the initial sync and into a non-empty target; at
//! the tip, a consistent copy whose metadata names its height and tip; a real copy of it
//! (not hard links) opens as an index with the same answers, refuses another chain, and a
//! controller started on it resumes from its height without indexing a block again.
//!
//! Blocks: mainnet 0..438 from the shared data (`../shared/data`, or
//! `ELECTRUMX_SHARED_DIR/data`), read by a `BlockFileDaemon`: no node needed.

use electrumx_core::daemon::{BlockFileDaemon, Daemon};
use electrumx_core::{BlockHash, DaemonError};
use electrumx_core::{
    ChainIndex, CoinParams, Controller, Index, IndexError, PrefetchOptions, SnapshotError,
    SnapshotInfo,
};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

mod common;
use common::{TIP, blocks_dir, coin};

/// The block files, served at most one block per 5 ms.
struct SlowFiles(BlockFileDaemon);

#[async_trait::async_trait]
impl Daemon for SlowFiles {
    async fn height(&self) -> Result<u32, DaemonError> {
        self.0.height().await
    }

    async fn block_hashes(&self, first: u32, count: u32) -> Result<Vec<BlockHash>, DaemonError> {
        self.0.block_hashes(first, count).await
    }

    async fn raw_blocks(&self, hashes: &[BlockHash]) -> Result<Vec<Vec<u8>>, DaemonError> {
        tokio::time::sleep(Duration::from_millis(5 * hashes.len() as u64)).await;
        self.0.raw_blocks(hashes).await
    }

    fn describe(&self) -> String {
        self.0.describe()
    }
}

/// A controller syncing slowly (one block per request, 5 ms each), so that the initial
/// sync can be caught in progress.
fn controller(db: &Path) -> Controller {
    let mut prefetch = PrefetchOptions::default();
    prefetch.max_blocks_per_request = 1;
    prefetch.concurrent_requests = 1;
    prefetch.memory_budget = 1 << 14;
    Controller::builder()
        .coin(coin())
        .db_dir(db)
        .daemon(Arc::new(SlowFiles(
            BlockFileDaemon::open(&blocks_dir(), coin().genesis_hash).unwrap(),
        )))
        .cache_mb(1)
        .poll_interval(Duration::from_millis(50))
        .prefetch_options(prefetch)
        .build()
        .unwrap()
}

/// A plain recursive copy (what `cp -r` to another host gives: no hard links).
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}

/// What a sample of queries answers (tip, headers, the coinbase outputs' scripts' history,
/// balance and UTXOs), to compare two indexes.
fn answers(index: &Index) -> Vec<String> {
    let mut out = vec![format!("{:?}", index.tip())];
    for h in [0, 1, 100, 300, TIP] {
        out.push(format!("{:?}", index.header(h).map(|x| x.to_vec())));
        let txids = index.block_txids(h).unwrap().unwrap_or_default();
        for txid in txids.iter().take(3) {
            out.push(format!("{:?}", index.tx_position(txid).unwrap()));
            out.push(format!("{:?}", index.spender(txid, 0).unwrap()));
            if let Some((hashx, value)) = index.unspent_output(txid, 0).unwrap() {
                out.push(format!("{hashx:?} {value}"));
            }
        }
    }
    out
}

#[test]
fn snapshot_of_a_running_controller_seeds_a_resuming_copy() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("db");
    let snap = dir.path().join("snapshots/first");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (info, sample) = rt.block_on(async {
        let c = controller(&db);
        c.start().unwrap();
        while c.progress().blocks < 20 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(!c.status().borrow().caught_up);
        // During the initial sync: refused, nothing written.
        match c.snapshot(&snap) {
            Err(IndexError::Snapshot(SnapshotError::InitialSync { height })) => {
                assert!(height.is_none_or(|h| h < TIP), "{height:?}")
            }
            other => panic!("a snapshot during the initial sync: {other:?}"),
        }
        assert!(!snap.exists());
        assert_eq!(c.wait_caught_up().await.unwrap(), TIP);

        let info = c.snapshot(&snap).unwrap();
        let files: Vec<String> = std::fs::read_dir(&snap)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        // Nothing host-specific: no lock file, no info log, only the database's own files.
        assert!(
            files.iter().all(|f| f.ends_with(".sst")
                || f.ends_with(".log")
                || f == "CURRENT"
                || f.starts_with("MANIFEST-")
                || f.starts_with("OPTIONS-")
                || f == SnapshotInfo::FILE_NAME),
            "{files:?}"
        );
        assert_eq!(info.height, TIP);
        assert_eq!(Some((info.height, info.tip_hash)), c.index().tip());
        assert_eq!(info.genesis, coin().genesis_hash);
        assert_eq!(
            (info.coin.as_str(), info.network.as_str()),
            ("Bitcoin", "mainnet")
        );
        assert_eq!(info.db_version, 4);
        assert!(info.bytes > 0 && info.tx_count > TIP as u64);
        let read = SnapshotInfo::read(&snap).unwrap();
        assert_eq!(
            (read.height, read.tip_hash, read.tx_count, read.bytes),
            (info.height, info.tip_hash, info.tx_count, info.bytes)
        );
        assert_eq!(read.created_unix, info.created_unix);
        assert_eq!(read.software_version, env!("CARGO_PKG_VERSION"));

        // A target that exists and is not empty is refused; an empty directory is fine.
        match c.snapshot(&snap) {
            Err(IndexError::Snapshot(SnapshotError::TargetExists(p))) => assert_eq!(p, snap),
            other => panic!("a snapshot into a non-empty directory: {other:?}"),
        }
        let empty = dir.path().join("empty");
        std::fs::create_dir(&empty).unwrap();
        assert_eq!(c.snapshot(&empty).unwrap().height, TIP);

        let sample = answers(&c.index());
        c.stop().await.unwrap();
        assert!(matches!(
            c.snapshot(dir.path().join("late")),
            Err(IndexError::Lifecycle(_))
        ));
        (info, sample)
    });

    // A real copy, as on another host; the original is gone.
    let copy = dir.path().join("replica");
    copy_dir(&snap, &copy);
    std::fs::remove_dir_all(&snap).unwrap();
    std::fs::remove_dir_all(&db).unwrap();
    {
        let index = Index::open(&copy, &coin()).unwrap();
        assert_eq!(index.tip(), Some((info.height, info.tip_hash)));
        assert_eq!(answers(&index), sample);
    }
    let testnet = CoinParams::from_names("Bitcoin", "testnet").unwrap();
    assert!(matches!(
        Index::open(&copy, &testnet),
        Err(IndexError::WrongChain { .. })
    ));
    rt.block_on(async {
        let c = controller(&copy);
        assert_eq!(c.status().borrow().height, Some(TIP));
        c.start().unwrap();
        assert_eq!(c.wait_caught_up().await.unwrap(), TIP);
        assert_eq!(c.progress().blocks_this_run, 0, "nothing indexed again");
        assert_eq!(answers(&c.index()), sample);
        // A snapshot of a snapshot.
        assert_eq!(c.snapshot(dir.path().join("again")).unwrap().height, TIP);
        c.stop().await.unwrap();
    });
}
