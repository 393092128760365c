//! `mempool.get_fee_histogram` against ElectrumX 2.0.0 (PyPI `e-x`) on one shared mempool:
//! wallets estimate fees from these bins, so a wallet must see the same histogram from either
//! server. The mempool is varied on purpose: 1,450 transactions of 1–3 inputs and 1–60
//! outputs (roughly 90 to 2,100 bytes), fee rates spread from 1 to 80 sat/byte, some exactly
//! on a tenth of a sat/byte (where flooring matters) and some a hair below one, some spending
//! outputs of other mempool transactions, and one lump of transactions at a single rate large
//! enough to close the bin before it early (the `size > 2 * bin_size` branch of ElectrumX's
//! `_compress_histogram`).
//!
//! Both servers start after the mempool is complete, and nothing changes it afterwards:
//! ElectrumX computes its histogram once its first mempool sync completes and then only every
//! `MEMPOOL_HISTOGRAM_REFRESH_SECS` (500 s for BitcoinSV), so its first histogram is of the
//! whole mempool. Its log says when (`compact fee histogram: …`) and how many transactions
//! it holds; ours tells its count through LocalRPC `getinfo`.

use anyhow::{Context, Result, bail};
use electrumx_core::hash::Txid;
use electrumx_testkit::chaingen::{ChainGen, GenParams, ScriptKind};
use electrumx_testkit::node::{RegtestNode, free_port};
use electrumx_testkit::rawclient::RawConn;
use electrumx_testkit::server::{ServerProcess, regtest_env, set_env};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use std::path::Path;
use std::time::{Duration, Instant};

/// Mempool transactions besides the lump.
const VARIED: usize = 1200;
/// Transactions of the lump, all at `LUMP_RATE` sat/byte exactly.
const LUMP: usize = 250;
/// Near the top of the rates: the lump comes while the first bin is still open, and is
/// over twice its size.
const LUMP_RATE: u64 = 70;

/// A spendable (anyone-can-spend) output.
#[derive(Clone, Copy)]
struct Coin {
    txid: Txid,
    vout: u32,
    value: u64,
    /// Unconfirmed ancestors (0: a confirmed output).
    depth: u32,
}

fn write_varint(b: &mut Vec<u8>, n: u64) {
    match n {
        0..=0xfc => b.push(n as u8),
        0xfd..=0xffff => {
            b.push(0xfd);
            b.extend_from_slice(&(n as u16).to_le_bytes());
        }
        _ => {
            b.push(0xfe);
            b.extend_from_slice(&(n as u32).to_le_bytes());
        }
    }
}

/// A transaction spending `inputs` (empty scriptSigs: the generator's outputs are
/// `<id> OP_DROP OP_TRUE`) to `outputs`.
fn build_tx(inputs: &[Coin], outputs: &[(u64, u32)]) -> Vec<u8> {
    let mut raw = 1u32.to_le_bytes().to_vec();
    write_varint(&mut raw, inputs.len() as u64);
    for c in inputs {
        raw.extend_from_slice(&c.txid.0);
        raw.extend_from_slice(&c.vout.to_le_bytes());
        raw.push(0);
        raw.extend_from_slice(&0xffff_ffffu32.to_le_bytes());
    }
    write_varint(&mut raw, outputs.len() as u64);
    for (value, wallet) in outputs {
        raw.extend_from_slice(&value.to_le_bytes());
        let script = ScriptKind::Wallet(*wallet).script();
        write_varint(&mut raw, script.len() as u64);
        raw.extend_from_slice(&script);
    }
    raw.extend_from_slice(&0u32.to_le_bytes());
    raw
}

/// Spends `inputs` to `n_out` outputs at a fee of `fee(size)`; the new outputs join `pool`.
/// `None` when the inputs cannot pay it.
fn pay(
    rng: &mut StdRng,
    inputs: &[Coin],
    n_out: usize,
    fee: impl Fn(u64) -> u64,
    pool: &mut Vec<Coin>,
) -> Option<Vec<u8>> {
    let wallets: Vec<u32> = (0..n_out).map(|_| rng.random_range(0..40)).collect();
    // Values do not change the size: build once to measure it.
    let size = build_tx(inputs, &wallets.iter().map(|w| (0, *w)).collect::<Vec<_>>()).len();
    let fee = fee(size as u64);
    let total: u64 = inputs.iter().map(|c| c.value).sum();
    let spendable = total.checked_sub(fee)?;
    let each = spendable / n_out as u64;
    if each < 10_000 {
        return None;
    }
    let mut outputs: Vec<(u64, u32)> = wallets.iter().map(|w| (each, *w)).collect();
    outputs[0].0 += spendable - each * n_out as u64;
    let raw = build_tx(inputs, &outputs);
    assert_eq!(raw.len(), size);
    let txid = electrumx_core::hash::Hash32::sha256d(&raw);
    let depth = inputs.iter().map(|c| c.depth).max().unwrap_or(0) + 1;
    for (vout, (value, _)) in outputs.iter().enumerate() {
        pool.push(Coin {
            txid,
            vout: vout as u32,
            value: *value,
            depth,
        });
    }
    Some(raw)
}

