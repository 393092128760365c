//! `qbench`: query latency and throughput of an Electrum server. Runs, for each query kind
//! and each concurrency level, sessions that send requests back to back, and prints a
//! Markdown table of p50/p99 latency and requests per second.
//!
//! Usage: `qbench PORT [--concurrency 1,16,256] [--requests N] [--heavy-requests N]
//! [--only TEXT] [--chain DIR]` (`--only`: just the query kinds whose name contains TEXT,
//! e.g. to profile one of them).
//!
//! Scripts are the chain generator's wallets (`chaingen`): wallet 5 is heavy (tens of
//! thousands of transactions), wallet 100 medium, wallet 150000 light (Zipf skew).
//! Transactions are read from the server itself (`id_from_pos`). With `--chain DIR` (a
//! `blockgen` chain), the scripts come from its sampled truth instead (heavy: the script
//! with the most transactions, millions on a tenth of mainnet; medium: the sampled script
//! with the longest history under 1,000; light: one with a single transaction; the
//! receive-only script with 100,000+ unspent outputs), transactions from its blocks of
//! 10,000+ transactions, and the kinds measured at height are added: `cp_height` proofs,
//! `headers.subscribe`, subscribing to the heavy script.

use anyhow::{Context, Result, bail};
use electrumx_core::ScriptHash;
use electrumx_testkit::chaingen::ScriptKind;
use serde_json::{Value, json};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

struct Conn {
    reader: BufReader<tokio::net::tcp::OwnedReadHalf>,
    writer: tokio::net::tcp::OwnedWriteHalf,
    id: u64,
    line: String,
}

impl Conn {
    async fn open(port: u16) -> Result<Conn> {
        let s = TcpStream::connect(("127.0.0.1", port)).await?;
        s.set_nodelay(true)?;
        let (r, w) = s.into_split();
        let mut c = Conn {
            reader: BufReader::new(r),
            writer: w,
            id: 0,
            line: String::new(),
        };
        c.call("server.version", json!(["qbench", "1.4"])).await?;
        Ok(c)
    }

    /// Sends a request and reads its reply. The reply is checked as JSON and its envelope
    /// read (id, error); the result is kept as raw JSON text, not built into a tree, so the
    /// client's own parsing of long lists does not dominate what is measured.
    async fn call(&mut self, method: &str, params: Value) -> Result<Value> {
        self.call_with(method, params, 4096).await
    }

    /// `call` returning the whole result, however long.
    async fn call_full(&mut self, method: &str, params: Value) -> Result<Value> {
        self.call_with(method, params, usize::MAX).await
    }

    async fn call_with(&mut self, method: &str, params: Value, keep: usize) -> Result<Value> {
        self.id += 1;
        let mut req = json!({"jsonrpc": "2.0", "id": self.id, "method": method, "params": params})
            .to_string();
        req.push('\n');
        self.writer.write_all(req.as_bytes()).await?;
        loop {
            self.line.clear();
            if self.reader.read_line(&mut self.line).await? == 0 {
                bail!("connection closed");
            }
            let v: Envelope = serde_json::from_str(&self.line)?;
            if v.id == Some(self.id) {
                if let Some(e) = v.error.filter(|e| e.get() != "null") {
                    bail!("{method}: {}", e.get());
                }
                // Small results (tips, sizes) are what the benchmark itself reads.
                return Ok(match v.result {
                    Some(r) if r.get().len() < keep => serde_json::from_str(r.get())?,
                    _ => Value::Null,
                });
            }
        }
    }
}

/// A reply's envelope, the result left as raw JSON.
#[derive(serde::Deserialize)]
struct Envelope<'a> {
    id: Option<u64>,
    #[serde(borrow)]
    result: Option<&'a serde_json::value::RawValue>,
    #[serde(borrow)]
    error: Option<&'a serde_json::value::RawValue>,
}

/// The heavy script's wallet number.
const HEAVY: u32 = 5;

/// What `--chain` picks from a blockgen chain's `summary.json` and `truth.json`.
struct Picked {
    /// Heavy, medium, light, and the receive-only script with 100,000+ unspent outputs.
    scripts: [String; 4],
    big_blocks: Vec<u32>,
}

