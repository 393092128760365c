//! The initial sync from the node's own block files (`HybridDaemon`) against the real
//! regtest node (Bitcoin SV 1.0.13, unobfuscated `blocks/blk*.dat`): reading the files of
//! the running node while it mines and reorganises, the node restarted in the middle, an
//! xor-obfuscated copy of its files, and truncated and corrupt copies. Every index is
//! compared with the generator's ledger (what an RPC-only sync gives, tested in
//! `regtest_index.rs`), so a block taken from a file is never a wrong one.

use anyhow::{Result, ensure};
use async_trait::async_trait;
use electrumx_core::daemon::{
    BlockFileStats, Daemon, DaemonResult, DaemonUrl, HybridDaemon, RpcDaemon, RpcDaemonConfig,
};
use electrumx_core::{BlockHash, ChainIndex, CoinParams, Controller, PrefetchOptions};
use electrumx_testkit::chaingen::{ChainGen, GenParams};
use electrumx_testkit::check::assert_index_matches_ledger;
use electrumx_testkit::node::RegtestNode;
use rand::{Rng, SeedableRng};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

fn coin() -> CoinParams {
    CoinParams::from_names("BitcoinSV", "regtest").unwrap()
}

fn rpc(node: &RegtestNode) -> Arc<RpcDaemon> {
    let urls = DaemonUrl::parse_list(&node.rpc_url(), 18332).unwrap();
    let mut cfg = RpcDaemonConfig::new(urls);
    cfg.cookie_file = Some(node.cookie_path());
    cfg.max_retry_delay = Duration::from_millis(500);
    Arc::new(RpcDaemon::new(cfg, CancellationToken::new()).unwrap())
}

fn blocks_dir(node: &RegtestNode) -> PathBuf {
    node.datadir().join("regtest").join("blocks")
}

/// A daemon that delays each `raw_blocks` call by a settable number of milliseconds, so
/// that a test can act while the sync is in its file phase.
struct Throttled {
    inner: Arc<HybridDaemon>,
    delay_ms: AtomicU64,
}

