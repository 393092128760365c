//! Height-dependent paths on a chain of 100,000+ blocks: a mainnet-shaped chain written by
//! testkit's `blockgen` as obfuscated `blk*.dat` files (segwit and taproot spends,
//! consolidations, batch payouts, a block of 12,000 transactions, scripts with tens of
//! thousands of transactions), indexed offline from its files by the real server, then
//! queried as wallets do at height: the sampled scripts against the generator's truth
//! (histories over the limit refused with 10001), `cp_height` proofs checked against the
//! merkle root of the files' block hashes, header ranges, merkle proofs and transactions
//! in the large block checked against the blocks rust-bitcoin decodes from the files.

use anyhow::{Context, Result, bail};
use bitcoin::consensus::Decodable;
use bitcoin::hashes::{Hash, HashEngine, sha256};
use electrumx_core::daemon::{BlockFileDaemon, Daemon};
use electrumx_core::parse::merkle_root;
use electrumx_core::{ChainIndex, CoinParams, Hash32, Index, ScriptHash};
use electrumx_testkit::blockgen::{BlockGen, ShapeParams, check_truth, read_truth};
use electrumx_testkit::node::free_port;
use electrumx_testkit::rawclient::RawConn;
use electrumx_testkit::server::ServerProcess;
use serde_json::{Value, json};
use std::ops::ControlFlow;
use std::time::Duration;

const BLOCKS: u32 = 100_000;
/// `MAX_SEND` of the test server: histories over 10,099 entries are refused (10001).
const MAX_SEND: u64 = 1_000_000;
const MAX_HISTORY: u64 = (MAX_SEND - 100) / 99;

fn h32(hex: &Value) -> Hash32 {
    Hash32::from_display_hex(hex.as_str().expect("hex string")).expect("32-byte hex")
}