impl Picked {
    fn from_chain(dir: &std::path::Path) -> Result<Picked> {
        let summary: Value = serde_json::from_slice(&std::fs::read(dir.join("summary.json"))?)?;
        let truth: Vec<Value> = serde_json::from_slice(&std::fs::read(dir.join("truth.json"))?)?;
        let len = |t: &Value| t["history"].as_u64().unwrap_or(0);
        let hash = |t: &Value| t["scripthash"].as_str().unwrap_or_default().to_string();
        let heavy = truth.iter().max_by_key(|t| len(t)).context("truth")?;
        let medium = truth
            .iter()
            .filter(|t| len(t) < 1000)
            .max_by_key(|t| len(t))
            .context("a medium script")?;
        let light = truth
            .iter()
            .find(|t| len(t) == 1)
            .context("a light script")?;
        let hoard = truth
            .iter()
            .find(|t| t["role"] == "hoard")
            .context("the hoard script")?;
        eprintln!(
            "qbench: chain scripts: heavy {} txs, medium {}, light {}, hoard {} UTXOs",
            len(heavy),
            len(medium),
            len(light),
            hoard["utxos"]
        );
        let big_blocks: Vec<u32> = summary["big_blocks"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|h| h.as_u64().map(|h| h as u32))
            .collect();
        anyhow::ensure!(
            !big_blocks.is_empty(),
            "the chain has no block of 10,000+ txs"
        );
        Ok(Picked {
            scripts: [hash(heavy), hash(medium), hash(light), hash(hoard)],
            big_blocks,
        })
    }
}

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1000.0)
}

