//! A full disk under `DB_DIRECTORY` (a size-capped tmpfs): during the initial sync and at
//! the tip the server stops with a clear error, keeps what it committed, and once space is
//! freed a restart resumes from there without a resync and reaches the node's tip.
//!
//! Needs root (it mounts a tmpfs), as CI on this machine runs.

use anyhow::{Context, Result, bail};
use electrumx_core::{ChainIndex, CoinParams, Index};
use electrumx_testkit::chaingen::{ChainGen, GenParams, Ledger};
use electrumx_testkit::check::assert_index_matches_ledger;
use electrumx_testkit::node::RegtestNode;
use electrumx_testkit::server::{ServerProcess, regtest_env, set_env};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// A tmpfs of a given size, unmounted on drop.
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(mb: u32) -> Result<SmallDisk> {
        let dir = tempfile::tempdir()?;
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mb}m"), "tmpfs"])
            .arg(dir.path())
            .status()
            .context("running mount")?;
        if !status.success() {
            bail!("cannot mount a tmpfs (this test needs root)");
        }
        Ok(SmallDisk { dir })
    }

    fn path(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }

    fn resize(&self, mb: u32) -> Result<()> {
        let status = Command::new("mount")
            .args(["-o", &format!("remount,size={mb}m")])
            .arg(self.dir.path())
            .status()?;
        if !status.success() {
            bail!("remount failed");
        }
        Ok(())
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

fn coin() -> CoinParams {
    CoinParams::from_names("BitcoinSV", "regtest").unwrap()
}

/// The committed height of the database at `db` (checked to be the chain's prefix).
fn committed(db: &Path, chain: &ChainGen) -> Result<u32> {
    let index = Index::open(db, &coin())?;
    let Some((height, _)) = index.tip() else {
        return Ok(0);
    };
    assert_index_matches_ledger(
        &index,
        &Ledger::from_blocks(&chain.blocks[..height as usize]),
        height,
    )?;
    Ok(height)
}

fn server_env(node: &RegtestNode, db: &Path) -> Vec<(&'static str, String)> {
    let mut env = regtest_env(node, db);
    set_env(&mut env, "CACHE_MB", "1");
    set_env(&mut env, "PREFETCH_MB", "1");
    set_env(&mut env, "SERVICES", "");
    env
}

/// Waits for the process to exit by itself; returns its log.
fn wait_stopped(server: &mut ServerProcess, what: &str) -> Result<String> {
    let status = server
        .wait_exit(Duration::from_secs(120))
        .with_context(|| format!("the server did not stop on a full disk ({what})"))?;
    let log = server.log.join("\n");
    assert!(
        !status.success(),
        "a full disk is an error exit ({what}): {log}"
    );
    assert!(
        log.contains("No space left on device") || log.contains("space"),
        "the error names the full disk ({what}): {}",
        server.tail(10).join("\n")
    );
    assert!(
        !log.contains("panicked"),
        "no panic ({what}): {}",
        server.tail(10).join("\n")
    );
    Ok(log)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_stops_cleanly_and_a_restart_resumes() -> Result<()> {
    let node = RegtestNode::start().await?;
    let mut chain = ChainGen::new(GenParams {
        seed: 33,
        txs_per_block: 120,
        wallets: 400,
        ..GenParams::default()
    });
    chain.mine(&node, 400).await?;
    // Too small for the whole index: the initial sync runs out of space.
    let disk = SmallDisk::mount(3)?;
    let db = disk.path().join("db");
    let env = server_env(&node, &db);
    let mut server = ServerProcess::start(&env)?;
    wait_stopped(&mut server, "initial sync")?;
    drop(server);
    // Room again (opening the database writes, so it is checked after): what was committed
    // is a prefix of the chain, and the restart resumes from it and catches up.
    disk.resize(256)?;
    let before = committed(&db, &chain)?;
    assert!(before < chain.height(), "the sync did not run out of space");
    let mut server = ServerProcess::start(&env)?;
    let line = server.wait_for_line("index opened", 1, Duration::from_secs(60))?;
    assert!(
        line.contains(&format!("height=Some({before})")) || before == 0,
        "resumed at the committed height {before}: {line}"
    );
    server.wait_for_line("caught up with the node", 1, Duration::from_secs(180))?;
    server.signal("TERM")?;
    assert!(server.wait_exit(Duration::from_secs(60))?.success());
    drop(server);
    assert_eq!(committed(&db, &chain)?, chain.height());

    // At the tip: the disk fills while following new blocks.
    let mut server = ServerProcess::start(&env)?;
    server.wait_for_line("caught up with the node", 1, Duration::from_secs(120))?;
    let filler = disk.path().join("filler");
    let _ = Command::new("dd")
        .args(["if=/dev/zero", &format!("of={}", filler.display()), "bs=1M"])
        .stderr(std::process::Stdio::null())
        .status()?;
    chain.mine(&node, 30).await?;
    wait_stopped(&mut server, "at the tip")?;
    drop(server);
    std::fs::remove_file(&filler)?;
    let at_tip = committed(&db, &chain)?;
    let mut server = ServerProcess::start(&env)?;
    let line = server.wait_for_line("index opened", 1, Duration::from_secs(60))?;
    assert!(
        line.contains(&format!("height=Some({at_tip})")),
        "resumed at {at_tip}: {line}"
    );
    server.wait_for_line("caught up with the node", 1, Duration::from_secs(120))?;
    server.signal("TERM")?;
    assert!(server.wait_exit(Duration::from_secs(60))?.success());
    drop(server);
    assert_eq!(committed(&db, &chain)?, chain.height());
    Ok(())
}
