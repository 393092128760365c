//! Parsing and indexing of real chain data from `../shared/data`: mainnet (including segwit
//! and taproot blocks), signet, testnet and regtest blocks, and the derived Electrum answers
//! after indexing mainnet blocks 0..438.

use anyhow::Result;
use bitcoin::consensus::Decodable;
use electrumx_core::daemon::BlockFileDaemon;
use electrumx_core::parse::ParsedBlock;
use electrumx_core::{ChainIndex, CoinParams, Controller, Hash32, ScriptHash};
use electrumx_testkit::shared_dir;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::sync::Arc;

fn block_files() -> Vec<PathBuf> {
    let mut out = Vec::new();
    fn walk(p: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(p).expect("shared data present").flatten() {
            let path = e.path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|x| x == "bin")
                && path.to_string_lossy().contains("-blocks")
            {
                out.push(path);
            }
        }
    }
    for net in [
        "mainnet-blocks",
        "signet-blocks",
        "testnet-blocks",
        "regtest-blocks",
    ] {
        walk(&shared_dir().join("data").join(net), &mut out);
    }
    out.sort();
    out
}

fn json(rel: &str) -> Value {
    let text = std::fs::read_to_string(shared_dir().join("data").join(rel)).expect("vector file");
    serde_json::from_str(&text).expect("valid JSON")
}

