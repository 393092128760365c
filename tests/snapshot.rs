//! Replicas from a snapshot, with the real binary on a real regtest node: a server synced on
//! a chain with some history takes a snapshot over LocalRPC (`electrumx-rpc snapshot DIR`)
//! while clients query it, and more while blocks are mined; the snapshot's metadata names
//! its height and tip; a second server started on a real copy of it (`cp -r`) resumes at
//! the snapshot's height (it indexes only the blocks mined since), reaches the tip and
//! answers history, balance, UTXO and header queries as the first does (asked with the
//! third-party `electrum-client`). A snapshot into a non-empty directory is refused, and a
//! copy started for another chain is refused.

use anyhow::{Context, Result, bail};
use electrum_client::{Client, ElectrumApi};
use electrumx_core::{ChainIndex, CoinParams, Index};
use electrumx_testkit::chaingen::{ChainGen, GenParams, ScriptKind};
use electrumx_testkit::node::{RegtestNode, free_port};
use electrumx_testkit::rawclient::RawConn;
use electrumx_testkit::server::{ServerProcess, regtest_env, set_env};
use serde_json::{Value, json};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Runs our `electrumx-rpc` against `port`: (success, stdout).
fn rpc(port: u16, args: &[&str]) -> Result<(bool, String)> {
    let out = Command::new(electrumx_testkit::workspace_binary("electrumx-rpc"))
        .env_remove("RPC_PORT")
        .arg("-p")
        .arg(port.to_string())
        .args(args)
        .output()?;
    Ok((
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    ))
}

fn rpc_json(port: u16, args: &[&str]) -> Result<Value> {
    let (ok, text) = rpc(port, args)?;
    if !ok {
        bail!("electrumx-rpc {args:?} failed: {text}");
    }
    serde_json::from_str(&text).with_context(|| format!("not JSON: {text}"))
}

/// A server on `db` with a client port and a LocalRPC port.
fn start_server(node: &RegtestNode, db: &Path) -> Result<(ServerProcess, u16, u16)> {
    let (tcp, admin) = (free_port(), free_port());
    let mut env = regtest_env(node, db);
    set_env(
        &mut env,
        "SERVICES",
        format!("tcp://127.0.0.1:{tcp},rpc://127.0.0.1:{admin}"),
    );
    Ok((ServerProcess::start(&env)?, tcp, admin))
}

fn script(w: u32) -> electrum_client::bitcoin::ScriptBuf {
    electrum_client::bitcoin::ScriptBuf::from_bytes(ScriptKind::Wallet(w).script())
}

/// A sample of answers: the tip, headers, and each wallet's history, balance and UTXOs.
fn answers(client: &Client, wallets: u32, tip: u32) -> Result<Vec<String>> {
    let mut out = Vec::new();
    let t = client.block_headers_subscribe_raw()?;
    out.push(format!("tip {} {}", t.height, const_hex::encode(&t.header)));
    for h in [0, 1, tip / 3, tip / 2, tip - 1, tip] {
        out.push(format!(
            "header {h} {:?}",
            client.block_header_raw(h as usize)?
        ));
    }
    let chunk = client.block_headers(0, tip as usize + 1)?;
    out.push(format!("headers {} {:?}", chunk.count, chunk.headers));
    for w in 0..wallets {
        let s = script(w);
        let history: Vec<_> = client
            .script_get_history(&s)?
            .iter()
            .map(|h| format!("{}:{}", h.tx_hash, h.height))
            .collect();
        let balance = client.script_get_balance(&s)?;
        let utxos: Vec<_> = client
            .script_list_unspent(&s)?
            .iter()
            .map(|u| format!("{}:{}:{}:{}", u.tx_hash, u.tx_pos, u.height, u.value))
            .collect();
        out.push(format!(
            "wallet {w}: {history:?} {}/{} {utxos:?}",
            balance.confirmed, balance.unconfirmed
        ));
    }
    Ok(out)
}