/// The confirmed anyone-can-spend outputs the node will let us spend (coinbases once
/// mature).
fn confirmed_coins(chain: &ChainGen) -> Vec<Coin> {
    let ledger = chain.ledger();
    let tip = chain.height();
    let mut coins = Vec::new();
    for b in &chain.blocks {
        for (pos, tx) in b.txs.iter().enumerate() {
            if pos == 0 && b.height + 100 > tip {
                continue;
            }
            for (vout, (value, kind)) in tx.outputs.iter().enumerate() {
                let op = (tx.txid, vout as u32);
                if matches!(kind, ScriptKind::Wallet(_))
                    && *value >= 1_000_000
                    && ledger.utxos.contains_key(&op)
                {
                    coins.push(Coin {
                        txid: tx.txid,
                        vout: op.1,
                        value: *value,
                        depth: 0,
                    });
                }
            }
        }
    }
    coins
}

/// The varied mempool: raw transactions, parents before children.
fn mempool_txs(mut coins: Vec<Coin>) -> Vec<Vec<u8>> {
    let mut rng = StdRng::seed_from_u64(20);
    let mut txs = Vec::new();
    // The lump: one input, 20 outputs each (371 bytes), all at exactly LUMP_RATE sat/byte.
    for _ in 0..LUMP {
        let i = rng.random_range(0..coins.len());
        let c = coins.swap_remove(i);
        let mut unused = Vec::new();
        if let Some(raw) = pay(&mut rng, &[c], 20, |size| LUMP_RATE * size, &mut unused) {
            txs.push(raw);
        }
    }
    while txs.len() < LUMP + VARIED {
        // Mostly confirmed coins; some spend a mempool output (at most 3 deep).
        let n_in = [1, 1, 1, 2, 2, 3][rng.random_range(0..6)];
        let mut inputs = Vec::new();
        for _ in 0..n_in {
            let unconfirmed: Vec<usize> = (0..coins.len())
                .filter(|&i| coins[i].depth > 0 && coins[i].depth < 3)
                .collect();
            let i = if !unconfirmed.is_empty() && rng.random_bool(0.25) {
                unconfirmed[rng.random_range(0..unconfirmed.len())]
            } else {
                rng.random_range(0..coins.len())
            };
            inputs.push(coins.swap_remove(i));
        }
        let n_out = if rng.random_bool(0.4) {
            rng.random_range(6..=60)
        } else {
            rng.random_range(1..=5)
        };
        let kind = rng.random_range(0..10);
        let tenths: u64 = rng.random_range(10..=800);
        let fee = move |size: u64| match kind {
            // Exactly on a tenth of a sat/byte (the fee a multiple of size / 10 when the
            // size allows; otherwise just above).
            0..=2 => (tenths * size).div_ceil(10),
            // One satoshi below a whole tenth: floored to the tenth below.
            3..=4 => (tenths * size).div_ceil(10) - 1,
            // Anywhere.
            _ => size + (tenths * size * 7919 % (70 * size)),
        };
        match pay(&mut rng, &inputs, n_out, fee, &mut coins) {
            Some(raw) => txs.push(raw),
            // Too small to pay it: back to the pool, try another.
            None => coins.extend(inputs),
        }
    }
    txs
}

/// ElectrumX 2.0.0 on the node (TCP on `port`), its log in a file.
struct ElectrumX {
    child: std::process::Child,
    log: std::path::PathBuf,
}