#[tokio::main]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let port: u16 = args.get(1).context("usage: qbench PORT")?.parse()?;
    let levels: Vec<usize> = arg(&args, "--concurrency")
        .unwrap_or_else(|| "1,16,256".into())
        .split(',')
        .map(|s| s.parse())
        .collect::<Result<_, _>>()?;
    let requests: usize = arg(&args, "--requests")
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(2000);
    let heavy_requests: usize = arg(&args, "--heavy-requests")
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(8);

    let only = arg(&args, "--only");
    let chain = arg(&args, "--chain").map(std::path::PathBuf::from);

    let mut probe = Conn::open(port).await?;
    let tip = probe
        .call("blockchain.headers.subscribe", json!([]))
        .await?["height"]
        .as_u64()
        .context("tip")? as u32;
    // Transactions to ask for: position 1 of blocks spread over the chain, or positions
    // spread over a blockgen chain's blocks of 10,000+ transactions.
    let mut positions = Vec::new();
    let picked = chain.as_deref().map(Picked::from_chain).transpose()?;
    match &picked {
        Some(p) => {
            for i in 0..50u32 {
                let h = p.big_blocks[i as usize % p.big_blocks.len()];
                positions.push((h, 1 + i * 211));
            }
        }
        None => {
            for i in 0..50u32 {
                positions.push((101 + (tip - 101) * i / 50, 1));
            }
        }
    }
    let mut txs = Vec::new();
    for (h, pos) in positions {
        if let Ok(t) = probe
            .call("blockchain.transaction.id_from_pos", json!([h, pos]))
            .await
        {
            txs.push((t.as_str().unwrap_or_default().to_string(), h));
        }
    }
    let scripts = match &picked {
        Some(p) => p.scripts.clone(),
        None => {
            let sh = |w: u32| ScriptHash::of_script(&ScriptKind::Wallet(w).script()).to_hex();
            [sh(HEAVY), sh(100), sh(150_000), sh(HEAVY)]
        }
    };
    // Leaked once so that `sh` stays `Copy` for every request maker below.
    let scripts: &'static [String; 4] = Box::leak(Box::new(scripts));
    let sh = move |w: u32| {
        scripts[match w {
            HEAVY => 0,
            100 => 1,
            150_000 => 2,
            _ => 3,
        }]
        .clone()
    };
    // The first heavy request finds no cache (on a freshly started server): timed apart,
    // read as the measured requests are (the result kept raw), then asked again for its size.
    let first = Instant::now();
    let first_heavy = probe
        .call("blockchain.scripthash.get_history", json!([sh(HEAVY)]))
        .await;
    let first_heavy_ms = first.elapsed().as_secs_f64() * 1e3;
    let heavy_len = match first_heavy {
        Ok(_) => probe
            .call_full("blockchain.scripthash.get_history", json!([sh(HEAVY)]))
            .await
            .map(|v| v.as_array().map_or(0, Vec::len)),
        Err(e) => Err(e),
    };
    let medium_len = probe
        .call_full("blockchain.scripthash.get_history", json!([sh(100)]))
        .await?
        .as_array()
        .map_or(0, Vec::len);
    let light_len = probe
        .call_full("blockchain.scripthash.get_history", json!([sh(150_000)]))
        .await?
        .as_array()
        .map_or(0, Vec::len);
    eprintln!(
        "qbench: tip {tip}; history sizes: heavy {:?}, medium {medium_len}, light {light_len}; \
         first heavy get_history {first_heavy_ms:.1} ms",
        heavy_len.as_ref().map_err(|e| e.to_string())
    );

    type Make = Box<dyn Fn(usize) -> (String, Value)>;
    let kinds: Vec<(String, Make, usize)> = vec![
        (
            "get_history light".into(),
            Box::new(move |_| {
                (
                    "blockchain.scripthash.get_history".into(),
                    json!([sh(150_000)]),
                )
            }),
            requests,
        ),
        (
            "get_history medium".into(),
            Box::new(move |_| ("blockchain.scripthash.get_history".into(), json!([sh(100)]))),
            requests,
        ),
        (
            "get_history heavy".into(),
            Box::new(move |_| {
                (
                    "blockchain.scripthash.get_history".into(),
                    json!([sh(HEAVY)]),
                )
            }),
            heavy_requests,
        ),
        (
            "listunspent light".into(),
            Box::new(move |_| {
                (
                    "blockchain.scripthash.listunspent".into(),
                    json!([sh(150_000)]),
                )
            }),
            requests,
        ),
        (
            "listunspent heavy".into(),
            Box::new(move |_| {
                (
                    "blockchain.scripthash.listunspent".into(),
                    json!([sh(HEAVY)]),
                )
            }),
            heavy_requests,
        ),
        (
            "get_balance light".into(),
            Box::new(move |_| {
                (
                    "blockchain.scripthash.get_balance".into(),
                    json!([sh(150_000)]),
                )
            }),
            requests,
        ),
        (
            "get_balance heavy".into(),
            Box::new(move |_| {
                (
                    "blockchain.scripthash.get_balance".into(),
                    json!([sh(HEAVY)]),
                )
            }),
            heavy_requests,
        ),
        (
            "transaction.get".into(),
            {
                let txs = txs.clone();
                Box::new(move |i| {
                    (
                        "blockchain.transaction.get".into(),
                        json!([txs[i % txs.len()].0]),
                    )
                })
            },
            requests,
        ),
        (
            "get_merkle".into(),
            {
                let txs = txs.clone();
                Box::new(move |i| {
                    (
                        "blockchain.transaction.get_merkle".into(),
                        json!([txs[i % txs.len()].0, txs[i % txs.len()].1]),
                    )
                })
            },
            requests,
        ),
        (
            "block.headers (2016)".into(),
            Box::new(move |i| {
                (
                    "blockchain.block.headers".into(),
                    json!([(i * 7) % (tip as usize / 2), 2016]),
                )
            }),
            requests / 4,
        ),
    ];
    let mut kinds = kinds;
    if picked.is_some() {
        kinds.push((
            "block.header with cp_height = tip".into(),
            Box::new(move |i| {
                (
                    "blockchain.block.header".into(),
                    json!([(i * 7919) % tip as usize, tip]),
                )
            }),
            requests,
        ));
        kinds.push((
            "headers.subscribe".into(),
            Box::new(|_| ("blockchain.headers.subscribe".into(), json!([]))),
            requests,
        ));
        kinds.push((
            "subscribe heavy".into(),
            Box::new(move |_| ("blockchain.scripthash.subscribe".into(), json!([sh(HEAVY)]))),
            heavy_requests,
        ));
        kinds.push((
            "listunspent 100k+ UTXOs".into(),
            Box::new(move |_| ("blockchain.scripthash.listunspent".into(), json!([sh(0)]))),
            heavy_requests,
        ));
    }

    println!("| query | sessions | requests | p50 ms | p99 ms | req/s | errors |");
    println!("|---|---|---|---|---|---|---|");
    for (name, make, total) in &kinds {
        if only.as_ref().is_some_and(|o| !name.contains(o.as_str())) {
            continue;
        }
        for &level in &levels {
            // Heavy queries run with as many sessions as they have requests, at most.
            if *total < level {
                continue;
            }
            let per = total / level;
            let mut conns = Vec::with_capacity(level);
            for _ in 0..level {
                conns.push(Conn::open(port).await?);
            }
            let work: Vec<Vec<(String, Value)>> = (0..level)
                .map(|s| (0..per).map(|k| make(s * per + k)).collect())
                .collect();
            let started = Instant::now();
            let mut tasks = tokio::task::JoinSet::new();
            for (mut c, reqs) in conns.into_iter().zip(work) {
                tasks.spawn(async move {
                    let mut lat = Vec::with_capacity(reqs.len());
                    let mut errors = 0usize;
                    for (m, p) in reqs {
                        let t = Instant::now();
                        // Measured requests keep no result: the reply is checked as JSON,
                        // its id and error read, and nothing is built from it (a short
                        // history's tree cost the client more than the server's answer).
                        if c.call_with(&m, p, 0).await.is_err() {
                            errors += 1;
                        }
                        lat.push(t.elapsed());
                    }
                    (lat, errors)
                });
            }
            let mut all = Vec::new();
            let mut errors = 0;
            while let Some(r) = tasks.join_next().await {
                let (lat, e) = r?;
                all.extend(lat);
                errors += e;
            }
            let wall = started.elapsed();
            all.sort();
            println!(
                "| {name} | {level} | {} | {} | {} | {:.0} | {errors} |",
                all.len(),
                ms(percentile(&all, 0.5)),
                ms(percentile(&all, 0.99)),
                all.len() as f64 / wall.as_secs_f64()
            );
        }
    }
    Ok(())
}