#[test]
fn every_real_block_parses_with_the_txids_rust_bitcoin_computes() {
    let index = json("index.json");
    let records: std::collections::HashMap<String, &Value> = index["blocks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["hash"].as_str().unwrap().to_string(), r))
        .collect();
    let files = block_files();
    assert!(
        files.len() > 700,
        "expected the shared block files, found {}",
        files.len()
    );
    let mut segwit_blocks = 0;
    for path in files {
        let raw = std::fs::read(&path).unwrap();
        let reference = bitcoin::Block::consensus_decode(&mut raw.as_slice()).unwrap();
        let parsed = ParsedBlock::parse(raw).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!(
            parsed.hash.to_display_hex(),
            reference.block_hash().to_string()
        );
        let rec = records[&parsed.hash.to_display_hex()];
        assert_eq!(parsed.txs.len() as u64, rec["n_tx"].as_u64().unwrap());
        let mut n_inputs = 0;
        let mut n_outputs = 0;
        for (ours, theirs) in parsed.txs.iter().zip(&reference.txdata) {
            assert_eq!(
                ours.txid.to_display_hex(),
                theirs.compute_txid().to_string()
            );
            assert_eq!(ours.outputs.len(), theirs.output.len());
            for (o, t) in parsed.outputs[ours.outputs.clone()]
                .iter()
                .zip(&theirs.output)
            {
                assert_eq!(o.value, t.value.to_sat());
                assert_eq!(parsed.script(o), t.script_pubkey.as_bytes());
            }
            if !theirs.is_coinbase() {
                for (i, t) in parsed.inputs[ours.inputs.clone()].iter().zip(&theirs.input) {
                    assert_eq!(
                        i.prev_txid.to_display_hex(),
                        t.previous_output.txid.to_string()
                    );
                    assert_eq!(i.prev_vout, t.previous_output.vout);
                }
                n_inputs += theirs.input.len();
            }
            n_outputs += theirs.output.len();
        }
        assert_eq!(parsed.inputs.len(), n_inputs);
        assert_eq!(parsed.outputs.len(), n_outputs);
        if rec["n_segwit_tx"].as_u64().unwrap_or(0) > 0 {
            segwit_blocks += 1;
        }
    }
    assert!(
        segwit_blocks >= 10,
        "segwit and taproot blocks were covered ({segwit_blocks})"
    );
}

#[test]
fn a_corrupted_block_is_an_error_not_a_panic() {
    let files = block_files();
    let path = files
        .iter()
        .find(|p| p.to_string_lossy().contains("0831332"))
        .expect("modern block");
    let raw = std::fs::read(path).unwrap();
    // Flip a byte inside a transaction: the merkle root no longer matches.
    let mut bad = raw.clone();
    bad[200] ^= 0x01;
    assert!(ParsedBlock::parse(bad).is_err());
    // Every truncation fails cleanly.
    for cut in [81, 100, 1000, raw.len() / 2, raw.len() - 1] {
        assert!(ParsedBlock::parse(raw[..cut].to_vec()).is_err());
    }
}

#[test]
fn scripthash_vectors_match() {
    let v = json("vectors/electrum-scripthash.json");
    for case in v["vectors"].as_array().unwrap() {
        let script = const_hex::decode(case["script"].as_str().unwrap()).unwrap();
        assert_eq!(
            ScriptHash::of_script(&script).to_hex(),
            case["scripthash"].as_str().unwrap()
        );
    }
}

fn status_of(history: &[(String, u32)]) -> Option<String> {
    use bitcoin::hashes::{Hash, sha256};
    if history.is_empty() {
        return None;
    }
    let preimage: String = history.iter().map(|(t, h)| format!("{t}:{h}:")).collect();
    Some(const_hex::encode(
        sha256::Hash::hash(preimage.as_bytes()).to_byte_array(),
    ))
}

/// Indexes a run of block files with the real controller and returns it.
async fn index_run(dir: &str, coin: CoinParams, db: &Path) -> Result<Controller> {
    let daemon = BlockFileDaemon::open(&shared_dir().join("data").join(dir), coin.genesis_hash)?;
    let controller = Controller::builder()
        .coin(coin)
        .db_dir(db)
        .daemon(Arc::new(daemon))
        .cache_mb(1)
        .build()?;
    controller.start()?;
    controller.wait_caught_up().await?;
    Ok(controller)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn early_mainnet_index_gives_the_derived_answers() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let coin = CoinParams::from_names("Bitcoin", "mainnet").unwrap();
    let controller = index_run(
        "mainnet-blocks/run-0000000-0000438",
        coin.clone(),
        tmp.path(),
    )
    .await?;
    let index = controller.index();
    let want = json("vectors/derived/early-mainnet-answers.json");
    let (height, hash) = index.tip().unwrap();
    assert_eq!(height as u64, want["tip_height"].as_u64().unwrap());
    assert_eq!(hash.to_display_hex(), want["tip_hash"].as_str().unwrap());
    for case in want["scripthashes"].as_array().unwrap() {
        let sh = ScriptHash::from_hex(case["scripthash"].as_str().unwrap()).unwrap();
        let script = const_hex::decode(case["script"].as_str().unwrap()).unwrap();
        assert_eq!(ScriptHash::of_script(&script), sh);
        let history: Vec<(String, u32)> = index
            .history(&sh, 0, usize::MAX)?
            .iter()
            .map(|h| (h.txid.to_display_hex(), h.height))
            .collect();
        let want_history: Vec<(String, u32)> = case["get_history"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| {
                (
                    h["tx_hash"].as_str().unwrap().to_string(),
                    h["height"].as_u64().unwrap() as u32,
                )
            })
            .collect();
        assert_eq!(history, want_history, "{}", case["label"]);
        assert_eq!(
            status_of(&history).as_deref(),
            case["status"].as_str(),
            "{}",
            case["label"]
        );
        assert_eq!(
            index.balance(&sh)?,
            case["get_balance"]["confirmed"].as_u64().unwrap()
        );
        let utxos: Vec<(String, u32, u32, u64)> = index
            .utxos(&sh, usize::MAX)?
            .iter()
            .map(|u| (u.txid.to_display_hex(), u.vout, u.height, u.value))
            .collect();
        let want_utxos: Vec<(String, u32, u32, u64)> = case["listunspent"]
            .as_array()
            .unwrap()
            .iter()
            .map(|u| {
                (
                    u["tx_hash"].as_str().unwrap().to_string(),
                    u["tx_pos"].as_u64().unwrap() as u32,
                    u["height"].as_u64().unwrap() as u32,
                    u["value"].as_u64().unwrap(),
                )
            })
            .collect();
        assert_eq!(utxos, want_utxos, "{}", case["label"]);
        assert_eq!(index.history_len(&sh, 1000)?, want_history.len());
    }
    for tx in want["non_coinbase_transactions"].as_array().unwrap() {
        let txid = Hash32::from_display_hex(tx["tx_hash"].as_str().unwrap()).unwrap();
        let (h, pos) = index.tx_position(&txid)?.expect("indexed");
        assert_eq!(h as u64, tx["height"].as_u64().unwrap());
        assert_eq!(pos as u64, tx["get_merkle"]["pos"].as_u64().unwrap());
        let txids = index.block_txids(h)?.unwrap();
        // The branch for position 1 of a two-tx block is the coinbase txid.
        let branch: Vec<String> = tx["get_merkle"]["merkle"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_str().unwrap().into())
            .collect();
        assert_eq!(branch, vec![txids[0].to_display_hex()]);
        for input in tx["inputs"].as_array().unwrap() {
            let prev = Hash32::from_display_hex(input["prev_tx_hash"].as_str().unwrap()).unwrap();
            let vout = input["prev_vout"].as_u64().unwrap() as u32;
            let spender = index.spender(&prev, vout)?.expect("spent");
            assert_eq!(spender.txid, txid);
            assert_eq!(spender.height, h);
        }
    }
    // The genesis coinbase is not indexed (as ElectrumX): its output has no history.
    let genesis_txids = index.block_txids(0)?.unwrap();
    assert!(genesis_txids.is_empty());
    controller.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regtest_and_signet_runs_index_completely() -> Result<()> {
    // Figures computed independently from the blocks (every coinbase pays one script on
    // this regtest run; each signet coinbase pays a distinct script plus an OP_RETURN).
    let tmp = tempfile::tempdir()?;
    let coin = CoinParams::from_names("Bitcoin", "regtest").unwrap();
    let controller = index_run("regtest-blocks/run-0000000-0000150", coin, tmp.path()).await?;
    let index = controller.index();
    assert_eq!(index.tip().unwrap().0, 150);
    let sh =
        ScriptHash::from_hex("a57522c3785e61850120aa9b698d67cc660e7468fd01091552f7e34d773ea0df")
            .unwrap();
    assert_eq!(index.balance(&sh)?, 747_500_000_000);
    let hist = index.history(&sh, 0, usize::MAX)?;
    assert_eq!(hist.len(), 150);
    let as_pairs: Vec<(String, u32)> = hist
        .iter()
        .map(|h| (h.txid.to_display_hex(), h.height))
        .collect();
    assert_eq!(
        status_of(&as_pairs).unwrap(),
        "a0b972c62f6fab06cbf40c3848160b44f37e5a5815acce107e85a022175b68c9"
    );
    // Paging returns the same entries in the same order.
    let page: Vec<_> = index.history(&sh, 140, 5)?;
    assert_eq!(page, hist[140..145].to_vec());
    assert_eq!(index.utxos(&sh, 10)?.len(), 10);
    controller.stop().await?;

    let tmp = tempfile::tempdir()?;
    let coin = CoinParams::from_names("Bitcoin", "signet").unwrap();
    let controller = index_run("signet-blocks/run-0000000-0000120", coin, tmp.path()).await?;
    let index = controller.index();
    assert_eq!(index.tip().unwrap().0, 120);
    let sh =
        ScriptHash::from_hex("200fc808afa31b0ff4e4d4b1fd8f9ff1d4c11523e20c9f980d7f1a585d11d8b3")
            .unwrap();
    assert_eq!(index.balance(&sh)?, 50_0000_0000);
    // The witness commitment (OP_RETURN) output of the coinbase is not indexed.
    let block1 = index.block_txids(1)?.unwrap();
    assert_eq!(
        block1[0].to_display_hex(),
        "8b67e4798a87162ed5f2b67a43842e4670c14409f3c1afc47d4e983532c875f5"
    );
    let utxos = index.utxos(&sh, 10)?;
    assert_eq!(utxos.len(), 1);
    assert_eq!(
        (utxos[0].txid, utxos[0].vout, utxos[0].height),
        (block1[0], 0, 1)
    );
    controller.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_of_another_network_is_refused() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let coin = CoinParams::from_names("Bitcoin", "regtest").unwrap();
    let controller = index_run("regtest-blocks/run-0000000-0000150", coin, tmp.path()).await?;
    controller.stop().await?;
    drop(controller);
    let mainnet = CoinParams::from_names("Bitcoin", "mainnet").unwrap();
    let daemon = BlockFileDaemon::open(
        &shared_dir().join("data/mainnet-blocks/run-0000000-0000438"),
        mainnet.genesis_hash,
    )?;
    let err = Controller::builder()
        .coin(mainnet)
        .db_dir(tmp.path())
        .daemon(Arc::new(daemon))
        .build()
        .err()
        .expect("refused");
    assert!(err.to_string().contains("genesis"), "{err}");
    Ok(())
}

#[tokio::test]
async fn blk_dat_files_with_blocks_out_of_order_are_read() -> Result<()> {
    use electrumx_core::daemon::Daemon;
    let dir = shared_dir().join("data/mainnet-blocks/run-0000000-0000438");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)?
        .flatten()
        .map(|e| e.path())
        .collect();
    files.sort();
    let blocks: Vec<Vec<u8>> = files
        .iter()
        .take(60)
        .map(|p| std::fs::read(p).unwrap())
        .collect();
    let tmp = tempfile::tempdir()?;
    // Two files, blocks interleaved out of order, with Core's framing and a zeroed tail.
    for (n, part) in [(0, 1), (1, 0)] {
        let mut data = Vec::new();
        for (i, b) in blocks.iter().enumerate().rev() {
            if i % 2 == part {
                data.extend_from_slice(&[0xf9, 0xbe, 0xb4, 0xd9]);
                data.extend_from_slice(&(b.len() as u32).to_le_bytes());
                data.extend_from_slice(b);
            }
        }
        data.extend_from_slice(&[0u8; 1000]);
        std::fs::write(tmp.path().join(format!("blk0000{n}.dat")), data)?;
    }
    let coin = CoinParams::from_names("Bitcoin", "mainnet").unwrap();
    let daemon = BlockFileDaemon::open(tmp.path(), coin.genesis_hash)?;
    assert_eq!(daemon.height().await?, 59);
    let hashes = daemon.block_hashes(0, 60).await?;
    let raws = daemon.raw_blocks(&hashes).await?;
    assert_eq!(raws, blocks);
    Ok(())
}

#[test]
fn fee_histogram_vectors_match_electrumx() {
    let v = json("vectors/electrumx-fee-histogram.json");
    for case in v["vectors"].as_array().unwrap() {
        let hist: Vec<(f64, u64)> = case["histogram"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| (p[0].as_f64().unwrap(), p[1].as_u64().unwrap()))
            .rev()
            .collect();
        let mut sorted = hist.clone();
        sorted.sort_by(|a, b| b.0.total_cmp(&a.0));
        let got = electrumx_core::mempool::compress_histogram(
            &sorted,
            case["bin_size"].as_u64().unwrap(),
        );
        let want: Vec<(f64, u64)> = case["expected"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| (p[0].as_f64().unwrap(), p[1].as_u64().unwrap()))
            .collect();
        assert_eq!(got, want, "bin size {}", case["bin_size"]);
    }
}

#[test]
fn checkpoint_proofs_and_merkle_branches_match_the_vectors() {
    use electrumx_server::cache::merkle::branch_and_root;
    // cp_height proofs over mainnet headers 0..10236.
    let headers =
        std::fs::read(shared_dir().join("data/headers/mainnet-0000000-0010236.bin")).unwrap();
    let hashes: Vec<Hash32> = headers.chunks_exact(80).map(Hash32::sha256d).collect();
    for case in json("vectors/derived/header-checkpoint-proofs.json")["vectors"]
        .as_array()
        .unwrap()
    {
        let (h, cp) = (
            case["height"].as_u64().unwrap() as usize,
            case["cp_height"].as_u64().unwrap() as usize,
        );
        let (branch, root) = branch_and_root(&hashes[..=cp], h).unwrap();
        assert_eq!(
            const_hex::encode(&headers[h * 80..h * 80 + 80]),
            case["header"].as_str().unwrap()
        );
        assert_eq!(root.to_display_hex(), case["root"].as_str().unwrap());
        let want: Vec<String> = case["branch"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_str().unwrap().into())
            .collect();
        assert_eq!(
            branch
                .iter()
                .map(|b| b.to_display_hex())
                .collect::<Vec<_>>(),
            want
        );
    }
    // Transaction merkle branches in large modern blocks.
    for case in json("vectors/derived/merkle-branches.json")["vectors"]
        .as_array()
        .unwrap()
    {
        let raw = std::fs::read(
            shared_dir()
                .join("data")
                .join(case["block_file"].as_str().unwrap()),
        )
        .unwrap();
        let block = ParsedBlock::parse(raw).unwrap();
        let txids: Vec<Hash32> = block.txs.iter().map(|t| t.txid).collect();
        let pos = case["get_merkle"]["pos"].as_u64().unwrap() as usize;
        assert_eq!(
            txids[pos].to_display_hex(),
            case["tx_hash"].as_str().unwrap()
        );
        let (branch, _) = branch_and_root(&txids, pos).unwrap();
        let want: Vec<String> = case["get_merkle"]["merkle"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_str().unwrap().into())
            .collect();
        assert_eq!(
            branch
                .iter()
                .map(|b| b.to_display_hex())
                .collect::<Vec<_>>(),
            want,
            "{}",
            case["why"]
        );
    }
}
