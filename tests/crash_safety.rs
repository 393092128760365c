//! Crash safety of the real `electrumx-server` binary against a real regtest node: killed
//! with SIGKILL at random moments during the initial sync and at the tip, it always leaves a
//! database that is exactly a prefix of the chain, and restarts and resumes from there.
//! SIGTERM mid-sync stops it cleanly (exit 0) after a flush.

use anyhow::Result;
use electrumx_core::{ChainIndex, CoinParams, Index};
use electrumx_testkit::chaingen::{ChainGen, GenParams, Ledger};
use electrumx_testkit::check::assert_index_matches_ledger;
use electrumx_testkit::node::RegtestNode;
use electrumx_testkit::server::{ServerProcess, regtest_env, set_env};
use rand::{Rng, SeedableRng};
use std::path::Path;
use std::time::Duration;

fn coin() -> CoinParams {
    CoinParams::from_names("BitcoinSV", "regtest").unwrap()
}

fn server_env(node: &RegtestNode, db: &Path) -> Vec<(&'static str, String)> {
    let mut env = regtest_env(node, db);
    set_env(&mut env, "CACHE_MB", "1");
    set_env(&mut env, "PREFETCH_MB", "1");
    set_env(&mut env, "PROGRESS_INTERVAL", "1");
    env
}

/// Opens the database the killed process left and checks it is exactly the chain's prefix
/// up to its own tip. Returns that height.
fn check_prefix(db: &Path, chain: &ChainGen) -> Result<u32> {
    let index = Index::open(db, &coin())?;
    let Some((height, _)) = index.tip() else {
        return Ok(0); // nothing committed yet: the empty prefix
    };
    let blocks = &chain.blocks[..height as usize];
    if height > 0 {
        assert_eq!(
            index.tip().unwrap().1,
            blocks.last().unwrap().hash,
            "tip is a block of the chain"
        );
    }
    assert_index_matches_ledger(&index, &Ledger::from_blocks(blocks), height)?;
    Ok(height)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_sync_and_at_the_tip_always_restarts_cleanly() -> Result<()> {
    let node = RegtestNode::start().await?;
    let mut chain = ChainGen::new(GenParams {
        seed: 21,
        txs_per_block: 60,
        wallets: 300,
        ..GenParams::default()
    });
    chain.mine(&node, 450).await?;
    let db = tempfile::tempdir()?;
    let env = server_env(&node, db.path());
    let mut rng = rand::rngs::StdRng::seed_from_u64(2024);
    let mut heights = Vec::new();

    // Initial sync: kill after a random number of flushes plus a random delay.
    for _ in 0..5 {
        let mut server = ServerProcess::start(&env)?;
        let flushes = rng.random_range(1..=3);
        let line = server.wait_for_line("flush to disk", flushes, Duration::from_secs(120));
        std::thread::sleep(Duration::from_millis(rng.random_range(0..40)));
        server.kill9()?;
        line?;
        heights.push(check_prefix(db.path(), &chain)?);
    }
    eprintln!("heights after each kill: {heights:?} of {}", chain.height());
    assert!(
        heights.iter().any(|h| *h < chain.height()),
        "at least one kill landed mid-sync"
    );
    assert!(
        heights.windows(2).all(|w| w[0] <= w[1]),
        "each restart resumed: {heights:?}"
    );

    // Let it finish, then kill at random moments while blocks arrive at the tip.
    for round in 0..3 {
        let mut server = ServerProcess::start(&env)?;
        server.wait_for_line("caught up with the node", 1, Duration::from_secs(120))?;
        let kill_after = Duration::from_millis(rng.random_range(50..600));
        let mine = async {
            for _ in 0..6 {
                chain.mine(&node, 1).await?;
                tokio::time::sleep(Duration::from_millis(60)).await;
            }
            anyhow::Ok(())
        };
        let killer = async {
            tokio::time::sleep(kill_after).await;
            server.kill9()
        };
        let (mined, killed) = tokio::join!(mine, killer);
        mined?;
        killed?;
        let h =
            check_prefix(db.path(), &chain).map_err(|e| e.context(format!("tip round {round}")))?;
        assert!(
            h + 6 >= chain.height() - 6,
            "killed at the tip, not during a resync ({h})"
        );
    }

    // A clean run catches up and matches the whole ledger.
    let mut server = ServerProcess::start(&env)?;
    server.wait_for_line("caught up with the node", 1, Duration::from_secs(120))?;
    server.signal("TERM")?;
    assert!(server.wait_exit(Duration::from_secs(30))?.success());
    assert_eq!(check_prefix(db.path(), &chain)?, chain.height());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_mid_sync_flushes_and_exits_zero_then_resumes() -> Result<()> {
    let node = RegtestNode::start().await?;
    let mut chain = ChainGen::new(GenParams {
        seed: 8,
        txs_per_block: 60,
        wallets: 300,
        ..GenParams::default()
    });
    chain.mine(&node, 400).await?;
    let db = tempfile::tempdir()?;
    let env = server_env(&node, db.path());
    let mut server = ServerProcess::start(&env)?;
    server.wait_for_line("flush to disk", 2, Duration::from_secs(120))?;
    server.signal("TERM")?;
    let status = server.wait_exit(Duration::from_secs(30))?;
    assert!(
        status.success(),
        "exit status {status}; log: {:?}",
        server.tail(10)
    );
    assert!(
        server
            .tail(50)
            .iter()
            .any(|l| l.contains("stopped cleanly"))
    );
    let h = check_prefix(db.path(), &chain)?;
    assert!(h > 0);
    let mut server = ServerProcess::start(&env)?;
    server.wait_for_line("caught up with the node", 1, Duration::from_secs(120))?;
    server.signal("INT")?;
    assert!(server.wait_exit(Duration::from_secs(30))?.success());
    assert_eq!(check_prefix(db.path(), &chain)?, chain.height());
    Ok(())
}

#[test]
fn bad_settings_fail_at_start_naming_the_variable() -> Result<()> {
    let db = tempfile::tempdir()?;
    let base = |k: &'static str, v: &str| {
        let mut env = vec![
            ("DAEMON_URL", "http://u:p@127.0.0.1:1/".to_string()),
            ("DB_DIRECTORY", db.path().display().to_string()),
            ("COIN", "BitcoinSV".into()),
            ("NET", "regtest".into()),
        ];
        env.retain(|(key, _)| *key != k);
        env.push((k, v.to_string()));
        env
    };
    for (var, value) in [
        ("COIN", "Dogecoin"),
        ("NET", "moonnet"),
        ("CACHE_MB", "lots"),
        ("DAEMON_URL", "ftp://x"),
        ("REORG_LIMIT", "0"),
    ] {
        let mut server = ServerProcess::start(&base(var, value))?;
        let status = server.wait_exit(Duration::from_secs(20))?;
        assert!(!status.success(), "{var}={value} must fail");
        let log = server.tail(20).join("\n");
        assert!(
            log.contains(var) || log.contains(&var.to_lowercase().replace('_', "-")),
            "{var}: {log}"
        );
    }
    Ok(())
}
