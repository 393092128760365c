//! The indexer against a real regtest node (Bitcoin SV 1.0.13): a generated chain is synced
//! and every answer compared with the generator's own ledger; then the index follows the tip
//! through new blocks and reorgs of several depths, survives the node restarting mid-sync,
//! fails over from a dead daemon URL, and stops cleanly on a reorg deeper than REORG_LIMIT.

use anyhow::{Result, ensure};
use electrumx_core::daemon::{DaemonUrl, RpcDaemon, RpcDaemonConfig};
use electrumx_core::{ChainIndex, CoinParams, Controller, Index, IndexEvent, PrefetchOptions};
use electrumx_testkit::chaingen::{ChainGen, GenParams};
use electrumx_testkit::check::assert_index_matches_ledger;
use electrumx_testkit::node::{RegtestNode, free_port};
use rand::{Rng, SeedableRng};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

fn coin() -> CoinParams {
    CoinParams::from_names("BitcoinSV", "regtest").unwrap()
}

fn daemon_for(node: &RegtestNode, extra_urls_first: &[String]) -> Arc<RpcDaemon> {
    let mut list: Vec<String> = extra_urls_first.to_vec();
    list.push(node.rpc_url());
    let urls = DaemonUrl::parse_list(&list.join(","), 18332).unwrap();
    let mut cfg = RpcDaemonConfig::new(urls);
    cfg.cookie_file = Some(node.cookie_path());
    cfg.max_retry_delay = Duration::from_millis(500);
    Arc::new(RpcDaemon::new(cfg, CancellationToken::new()).unwrap())
}

fn controller(
    node: &RegtestNode,
    db: &Path,
    prefetch: PrefetchOptions,
    reorg_limit: Option<u32>,
) -> Controller {
    let mut b = Controller::builder()
        .coin(coin())
        .db_dir(db)
        .daemon(daemon_for(node, &[]))
        .cache_mb(1)
        .poll_interval(Duration::from_millis(100))
        .prefetch_options(prefetch);
    if let Some(l) = reorg_limit {
        b = b.reorg_limit(l);
    }
    b.build().unwrap()
}