impl ElectrumX {
    fn start(node: &RegtestNode, port: u16, dir: &Path) -> Result<ElectrumX> {
        let venv = electrumx_testkit::electrumx_venv()?;
        let log = dir.join("electrumx.log");
        let out = std::fs::File::create(&log)?;
        let db = dir.join("db");
        std::fs::create_dir_all(&db)?;
        let child = std::process::Command::new(venv.join("bin/electrumx_server"))
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("DB_DIRECTORY", &db)
            .env("DAEMON_URL", node.rpc_url_with_auth()?)
            .env("COIN", "BitcoinSV")
            .env("NET", "regtest")
            .env("DB_ENGINE", "leveldb")
            .env("ALLOW_ROOT", "1")
            .env("SERVICES", format!("tcp://127.0.0.1:{port}"))
            .env("PEER_DISCOVERY", "off")
            .env("LOG_LEVEL", "info")
            .stdin(std::process::Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()?;
        Ok(ElectrumX { child, log })
    }

    fn text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The first log line containing `needle`.
    fn wait_logged(&mut self, needle: &str, timeout: Duration) -> Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(line) = self.text().lines().find(|l| l.contains(needle)) {
                return Ok(line.to_string());
            }
            if let Some(status) = self.child.try_wait()? {
                bail!("ElectrumX exited ({status}): {}", self.text());
            }
            if Instant::now() > deadline {
                bail!("ElectrumX logged no {needle:?}: {}", self.text());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for ElectrumX {
    fn drop(&mut self) {
        let _ = std::process::Command::new("kill")
            .arg("-INT")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn histogram(port: u16) -> Result<Value> {
    let mut c = RawConn::connect(port)?;
    c.result("server.version", json!(["fee-histogram-test", "1.4"]))?;
    c.result("mempool.get_fee_histogram", json!([]))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fee_histogram_equals_electrumx_on_a_shared_mempool() -> Result<()> {
    let node = RegtestNode::start().await?;
    let mut chain = ChainGen::new(GenParams {
        seed: 20,
        txs_per_block: 50,
        wallets: 60,
        ..GenParams::default()
    });
    chain.mine(&node, 240).await?;
    let coins = confirmed_coins(&chain);
    assert!(coins.len() > 2500, "{} coins to spend", coins.len());
    let txs = mempool_txs(coins);
    let total_size: usize = txs.iter().map(Vec::len).sum();
    for chunk in txs.chunks(100) {
        let params = chunk
            .iter()
            .map(|raw| json!([const_hex::encode(raw)]))
            .collect();
        node.rpc_batch("sendrawtransaction", params)
            .await
            .context("the node refused a mempool transaction")?;
    }
    let in_node = node.rpc("getrawmempool", json!([])).await?;
    assert_eq!(in_node.as_array().map(Vec::len), Some(txs.len()));

    let dir = tempfile::tempdir()?;
    let db = tempfile::tempdir()?;
    let (tcp, rpc, ex_port) = (free_port(), free_port(), free_port());
    let mut env = regtest_env(&node, db.path());
    set_env(
        &mut env,
        "SERVICES",
        format!("tcp://127.0.0.1:{tcp},rpc://127.0.0.1:{rpc}"),
    );
    let mut ours = ServerProcess::start(&env)?;
    let mut ex = ElectrumX::start(&node, ex_port, dir.path())?;

    let (ours_hist, ex_hist, logged) =
        tokio::task::block_in_place(|| -> Result<(Value, Value, String)> {
            ours.wait_for_line("listening for clients", 1, Duration::from_secs(120))?;
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                let info = RawConn::connect(rpc)?.result("getinfo", json!([]))?;
                if info["mempool"]["txs"].as_u64() == Some(txs.len() as u64) {
                    break;
                }
                if Instant::now() > deadline {
                    bail!("our mempool: {}", info["mempool"]);
                }
                std::thread::sleep(Duration::from_millis(200));
            }
            let ours_hist = histogram(tcp)?;

            // ElectrumX's first histogram, after its first mempool sync, and the size of the
            // mempool that sync found (logged after the same sync).
            ex.wait_logged("TCP server listening", Duration::from_secs(120))?;
            let logged = ex.wait_logged("compact fee histogram:", Duration::from_secs(60))?;
            // Python's `{:,d}`.
            let n = txs.len().to_string();
            let grouped = n
                .as_bytes()
                .rchunks(3)
                .rev()
                .map(|c| std::str::from_utf8(c).expect("digits"))
                .collect::<Vec<_>>()
                .join(",");
            ex.wait_logged(&format!("MemPool:{grouped} txs "), Duration::from_secs(30))?;
            let ex_hist = histogram(ex_port)?;
            Ok((ours_hist, ex_hist, logged))
        })?;

    // The same bins, and the same JSON numbers (rates as floats, sizes as integers).
    assert_eq!(
        ours_hist,
        ex_hist,
        "ours (left) and ElectrumX's (right) on the same {} transactions; ElectrumX logged {logged}",
        txs.len()
    );
    eprintln!(
        "{} transactions, {total_size} bytes; both histograms: {ours_hist}",
        txs.len()
    );
    // The histogram is not trivial: many bins, ordered by falling rates, the lump's rate
    // among them, and together no larger than the mempool.
    let bins = ours_hist.as_array().context("an array")?;
    assert!(bins.len() >= 6, "{ours_hist}");
    let rates: Vec<f64> = bins.iter().filter_map(|b| b[0].as_f64()).collect();
    assert!(rates.windows(2).all(|w| w[0] > w[1]), "{ours_hist}");
    assert!(rates.contains(&(LUMP_RATE as f64)), "{ours_hist}");
    let covered: u64 = bins.iter().filter_map(|b| b[1].as_u64()).sum();
    assert!(covered <= total_size as u64 && covered > 0, "{ours_hist}");

    ours.signal("TERM")?;
    assert!(tokio::task::block_in_place(|| ours.wait_exit(Duration::from_secs(30)))?.success());
    drop(ex);
    Ok(())
}