#[async_trait]
impl Daemon for Throttled {
    async fn height(&self) -> DaemonResult<u32> {
        self.inner.height().await
    }
    async fn block_hashes(&self, first: u32, count: u32) -> DaemonResult<Vec<BlockHash>> {
        self.inner.block_hashes(first, count).await
    }
    async fn raw_blocks(&self, hashes: &[BlockHash]) -> DaemonResult<Vec<Vec<u8>>> {
        let ms = self.delay_ms.load(Ordering::Relaxed);
        if ms > 0 {
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        self.inner.raw_blocks(hashes).await
    }
    async fn refetch_block(&self, hash: &BlockHash) -> DaemonResult<Option<Vec<u8>>> {
        self.inner.refetch_block(hash).await
    }
    fn describe(&self) -> String {
        self.inner.describe()
    }
}

fn controller(db: &Path, daemon: Arc<dyn Daemon>, prefetch: PrefetchOptions) -> Controller {
    Controller::builder()
        .coin(coin())
        .db_dir(db)
        .daemon(daemon)
        .cache_mb(1)
        .poll_interval(Duration::from_millis(100))
        .prefetch_options(prefetch)
        .build()
        .unwrap()
}

/// A few blocks per request, one request at a time.
fn slow_prefetch() -> PrefetchOptions {
    let mut p = PrefetchOptions::default();
    p.max_blocks_per_request = 4;
    p.concurrent_requests = 1;
    p.memory_budget = 1 << 16;
    p
}

async fn wait_for_tip(controller: &Controller, chain: &ChainGen) -> Result<()> {
    let want = chain.blocks.last().unwrap().hash;
    for _ in 0..1200 {
        if controller.index().tip().map(|t| t.1) == Some(want) {
            return Ok(());
        }
        let status = controller.status().borrow().clone();
        ensure!(!status.stopped, "sync stopped: {:?}", status.error);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    anyhow::bail!("index did not reach the generated tip")
}

/// Syncs from `blocks` (reading the files) with the node's RPC for the rest; checks the
/// index against the ledger and returns the file counters.
async fn sync_and_check(
    node: &RegtestNode,
    chain: &ChainGen,
    blocks: &Path,
) -> Result<BlockFileStats> {
    let hybrid = Arc::new(HybridDaemon::new(rpc(node), blocks, coin().genesis_hash)?);
    let db = tempfile::tempdir()?;
    let c = controller(db.path(), hybrid.clone(), PrefetchOptions::default());
    c.start()?;
    tokio::time::timeout(Duration::from_secs(120), c.wait_caught_up()).await??;
    wait_for_tip(&c, chain).await?;
    assert_index_matches_ledger(&c.index(), &chain.ledger(), chain.height())?;
    c.stop().await?;
    Ok(hybrid.file_stats())
}

fn chain(seed: u64) -> ChainGen {
    ChainGen::new(GenParams {
        seed,
        txs_per_block: 20,
        wallets: 100,
        ..GenParams::default()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_reads_the_running_nodes_files_while_it_mines_and_reorganises() -> Result<()> {
    let node = RegtestNode::start().await?;
    let mut chain = chain(21);
    chain.mine(&node, 300).await?;
    let hybrid = Arc::new(HybridDaemon::new(
        rpc(&node),
        &blocks_dir(&node),
        coin().genesis_hash,
    )?);
    let throttled = Arc::new(Throttled {
        inner: hybrid.clone(),
        delay_ms: AtomicU64::new(100),
    });
    let db = tempfile::tempdir()?;
    let c = controller(db.path(), throttled.clone(), slow_prefetch());
    c.start()?;
    let mut status = c.status();
    status
        .wait_for(|s| s.height.is_some_and(|h| h >= 80))
        .await?;
    // A reorg below the indexed height, while the sync is in its file phase: the last 250
    // blocks are replaced by a longer branch (the node writes it to its files after the
    // stale blocks).
    chain.reorg(&node, 250).await?;
    let at_reorg = c.status().borrow().height.unwrap();
    ensure!(
        at_reorg > 50 && at_reorg < 200,
        "the reorg happened mid-sync (indexed {at_reorg})"
    );
    // The node keeps mining meanwhile.
    chain.mine(&node, 20).await?;
    throttled.delay_ms.store(0, Ordering::Relaxed);
    wait_for_tip(&c, &chain).await?;
    assert_index_matches_ledger(&c.index(), &chain.ledger(), chain.height())?;
    let s = hybrid.file_stats();
    ensure!(s.from_files > 250, "most blocks came from the files: {s:?}");
    ensure!(s.rejected == 0, "{s:?}");
    ensure!(!s.file_phase, "at the tip, blocks come over RPC: {s:?}");
    // Blocks at the tip over RPC.
    chain.mine(&node, 3).await?;
    c.notify_new_block();
    wait_for_tip(&c, &chain).await?;
    assert_index_matches_ledger(&c.index(), &chain.ledger(), chain.height())?;
    ensure!(hybrid.file_stats().from_files == s.from_files);
    // Handled by the controller's reorg logic (no events before the catch-up).
    let reorgs = c.progress().reorgs;
    c.stop().await?;
    ensure!(reorgs >= 1, "the reorg was handled as a reorg");
    eprintln!("indexed {at_reorg} at the reorg, {reorgs} reorg(s); {s:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_restarted_during_the_file_phase() -> Result<()> {
    let mut node = RegtestNode::start().await?;
    let mut chain = chain(22);
    chain.mine(&node, 300).await?;
    let hybrid = Arc::new(HybridDaemon::new(
        rpc(&node),
        &blocks_dir(&node),
        coin().genesis_hash,
    )?);
    let throttled = Arc::new(Throttled {
        inner: hybrid.clone(),
        delay_ms: AtomicU64::new(50),
    });
    let db = tempfile::tempdir()?;
    let c = controller(db.path(), throttled.clone(), slow_prefetch());
    c.start()?;
    let mut status = c.status();
    status
        .wait_for(|s| s.height.is_some_and(|h| h >= 50))
        .await?;
    node.stop().await?;
    let at_stop = c.status().borrow().height.unwrap();
    ensure!(
        at_stop < 250,
        "the node was stopped mid-sync (at {at_stop})"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    ensure!(
        !c.status().borrow().stopped,
        "the index waits for the node instead of failing"
    );
    node.restart().await?;
    chain.mine(&node, 10).await?;
    throttled.delay_ms.store(0, Ordering::Relaxed);
    wait_for_tip(&c, &chain).await?;
    assert_index_matches_ledger(&c.index(), &chain.ledger(), chain.height())?;
    let s = hybrid.file_stats();
    ensure!(s.from_files > 200 && s.rejected == 0, "{s:?}");
    c.stop().await?;
    Ok(())
}

/// The node's block files, copied (the node stopped meanwhile, so they are complete).
async fn copy_blocks(node: &mut RegtestNode, to: &Path) -> Result<Vec<PathBuf>> {
    node.stop().await?;
    std::fs::create_dir_all(to)?;
    let mut files = Vec::new();
    for e in std::fs::read_dir(blocks_dir(node))? {
        let p = e?.path();
        let name = p.file_name().unwrap().to_string_lossy().to_string();
        if name.starts_with("blk") && name.ends_with(".dat") {
            let dst = to.join(&name);
            std::fs::copy(&p, &dst)?;
            files.push(dst);
        }
    }
    files.sort();
    node.restart().await?;
    Ok(files)
}

/// Offsets of the blocks (after their 8 bytes of framing) and their lengths in a plain
/// block file.
fn frames(data: &[u8]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos + 8 <= data.len() && data[pos..pos + 4] != [0; 4] {
        let len = u32::from_le_bytes(data[pos + 4..pos + 8].try_into().unwrap()) as usize;
        out.push((pos + 8, len));
        pos += 8 + len;
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn xor_obfuscated_copy_of_the_nodes_files() -> Result<()> {
    let mut node = RegtestNode::start().await?;
    let mut chain = chain(23);
    chain.mine(&node, 200).await?;
    let copy = tempfile::tempdir()?;
    let files = copy_blocks(&mut node, copy.path()).await?;
    let plain = std::fs::read(&files[0])?;
    ensure!(
        plain[..4] == [0xfa, 0xbf, 0xb5, 0xda],
        "regtest magic, unobfuscated"
    );
    let mut rng = rand::rngs::StdRng::seed_from_u64(5);
    let key: [u8; 8] = rng.random();
    for f in &files {
        let mut data = std::fs::read(f)?;
        for (i, b) in data.iter_mut().enumerate() {
            *b ^= key[i % 8];
        }
        std::fs::write(f, data)?;
    }
    std::fs::write(copy.path().join("xor.dat"), key)?;
    let s = sync_and_check(&node, &chain, copy.path()).await?;
    ensure!(s.from_files >= 190 && s.rejected == 0, "{s:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_and_corrupt_files_fall_back_to_rpc() -> Result<()> {
    let mut node = RegtestNode::start().await?;
    let mut chain = chain(24);
    chain.mine(&node, 250).await?;
    let copy = tempfile::tempdir()?;
    let files = copy_blocks(&mut node, copy.path()).await?;
    let mut data = std::fs::read(&files[0])?;
    let fr = frames(&data);
    ensure!(
        fr.len() >= 251,
        "all blocks in the first file ({})",
        fr.len()
    );
    // Corrupt bodies (same hash, wrong merkle root or unparsable), a corrupt header (another
    // hash), a broken frame, then a cut in the middle of a block.
    for i in [10, 33, 77, 120] {
        let (off, len) = fr[i];
        data[off + len - 10] ^= 0x55;
    }
    data[fr[60].0 + 100] ^= 0x01;
    data[fr[60].0 + 4] ^= 0x01;
    let (off150, _) = fr[150];
    data[off150 - 8..off150 - 4].copy_from_slice(b"oops");
    let (off200, len200) = fr[200];
    data.truncate(off200 + len200 / 2);
    std::fs::write(&files[0], &data)?;
    let s = sync_and_check(&node, &chain, copy.path()).await?;
    ensure!(s.rejected >= 3, "corrupt bodies are fetched again: {s:?}");
    ensure!(s.from_files >= 140, "{s:?}");
    ensure!(s.from_rpc >= 100, "blocks after the broken frame: {s:?}");
    Ok(())
}

/// The binary: `BLOCK_FILES=on` with `DAEMON_DATADIR` reads the node's files, then follows
/// the tip over RPC; the index it leaves matches the ledger.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_reads_the_nodes_files_with_daemon_datadir() -> Result<()> {
    use electrumx_testkit::server::{ServerProcess, regtest_env, set_env};
    let node = RegtestNode::start().await?;
    let mut chain = chain(25);
    chain.mine(&node, 150).await?;
    let db = tempfile::tempdir()?;
    let mut env = regtest_env(&node, db.path());
    set_env(
        &mut env,
        "DAEMON_DATADIR",
        node.datadir().display().to_string(),
    );
    set_env(&mut env, "BLOCK_FILES", "on");
    let mut server = ServerProcess::start(&env)?;
    let line = server.wait_for_line("block files: ", 1, Duration::from_secs(60))?;
    let read: u32 = line
        .split("block files: ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    ensure!(read >= 140, "blocks read from the files: {line}");
    server.wait_for_line("caught up with the node", 1, Duration::from_secs(60))?;
    // New blocks at the tip, over RPC.
    chain.mine(&node, 2).await?;
    // (polled every 100 ms; the ledger check below needs them)
    tokio::time::sleep(Duration::from_secs(3)).await;
    server.signal("TERM")?;
    server.wait_exit(Duration::from_secs(30))?;
    let index = electrumx_core::Index::open(db.path(), &coin())?;
    assert_index_matches_ledger(&index, &chain.ledger(), chain.height())?;
    Ok(())
}