async fn wait_for_tip(controller: &Controller, chain: &ChainGen) -> Result<()> {
    let want = chain.blocks.last().unwrap().hash;
    for _ in 0..600 {
        if controller.index().tip().map(|t| t.1) == Some(want) {
            return Ok(());
        }
        let status = controller.status().borrow().clone();
        ensure!(!status.stopped, "sync stopped: {:?}", status.error);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    anyhow::bail!("index did not reach the generated tip")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_matches_ledger_then_follows_blocks_and_reorgs() -> Result<()> {
    let node = RegtestNode::start().await?;
    let mut chain = ChainGen::new(GenParams {
        seed: 7,
        txs_per_block: 25,
        wallets: 120,
        ..GenParams::default()
    });
    chain.mine(&node, 260).await?;
    let db = tempfile::tempdir()?;
    let c = controller(&node, db.path(), PrefetchOptions::default(), None);
    c.start()?;
    c.wait_caught_up().await?;
    assert_index_matches_ledger(&c.index(), &chain.ledger(), chain.height())?;

    // New blocks at the tip: one event per block, naming the touched scripts.
    let mut events = c.subscribe();
    chain.mine(&node, 3).await?;
    c.notify_new_block();
    wait_for_tip(&c, &chain).await?;
    assert_index_matches_ledger(&c.index(), &chain.ledger(), chain.height())?;
    let mut seen_heights = Vec::new();
    while let Ok(IndexEvent::NewTip {
        height, touched, ..
    }) = events.try_recv()
    {
        assert!(!touched.is_empty());
        seen_heights.push(height);
    }
    assert_eq!(seen_heights.last().copied(), Some(chain.height()));

    // Reorgs of depth 1, 2 and 10, then a few random ones.
    let mut rng = rand::rngs::StdRng::seed_from_u64(99);
    let mut depths = vec![1, 2, 10];
    depths.extend((0..3).map(|_| rng.random_range(1..=6)));
    for depth in depths {
        chain.reorg(&node, depth).await?;
        c.notify_new_block();
        wait_for_tip(&c, &chain).await?;
        assert_index_matches_ledger(&c.index(), &chain.ledger(), chain.height())
            .map_err(|e| e.context(format!("after a reorg of depth {depth}")))?;
    }
    let mut saw_reorg = false;
    while let Ok(IndexEvent::NewTip { reorg_from, .. }) = events.try_recv() {
        saw_reorg |= reorg_from.is_some();
    }
    assert!(saw_reorg, "reorgs are announced");
    c.stop().await?;
    drop(c);

    // A restart resumes from the stored state.
    let c = controller(&node, db.path(), PrefetchOptions::default(), None);
    c.start()?;
    c.wait_caught_up().await?;
    assert_index_matches_ledger(&c.index(), &chain.ledger(), chain.height())?;
    c.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_stopped_and_restarted_mid_sync() -> Result<()> {
    let mut node = RegtestNode::start().await?;
    let mut chain = ChainGen::new(GenParams {
        seed: 11,
        txs_per_block: 20,
        ..GenParams::default()
    });
    chain.mine(&node, 400).await?;
    let db = tempfile::tempdir()?;
    // One block per request, one request at a time: slow enough to stop the node mid-way.
    let mut slow = PrefetchOptions::default();
    slow.max_blocks_per_request = 1;
    slow.concurrent_requests = 1;
    slow.memory_budget = 1 << 16;
    let c = controller(&node, db.path(), slow, None);
    c.start()?;
    let mut status = c.status();
    status
        .wait_for(|s| s.height.is_some_and(|h| h >= 50))
        .await?;
    node.stop().await?;
    let at_stop = c.status().borrow().height.unwrap();
    assert!(
        at_stop < chain.height(),
        "the node was stopped mid-sync (at {at_stop})"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        !c.status().borrow().stopped,
        "the index waits for the node instead of failing"
    );
    // The node comes back with a new cookie; the client re-reads it.
    node.restart().await?;
    c.wait_caught_up().await?;
    wait_for_tip(&c, &chain).await?;
    assert_index_matches_ledger(&c.index(), &chain.ledger(), chain.height())?;
    c.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_daemon_url_dead_fails_over_to_the_second() -> Result<()> {
    let node = RegtestNode::start().await?;
    let mut chain = ChainGen::new(GenParams {
        seed: 5,
        ..GenParams::default()
    });
    chain.mine(&node, 120).await?;
    let dead = format!("http://127.0.0.1:{}/", free_port());
    let db = tempfile::tempdir()?;
    let c = Controller::builder()
        .coin(coin())
        .db_dir(db.path())
        .daemon(daemon_for(&node, &[dead]))
        .build()?;
    c.start()?;
    tokio::time::timeout(Duration::from_secs(60), c.wait_caught_up()).await??;
    assert_index_matches_ledger(&c.index(), &chain.ledger(), chain.height())?;
    c.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reorg_deeper_than_the_limit_stops_with_a_consistent_database() -> Result<()> {
    let node = RegtestNode::start().await?;
    let mut chain = ChainGen::new(GenParams {
        seed: 3,
        ..GenParams::default()
    });
    chain.mine(&node, 130).await?;
    let db = tempfile::tempdir()?;
    let c = controller(&node, db.path(), PrefetchOptions::default(), Some(4));
    c.start()?;
    c.wait_caught_up().await?;
    let before = chain.ledger();
    let height_before = chain.height();
    chain.reorg(&node, 6).await?;
    c.notify_new_block();
    let mut status = c.status();
    let s = tokio::time::timeout(Duration::from_secs(60), status.wait_for(|s| s.stopped))
        .await??
        .clone();
    let err = s.error.expect("stopped with an error");
    assert!(err.contains("REORG_LIMIT"), "{err}");
    assert!(c.stop().await.is_err());
    drop(c);
    // The database is intact at the old tip.
    let index = Index::open(db.path(), &coin())?;
    assert_index_matches_ledger(&index, &before, height_before)?;
    Ok(())
}