/// Folds a merkle branch (display-order hex, as the protocol sends it) from `leaf` at
/// `index`; returns the root it proves.
fn fold_branch(leaf: Hash32, mut index: u64, branch: &Value) -> Hash32 {
    let mut h = leaf;
    for b in branch.as_array().expect("branch array") {
        let b = h32(b);
        let mut buf = [0u8; 64];
        if index & 1 == 1 {
            buf[..32].copy_from_slice(&b.0);
            buf[32..].copy_from_slice(&h.0);
        } else {
            buf[..32].copy_from_slice(&h.0);
            buf[32..].copy_from_slice(&b.0);
        }
        h = Hash32::sha256d(&buf);
        index >>= 1;
    }
    h
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mainnet_shaped_chain_of_100_000_blocks_answers_at_height() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let blocks_dir = dir.path().join("blocks");
    let summary = BlockGen::new(ShapeParams {
        blocks: BLOCKS,
        txs: 500_000,
        big_blocks: 1,
        reused_scripts: 200_000,
        xor: Some([0x3c, 0x99, 0x01, 0xfe, 0x00, 0x42, 0x7a, 0xd5]),
        file_size: 32 << 20,
        sample_one_in: 1 << 10,
        ..ShapeParams::default()
    })
    .write(&blocks_dir, |_| {})?;
    assert!(summary.files >= 4, "{summary:?}");
    assert_eq!(summary.big_blocks.len(), 1);
    let big = summary.big_blocks[0];

    let port = free_port();
    let env = [
        ("COIN", "Bitcoin".to_string()),
        ("NET", "regtest".into()),
        ("BLOCKS_DIR", blocks_dir.display().to_string()),
        ("DB_DIRECTORY", dir.path().join("db").display().to_string()),
        ("SERVICES", format!("tcp://127.0.0.1:{port}")),
        ("PEER_DISCOVERY", "off".into()),
        ("MAX_SEND", MAX_SEND.to_string()),
        // The truth check asks for every sampled script's history back to back.
        ("COST_SOFT_LIMIT", "0".into()),
        ("COST_HARD_LIMIT", "0".into()),
        ("LOG_LEVEL", "info".into()),
    ];
    let mut server = ServerProcess::start(&env)?;
    server.wait_for_line(
        &format!("caught up with the node height={BLOCKS}"),
        1,
        Duration::from_secs(300),
    )?;
    server.wait_for_line("listening for clients on tcp", 1, Duration::from_secs(30))?;

    // Every sampled script: balance, history length (or 10001 over the limit), UTXOs.
    let truth = read_truth(&blocks_dir)?;
    let report =
        tokio::task::spawn_blocking(move || check_truth(port, &truth, MAX_HISTORY)).await??;
    assert!(report.mismatches.is_empty(), "{:#?}", report.mismatches);
    assert!(report.scripts > 100, "{report:?}");
    assert!(
        report.histories_too_large >= 1,
        "the heaviest script's history is over the limit: {report:?}"
    );

    // The heaviest script's status: hashed in full once, then brought up to date from
    // the saved midstate (a seek to its last block; nothing new here), by a second session.
    let heavy = read_truth(&blocks_dir)?
        .into_iter()
        .max_by_key(|t| t["history"].as_u64())
        .context("truth")?;
    let heavy_sh = heavy["scripthash"].clone();
    let mut first = RawConn::connect(port)?;
    first.result("server.version", json!(["at-height", "1.4"]))?;
    let status = first.result("blockchain.scripthash.subscribe", json!([heavy_sh]))?;
    let mut second = RawConn::connect(port)?;
    second.result("server.version", json!(["at-height", "1.4"]))?;
    let again = second.result("blockchain.scripthash.subscribe", json!([heavy_sh]))?;
    assert_eq!(status, again);
    assert!(status.is_string());

    // The files, read independently of the index: block hashes and raw blocks.
    let genesis = Hash32::from_display_hex(electrumx_testkit::chaingen::REGTEST_GENESIS)
        .context("genesis")?;
    let files = BlockFileDaemon::open(&blocks_dir, genesis)?;
    let hashes = files.block_hashes(0, BLOCKS + 1).await?;
    assert_eq!(hashes.len() as u32, BLOCKS + 1);

    let mut conn = RawConn::connect(port)?;
    conn.result("server.version", json!(["at-height", "1.4"]))?;
    let tip = conn.result("blockchain.headers.subscribe", json!([]))?;
    assert_eq!(tip["height"], json!(BLOCKS));
    let tip_header = const_hex::decode(tip["hex"].as_str().context("hex")?)?;
    assert_eq!(Hash32::sha256d(&tip_header), hashes[BLOCKS as usize]);

    // cp_height proofs as Electrum sends them while catching up to its checkpoint, at
    // several checkpoints (the whole chain, one not a power of two, a low one).
    for cp in [BLOCKS, BLOCKS - 1, 65_537, 1000] {
        let root = merkle_root(hashes[..=cp as usize].iter().copied());
        for h in [0, 1, cp / 2, cp.saturating_sub(2016), cp - 1, cp] {
            let r = conn.result("blockchain.block.header", json!([h, cp]))?;
            let header = const_hex::decode(r["header"].as_str().context("header")?)?;
            let leaf = Hash32::sha256d(&header);
            assert_eq!(leaf, hashes[h as usize], "header {h}");
            assert_eq!(h32(&r["root"]), root, "root at cp {cp}");
            assert_eq!(
                fold_branch(leaf, h as u64, &r["branch"]),
                root,
                "{h} cp {cp}"
            );
        }
        // A header range with a proof of its last header.
        let start = cp.saturating_sub(10);
        let r = conn.result("blockchain.block.headers", json!([start, 11, cp]))?;
        let hex = const_hex::decode(r["hex"].as_str().context("hex")?)?;
        assert_eq!(r["count"], json!(cp - start + 1));
        for (i, header) in hex.chunks(80).enumerate() {
            assert_eq!(Hash32::sha256d(header), hashes[start as usize + i]);
        }
        let last = Hash32::sha256d(&hex[hex.len() - 80..]);
        assert_eq!(fold_branch(last, cp as u64, &r["branch"]), root);
    }
    // A full chunk of 2016 headers in the middle of the chain.
    let r = conn.result("blockchain.block.headers", json!([50_400, 2016]))?;
    let hex = const_hex::decode(r["hex"].as_str().context("hex")?)?;
    assert_eq!(hex.len(), 2016 * 80);
    assert_eq!(Hash32::sha256d(&hex[..80]), hashes[50_400]);
    assert_eq!(
        Hash32::sha256d(&hex[hex.len() - 80..]),
        hashes[50_400 + 2015]
    );

    // The block of 12,000 transactions, decoded by rust-bitcoin from the files: merkle
    // proofs and transactions at several positions.
    let raw = files.raw_blocks(&[hashes[big as usize]]).await?.remove(0);
    let block = bitcoin::Block::consensus_decode(&mut raw.as_slice())?;
    assert!(block.txdata.len() > 10_000);
    let merkle = Hash32(*block.header.merkle_root.as_ref());
    let mut segwit_seen = false;
    for pos in [0, 1, 4095, 4096, 7777, block.txdata.len() - 1] {
        let tx = &block.txdata[pos];
        let txid = tx.compute_txid().to_string();
        let id = conn.result("blockchain.transaction.id_from_pos", json!([big, pos]))?;
        assert_eq!(id, json!(txid), "pos {pos}");
        let m = conn.result("blockchain.transaction.get_merkle", json!([txid, big]))?;
        assert_eq!(m["pos"], json!(pos));
        assert_eq!(
            fold_branch(
                Hash32::from_display_hex(&txid).context("txid")?,
                pos as u64,
                &m["merkle"]
            ),
            merkle,
            "pos {pos}"
        );
        let got = conn.result("blockchain.transaction.get", json!([txid]))?;
        let want = const_hex::encode(bitcoin::consensus::serialize(tx));
        assert_eq!(got, json!(want), "pos {pos}");
        segwit_seen |= tx.input.iter().any(|i| !i.witness.is_empty());
    }
    assert!(segwit_seen, "segwit transactions in the large block");

    server.signal("TERM")?;
    let exit = server.wait_exit(Duration::from_secs(60))?;
    if !exit.success() {
        bail!("server exit: {exit:?}\n{}", server.tail(20).join("\n"));
    }

    // The index itself: the heavy script's whole history gives the status the server sent,
    // and reading it from a height gives exactly the entries from there.
    let coin = CoinParams::from_names("Bitcoin", "regtest")?;
    let index = Index::open(&dir.path().join("db"), &coin)?;
    let sh = ScriptHash::from_hex(heavy_sh.as_str().context("hex")?).context("scripthash")?;
    let mut full = Vec::new();
    index.visit_history(&sh, &mut |item| {
        full.push(item);
        ControlFlow::Continue(())
    })?;
    assert_eq!(
        full.len() as u64,
        heavy["history"].as_u64().context("history")?
    );
    let mut engine = sha256::Hash::engine();
    for item in &full {
        engine.input(format!("{}:{}:", item.txid.to_display_hex(), item.height).as_bytes());
    }
    let want = const_hex::encode(sha256::Hash::from_engine(engine).to_byte_array());
    assert_eq!(status, json!(want));
    let last = full.last().context("history")?.height;
    for from in [
        0,
        1,
        full[full.len() / 2].height,
        last,
        last + 1,
        BLOCKS + 1,
    ] {
        let got = index.history_from_height(&sh, from, usize::MAX)?;
        let want: Vec<_> = full.iter().filter(|h| h.height >= from).cloned().collect();
        assert_eq!(got, want, "from height {from}");
    }
    assert_eq!(
        index.history_from_height(&sh, last, 3)?.len(),
        3.min(full.iter().filter(|h| h.height >= last).count())
    );
    Ok(())
}
