//! The embedding examples, run as a user would run them: the wallet backend and the
//! in-process server harness against a real regtest node, and the custom block source on
//! real mainnet block files. Their output is checked against the chain's own ledger.

use anyhow::{Context, Result, bail};
use electrumx_core::ScriptHash;
use electrumx_testkit::chaingen::{ChainGen, GenParams, Ledger};
use electrumx_testkit::node::RegtestNode;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

fn example(name: &str) -> PathBuf {
    let bin = electrumx_testkit::workspace_binary("electrumx-server");
    let path = bin.parent().unwrap().join("examples").join(name);
    assert!(
        path.exists(),
        "{} not built: run `cargo build --release --workspace --examples` first",
        path.display()
    );
    path
}

/// A running example with its stdout lines.
struct Running {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Running {
    fn start(name: &str, args: &[String]) -> Result<Running> {
        let mut child = Command::new(example(name))
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let out = child.stdout.take().context("stdout")?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Ok(Running {
            child,
            lines: rx,
            seen: Vec::new(),
        })
    }

    /// The next line containing `needle`.
    fn wait_for(&mut self, needle: &str, timeout: Duration) -> Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => {
                    self.seen.push(l.clone());
                    if l.contains(needle) {
                        return Ok(l);
                    }
                }
                Err(_) => bail!("no line with {needle:?}; output so far: {:?}", self.seen),
            }
        }
    }

    fn wait_exit(&mut self, timeout: Duration) -> Result<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.child.try_wait()? {
                return Ok(s);
            }
            if Instant::now() > deadline {
                bail!("did not exit; output: {:?}", self.seen);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The script with the longest history, its hash and its history.
fn busiest(chain: &ChainGen) -> (Vec<u8>, ScriptHash) {
    let ledger = Ledger::from_blocks(&chain.blocks);
    let mut best = (Vec::new(), ScriptHash::of_script(&[]), 0);
    for b in &chain.blocks {
        for tx in &b.txs {
            for (_, kind) in &tx.outputs {
                let script = kind.script();
                let sh = ScriptHash::of_script(&script);
                let n = ledger.history.get(&sh).map_or(0, Vec::len);
                if n > best.2 {
                    best = (script, sh, n);
                }
            }
        }
    }
    (best.0, best.1)
}

fn summary(ledger: &Ledger, sh: &ScriptHash) -> String {
    let n = ledger.history.get(sh).map_or(0, Vec::len);
    format!(
        "{}: balance {} sat, {n} transactions",
        sh.to_hex(),
        ledger.balance(sh)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wallet_backend_example_follows_new_blocks() -> Result<()> {
    let node = RegtestNode::start().await?;
    let mut chain = ChainGen::new(GenParams {
        seed: 11,
        txs_per_block: 15,
        wallets: 10,
        ..GenParams::default()
    });
    chain.mine(&node, 30).await?;
    let (script, sh) = busiest(&chain);
    let db = tempfile::tempdir()?;
    let mut ex = Running::start(
        "watch_scripts",
        &[
            node.rpc_url_with_auth()?,
            "BitcoinSV".into(),
            "regtest".into(),
            db.path().display().to_string(),
            const_hex::encode(&script),
        ],
    )?;
    ex.wait_for("caught up at height 30", Duration::from_secs(60))?;
    let line = ex.wait_for(&sh.to_hex(), Duration::from_secs(10))?;
    assert_eq!(line, summary(&Ledger::from_blocks(&chain.blocks), &sh));

    // Mine until a block touches the script: the example reports the new state.
    let before = Ledger::from_blocks(&chain.blocks)
        .history
        .get(&sh)
        .map_or(0, Vec::len);
    let mut touched = false;
    for _ in 0..20 {
        chain.mine(&node, 1).await?;
        let ledger = Ledger::from_blocks(&chain.blocks);
        ex.wait_for(
            &format!("new tip {}", chain.height()),
            Duration::from_secs(30),
        )?;
        if ledger.history.get(&sh).map_or(0, Vec::len) > before {
            let line = ex.wait_for(&sh.to_hex(), Duration::from_secs(10))?;
            assert_eq!(line, summary(&ledger, &sh));
            touched = true;
            break;
        }
    }
    assert!(touched, "the busiest script was touched by a new block");
    // Ctrl-C stops it cleanly.
    let pid = ex.child.id().to_string();
    Command::new("kill").args(["-INT", &pid]).status()?;
    assert!(ex.wait_exit(Duration::from_secs(30))?.success());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_process_server_example_answers_a_third_party_client() -> Result<()> {
    let node = RegtestNode::start().await?;
    let mut chain = ChainGen::new(GenParams {
        seed: 12,
        txs_per_block: 10,
        wallets: 10,
        ..GenParams::default()
    });
    chain.mine(&node, 25).await?;
    let (script, sh) = busiest(&chain);
    let ledger = Ledger::from_blocks(&chain.blocks);
    let db = tempfile::tempdir()?;
    let mut ex = Running::start(
        "server_harness",
        &[
            node.rpc_url_with_auth()?,
            "BitcoinSV".into(),
            "regtest".into(),
            db.path().display().to_string(),
            const_hex::encode(&script),
        ],
    )?;
    ex.wait_for("index caught up at height 25", Duration::from_secs(60))?;
    assert_eq!(
        ex.wait_for("client: tip", Duration::from_secs(30))?,
        "client: tip height 25"
    );
    let n = ledger.history.get(&sh).map_or(0, Vec::len);
    assert_eq!(
        ex.wait_for("client: balance", Duration::from_secs(10))?,
        format!(
            "client: balance {} sat, {n} transactions",
            ledger.balance(&sh)
        )
    );
    ex.wait_for("stopped", Duration::from_secs(30))?;
    assert!(ex.wait_exit(Duration::from_secs(10))?.success());
    Ok(())
}

#[test]
fn block_file_example_indexes_real_mainnet_blocks() -> Result<()> {
    let dir = electrumx_testkit::shared_dir().join("data/mainnet-blocks/run-0000000-0000438");
    let db = tempfile::tempdir()?;
    // The script hash of block 1's coinbase output, never spent.
    let sh = "cc0d7111befe9f24f1824c797e837c5cff2f8773901ccb9aca0372a2a6c48d34";
    let mut ex = Running::start(
        "index_block_files",
        &[
            dir.display().to_string(),
            db.path().display().to_string(),
            sh.into(),
        ],
    )?;
    ex.wait_for("indexed to height 438", Duration::from_secs(60))?;
    assert_eq!(
        ex.wait_for("balance:", Duration::from_secs(10))?,
        "balance: 5000000000 sat"
    );
    assert_eq!(
        ex.wait_for("utxo", Duration::from_secs(10))?,
        "utxo 0e3e2357e806b6cdb1f70b54c3a3a17b6714ee1f0e68bebb44a74b1efd512098:0 at height 1: 5000000000 sat"
    );
    assert!(ex.wait_exit(Duration::from_secs(30))?.success());
    Ok(())
}