fn wait_until(what: &str, timeout: Duration, mut ok: impl FnMut() -> Result<bool>) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        if ok()? {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("timed out waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replica_from_a_snapshot_taken_while_serving() -> Result<()> {
    const WALLETS: u32 = 20;
    let node = RegtestNode::start().await?;
    let mut chain = ChainGen::new(GenParams {
        seed: 21,
        txs_per_block: 15,
        wallets: WALLETS,
        ..GenParams::default()
    });
    chain.mine(&node, 60).await?;
    let tmp = tempfile::tempdir()?;
    let db = tmp.path().join("db");
    let (mut first, tcp, admin) = start_server(&node, &db)?;
    first.wait_for_line("listening for clients", 1, Duration::from_secs(120))?;

    // Clients query the server while the snapshot is taken.
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let url = format!("tcp://127.0.0.1:{tcp}");
    let mut clients = Vec::new();
    for c in 0..2u32 {
        let (stop, done, url) = (stop.clone(), done.clone(), url.clone());
        clients.push(std::thread::spawn(move || -> Result<()> {
            let client = Client::new(&url)?;
            let mut w = c;
            while !stop.load(Ordering::Relaxed) {
                client.script_get_history(&script(w % WALLETS))?;
                client.script_get_balance(&script(w % WALLETS))?;
                client.script_list_unspent(&script(w % WALLETS))?;
                done.fetch_add(1, Ordering::Relaxed);
                w += 2;
            }
            Ok(())
        }));
    }
    wait_until("clients querying", Duration::from_secs(30), || {
        Ok(done.load(Ordering::Relaxed) > 10)
    })?;
    let snap = tmp.path().join("snapshots/at-60");
    let before = done.load(Ordering::Relaxed);
    let meta =
        tokio::task::block_in_place(|| rpc_json(admin, &["snapshot", snap.to_str().unwrap()]))?;
    let tip = chain.blocks.last().unwrap();
    assert_eq!(meta["height"], 60, "{meta}");
    assert_eq!(meta["tip_hash"], tip.hash.to_display_hex(), "{meta}");
    assert_eq!(meta["db_version"], 4);
    assert_eq!(
        meta["genesis"],
        electrumx_testkit::chaingen::REGTEST_GENESIS
    );
    assert_eq!(
        (&meta["coin"], &meta["network"]),
        (&json!("BitcoinSV"), &json!("regtest"))
    );
    assert!(
        meta["software"]
            .as_str()
            .unwrap()
            .starts_with("electrumx-rs ")
    );
    assert!(meta["bytes"].as_u64().unwrap() > 0);
    assert_eq!(meta["directory"], snap.display().to_string());
    let file: Value =
        serde_json::from_slice(&std::fs::read(snap.join("electrumx-snapshot.json"))?)?;
    assert_eq!(file["tip_hash"], meta["tip_hash"]);
    assert_eq!(file["created"], meta["created"]);
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        done.load(Ordering::Relaxed) > before,
        "clients were served across the snapshot"
    );
    first.wait_for_line("snapshot taken", 1, Duration::from_secs(5))?;

    // Into a directory that exists and is not empty: refused, clearly; a relative path
    // over LocalRPC too.
    let (ok, text) =
        tokio::task::block_in_place(|| rpc(admin, &["snapshot", snap.to_str().unwrap()]))?;
    assert!(
        !ok && text.contains("already exists and is not an empty directory"),
        "{text}"
    );
    let mut raw = RawConn::connect(admin)?;
    let answer = raw.call("snapshot", json!(["relative/dir"]));
    assert!(
        format!("{answer:?}").contains("not an absolute path"),
        "{answer:?}"
    );

    // Snapshots taken while blocks are mined and indexed: each at a block boundary, its
    // metadata naming the block it holds.
    let taker = {
        let base = tmp.path().join("snapshots");
        tokio::task::spawn_blocking(move || -> Result<Vec<Value>> {
            let mut metas = Vec::new();
            for i in 0..6 {
                let dir = base.join(format!("during-{i}"));
                metas.push(rpc_json(admin, &["snapshot", dir.to_str().unwrap()])?);
                std::thread::sleep(Duration::from_millis(150));
            }
            Ok(metas)
        })
    };
    chain.mine(&node, 15).await?;
    let metas = taker.await??;
    let coin = CoinParams::from_names("BitcoinSV", "regtest")?;
    let mut last = 0;
    for m in &metas {
        let h = m["height"].as_u64().unwrap() as u32;
        assert!((60..=75).contains(&h) && h >= last, "{m}");
        last = h;
        assert_eq!(
            m["tip_hash"],
            chain.blocks[h as usize - 1].hash.to_display_hex(),
            "{m}"
        );
        let index = Index::open(Path::new(m["directory"].as_str().unwrap()), &coin)?;
        assert_eq!(
            index.tip().map(|(h, hash)| (h, hash.to_display_hex())),
            Some((h, m["tip_hash"].as_str().unwrap().to_string()))
        );
        drop(index);
        std::fs::remove_dir_all(m["directory"].as_str().unwrap())?;
    }
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().expect("client thread")?;
    }

    // More blocks; then a replica on a real copy (as on another host), same node.
    chain.mine(&node, 5).await?;
    let height = chain.height();
    assert_eq!(height, 80);
    wait_until(
        "the first server at the tip",
        Duration::from_secs(60),
        || Ok(rpc_json(admin, &["getinfo"])?["db height"] == height),
    )?;
    let replica = tmp.path().join("replica");
    let status = Command::new("cp")
        .arg("-r")
        .arg(&snap)
        .arg(&replica)
        .status()?;
    assert!(status.success());
    let (mut second, tcp2, admin2) = start_server(&node, &replica)?;
    let opened = second.wait_for_line("index opened", 1, Duration::from_secs(60))?;
    assert!(opened.contains("height=Some(60)"), "{opened}");
    second.wait_for_line("listening for clients", 1, Duration::from_secs(60))?;
    let sync = rpc_json(admin2, &["sync"])?;
    assert_eq!(sync["db height"], height);
    assert_eq!(
        sync["blocks this run"],
        height - 60,
        "only the blocks since the snapshot were indexed: {sync}"
    );

    let (a, b) = tokio::task::block_in_place(|| -> Result<_> {
        let a = answers(&Client::new(&url)?, WALLETS, height)?;
        let b = answers(
            &Client::new(&format!("tcp://127.0.0.1:{tcp2}"))?,
            WALLETS,
            height,
        )?;
        Ok((a, b))
    })?;
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(x, y);
    }

    // It follows its node.
    chain.mine(&node, 2).await?;
    for port in [admin, admin2] {
        wait_until(
            "both servers at the new tip",
            Duration::from_secs(60),
            || Ok(rpc_json(port, &["getinfo"])?["db height"] == height + 2),
        )?;
    }
    second.signal("TERM")?;
    assert!(second.wait_exit(Duration::from_secs(30))?.success());

    // A copy started for another chain is refused before anything is written.
    let other = tmp.path().join("other-chain");
    assert!(
        Command::new("cp")
            .arg("-r")
            .arg(&snap)
            .arg(&other)
            .status()?
            .success()
    );
    let mut env = regtest_env(&node, &other);
    set_env(&mut env, "COIN", "Bitcoin");
    set_env(&mut env, "NET", "testnet");
    set_env(
        &mut env,
        "SERVICES",
        format!("rpc://127.0.0.1:{}", free_port()),
    );
    let mut wrong = ServerProcess::start(&env)?;
    let status = wrong.wait_exit(Duration::from_secs(30))?;
    let log = wrong.tail(20).join("\n");
    assert!(!status.success(), "{log}");
    assert!(log.contains("is for genesis"), "{log}");

    first.signal("TERM")?;
    assert!(first.wait_exit(Duration::from_secs(30))?.success());
    Ok(())
}
