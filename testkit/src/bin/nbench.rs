//! `nbench`: notification fan-out. Opens many sessions, each subscribing to headers and to
//! several scripts, prints `READY` (the caller then measures the server's RSS and makes the
//! node mine a block), and reports how long after the block's submission each session got
//! its header notification. Stdin gives the submission time (Unix milliseconds), or
//! `generate URL`: nbench then asks the node at URL (with credentials) to mine the block
//! itself, and the clock starts as that request leaves.
//!
//! Usage: `nbench PORT SESSIONS SUBS_PER_SESSION`

use anyhow::{Context, Result};
use electrumx_core::ScriptHash;
use electrumx_testkit::chaingen::ScriptKind;
use serde_json::{Value, json};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

fn now_ms() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64() * 1000.0)
        .unwrap_or(0.0)
}

#[tokio::main]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let port: u16 = args
        .get(1)
        .context("usage: nbench PORT SESSIONS SUBS")?
        .parse()?;
    let sessions: usize = args.get(2).context("SESSIONS")?.parse()?;
    let subs: usize = args.get(3).context("SUBS_PER_SESSION")?.parse()?;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<f64>();
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    for s in 0..sessions {
        let tx = tx.clone();
        let ready = ready_tx.clone();
        tokio::spawn(async move {
            let run = async {
                let stream = TcpStream::connect(("127.0.0.1", port)).await?;
                let (r, mut w) = stream.into_split();
                let mut lines = BufReader::new(r).lines();
                let mut batch = String::new();
                batch.push_str(&json!({"jsonrpc":"2.0","id":0,"method":"server.version","params":["nbench","1.4"]}).to_string());
                batch.push('\n');
                batch.push_str(
                    &json!({"jsonrpc":"2.0","id":1,"method":"blockchain.headers.subscribe"})
                        .to_string(),
                );
                batch.push('\n');
                for k in 0..subs {
                    // Typical wallet scripts (not the few heaviest): wallets 1000 and up.
                    let w = (1000 + (s * subs + k) % 199_000) as u32;
                    let sh = ScriptHash::of_script(&ScriptKind::Wallet(w).script()).to_hex();
                    batch.push_str(&json!({"jsonrpc":"2.0","id":2 + k,"method":"blockchain.scripthash.subscribe","params":[sh]}).to_string());
                    batch.push('\n');
                }
                w.write_all(batch.as_bytes()).await?;
                let mut answered = 0;
                while answered < subs + 2 {
                    let line = lines.next_line().await?.context("closed")?;
                    let v: Value = serde_json::from_str(&line)?;
                    if v.get("id").is_some() {
                        answered += 1;
                    }
                }
                let _ = ready.send(());
                // Only the arrival is timed: a header notification is recognised by its text,
                // without parsing it (the client shares the cores with the server).
                while let Some(line) = lines.next_line().await? {
                    if line.contains("\"method\"") && line.contains("blockchain.headers.subscribe")
                    {
                        let _ = tx.send(now_ms());
                        break;
                    }
                }
                // Stay connected until the process ends.
                let _keep = w;
                std::future::pending::<()>().await;
                anyhow::Ok(())
            };
            if let Err(e) = run.await {
                eprintln!("nbench: session {s}: {e}");
            }
        });
        // Connect at a steady pace, as wallets do, rather than all in one burst.
        if s % 250 == 249 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    for _ in 0..sessions {
        ready_rx.recv().await.context("sessions ended")?;
    }
    println!("READY");
    let mut line = String::new();
    let line =
        tokio::task::spawn_blocking(move || std::io::stdin().read_line(&mut line).map(|_| line))
            .await??;
    let since = match line.trim().strip_prefix("generate ") {
        // Mine the block ourselves: the clock starts as the request leaves, with no
        // process start-up of a command-line client in the figure.
        Some(url) => {
            let since = now_ms();
            let reply: Value = reqwest::Client::new()
                .post(url)
                .json(&json!({"jsonrpc": "1.0", "id": 0, "method": "generate", "params": [1]}))
                .send()
                .await?
                .json()
                .await?;
            anyhow::ensure!(reply["error"].is_null(), "generate: {reply}");
            Ok::<f64, anyhow::Error>(since)
        }
        None => line.trim().parse::<f64>().map_err(anyhow::Error::from),
    };
    since
        .map(|since| async move {
            let mut times = Vec::with_capacity(sessions);
            while times.len() < sessions {
                match tokio::time::timeout(Duration::from_secs(60), rx.recv()).await {
                    Ok(Some(t)) => times.push(t - since),
                    _ => break,
                }
            }
            times.sort_by(|a, b| a.total_cmp(b));
            let p = |q: f64| times.get(((times.len() as f64 - 1.0) * q) as usize).copied().unwrap_or(f64::NAN);
            println!(
                "notified {}/{} sessions: first {:.0} ms, p50 {:.0} ms, p99 {:.0} ms, last {:.0} ms after the block was submitted",
                times.len(),
                sessions,
                p(0.0),
                p(0.5),
                p(0.99),
                times.last().copied().unwrap_or(f64::NAN)
            );
        })?
        .await;
    Ok(())
}
