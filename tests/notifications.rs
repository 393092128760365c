//! Script notifications stay true through reorgs and mempool changes: a randomized run of
//! blocks, reorgs of depth 1–5 (with the taken-back transactions returning to the mempool
//! or replaced by conflicting ones) and mempool payments on a real regtest node, with
//! sessions subscribed to every script the chain pays, each acting as Electrum's
//! synchronizer does. After each round, every session's last notified status must equal the
//! status of what `get_history` answers, and no session may be left holding a history that
//! did not match the status it was announced with (a wallet then shows "not synchronized"
//! until the next change).

use anyhow::{Context, Result, bail};
use bitcoin::hashes::{Hash, sha256};
use electrumx_core::ScriptHash;
use electrumx_testkit::chaingen::{ChainGen, GenParams, ScriptKind};
use electrumx_testkit::node::{RegtestNode, free_port};
use electrumx_testkit::rawclient::RawConn;
use electrumx_testkit::server::{ServerProcess, regtest_env, set_env};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Scripts the generator pays (all of them are subscribed).
const WALLETS: u32 = 24;
/// Sessions, each subscribed to every script.
const SESSIONS: usize = 3;
/// Rounds of random changes.
const ROUNDS: usize = 40;

/// What a wallet knows of one script, as Electrum's synchronizer keeps it.
#[derive(Clone, Debug, Default)]
struct Known {
    /// The last status the server sent (a subscribe reply or a notification).
    last_sent: Value,
    /// The status of the last history accepted (it hashed to the status announced).
    accepted: Value,
    /// A fetched history did not match its announced status, and no later notification
    /// has been acted on: Electrum shows "not synchronized" while any script is stale.
    stale: bool,
}

/// A session that subscribes to scripts and acts like Electrum's synchronizer: on a status
/// that differs from the one of the history it holds, it fetches the history at once and
/// accepts it only if it hashes to that status; otherwise the script is stale until a later
/// notification leads to a matching history. (A notification equal to the status of the
/// history it already holds is ignored, and does not clear staleness: Electrum 4.3's rule,
/// which leaves a wallet unsynchronized after a transient status.)
struct Subscriber {
    stream: TcpStream,
    known: Arc<Mutex<HashMap<String, Known>>>,
    notified: Arc<std::sync::atomic::AtomicUsize>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Subscriber {
    fn connect(port: u16, scripts: &[String]) -> Result<Subscriber> {
        let mut stream = TcpStream::connect(("127.0.0.1", port))?;
        let known: Arc<Mutex<HashMap<String, Known>>> = Arc::default();
        // Request ids 1..=n are the scripts' subscriptions, in order; 0 is server.version;
        // history fetches take ids above them.
        let subscribed: HashMap<u64, String> = scripts
            .iter()
            .enumerate()
            .map(|(i, sh)| (i as u64 + 1, sh.clone()))
            .collect();
        let mut lines = BufReader::new(stream.try_clone()?);
        let state = known.clone();
        let notified = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = notified.clone();
        // History fetches in flight: id → (script, the status they were asked for).
        let fetching: Arc<Mutex<HashMap<u64, (String, Value)>>> = Arc::default();
        // The fetcher sends each history request after a short random delay, as a wallet
        // busy with other work (headers after a reorg, say) does: by then the server may
        // have moved on from the view it announced.
        let (fetch_tx, fetch_rx) = std::sync::mpsc::channel::<(String, Value)>();
        let mut requests = stream.try_clone()?;
        let in_flight = fetching.clone();
        let first_id = scripts.len() as u64 + 1;
        let delay_seed = port as u64 ^ (Arc::as_ptr(&known) as u64);
        std::thread::spawn(move || {
            let mut rng = StdRng::seed_from_u64(delay_seed);
            // Fetches waiting for their time, in the order of the notifications (a wallet
            // asks in that order; only the delay varies).
            let mut due: std::collections::VecDeque<(Instant, String, Value)> = Default::default();
            let mut next_id = first_id;
            loop {
                let wait = due.front().map_or(Duration::from_secs(3600), |d| {
                    d.0.saturating_duration_since(Instant::now())
                });
                match fetch_rx.recv_timeout(wait) {
                    Ok((sh, status)) => {
                        let at = Instant::now() + Duration::from_millis(rng.random_range(0..300));
                        let at = due.back().map_or(at, |last| at.max(last.0));
                        due.push_back((at, sh, status));
                        continue;
                    }
                    Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                    Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return,
                }
                while due.front().is_some_and(|d| d.0 <= Instant::now()) {
                    let (_, sh, status) = due.pop_front().expect("looked at");
                    next_id += 1;
                    in_flight
                        .lock()
                        .unwrap()
                        .insert(next_id, (sh.clone(), status));
                    let req = json!({"jsonrpc": "2.0", "id": next_id, "method": "blockchain.scripthash.get_history", "params": [sh]});
                    if requests.write_all(format!("{req}\n").as_bytes()).is_err() {
                        return;
                    }
                }
            }
        });
        let reader = std::thread::spawn(move || {
            let mut line = String::new();
            loop {
                line.clear();
                match lines.read_line(&mut line) {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
                let Ok(msg) = serde_json::from_str::<Value>(&line) else {
                    return;
                };
                let announced = if msg["method"] == "blockchain.scripthash.subscribe" {
                    counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let sh = msg["params"][0].as_str().unwrap_or_default().to_string();
                    Some((sh, msg["params"][1].clone()))
                } else if let Some(sh) = msg["id"].as_u64().and_then(|id| subscribed.get(&id)) {
                    Some((sh.clone(), msg["result"].clone()))
                } else if let Some((sh, status)) = msg["id"]
                    .as_u64()
                    .and_then(|id| fetching.lock().unwrap().remove(&id))
                {
                    // A fetched history: accepted if it hashes to the announced status.
                    let mut st = state.lock().unwrap();
                    let k = st.entry(sh).or_default();
                    if status_of_history(&msg["result"]) == status {
                        k.accepted = status;
                        k.stale = false;
                    } else {
                        k.stale = true;
                    }
                    None
                } else {
                    None
                };
                let Some((sh, status)) = announced else {
                    continue;
                };
                let mut st = state.lock().unwrap();
                let k = st.entry(sh.clone()).or_default();
                k.last_sent = status.clone();
                if k.accepted == status {
                    continue;
                }
                drop(st);
                if fetch_tx.send((sh, status)).is_err() {
                    return;
                }
            }
        });
        let mut out = String::new();
        out.push_str(
            &json!({"jsonrpc": "2.0", "id": 0, "method": "server.version", "params": ["notifications-test", "1.4"]})
                .to_string(),
        );
        out.push('\n');
        for (i, sh) in scripts.iter().enumerate() {
            out.push_str(
                &json!({"jsonrpc": "2.0", "id": i + 1, "method": "blockchain.scripthash.subscribe", "params": [sh]})
                    .to_string(),
            );
            out.push('\n');
        }
        stream.write_all(out.as_bytes())?;
        Ok(Subscriber {
            stream,
            known,
            notified,
            reader: Some(reader),
        })
    }

    fn known(&self, sh: &str) -> Known {
        self.known
            .lock()
            .unwrap()
            .get(sh)
            .cloned()
            .unwrap_or_default()
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        let _ = self.stream.shutdown(Shutdown::Both);
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
    }
}

/// The status (§5 of the protocol) of a `get_history` answer, as a wallet computes it.
fn status_of_history(history: &Value) -> Value {
    let entries = history.as_array().cloned().unwrap_or_default();
    if entries.is_empty() {
        return Value::Null;
    }
    let pre: String = entries
        .iter()
        .map(|e| format!("{}:{}:", e["tx_hash"].as_str().unwrap_or(""), e["height"]))
        .collect();
    json!(const_hex::encode(
        sha256::Hash::hash(pre.as_bytes()).to_byte_array()
    ))
}

/// Sends generated transactions to the node one by one; ones that conflict with
/// transactions a reorg returned to the node's mempool are refused there (the next block
/// may still carry them).
async fn send_some(node: &RegtestNode, chain: &mut ChainGen, n: usize) -> Result<usize> {
    let mut accepted = 0;
    for tx in chain.mempool_txs(n) {
        if node
            .rpc("sendrawtransaction", json!([const_hex::encode(&tx.raw)]))
            .await
            .is_ok()
        {
            accepted += 1;
        }
    }
    Ok(accepted)
}

/// Waits until the server is at the node's tip and every session's last status of every
/// script equals the status of the script's history as the server answers it now.
fn converged(
    query: &mut RawConn,
    subs: &[Subscriber],
    scripts: &[String],
    height: u32,
) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last_diff = String::new();
    while Instant::now() < deadline {
        let tip = query.result("blockchain.headers.subscribe", json!([]))?;
        if tip["height"] == json!(height) {
            let mut diff = None;
            'scripts: for sh in scripts {
                let history = query.result("blockchain.scripthash.get_history", json!([sh]))?;
                let want = status_of_history(&history);
                for (i, s) in subs.iter().enumerate() {
                    let k = s.known(sh);
                    if k.last_sent != want || k.accepted != want || k.stale {
                        diff = Some(format!(
                            "session {i}, script {sh}: {k:?}, the history's status {want} ({history})"
                        ));
                        break 'scripts;
                    }
                }
            }
            match diff {
                None => return Ok(()),
                Some(d) => last_diff = d,
            }
        } else {
            last_diff = format!("server at {}, node at {height}", tip["height"]);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    bail!("notifications did not converge within 30 s: {last_diff}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn last_notified_status_matches_the_history_through_reorgs_and_mempool_changes() -> Result<()>
{
    let seed: u64 = std::env::var("NOTIFY_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(7);
    eprintln!("seed {seed} (NOTIFY_TEST_SEED)");
    let mut rng = StdRng::seed_from_u64(seed);
    let node = RegtestNode::start().await?;
    let mut chain = ChainGen::new(GenParams {
        seed,
        txs_per_block: 12,
        wallets: WALLETS,
        max_outputs: 3,
        ..GenParams::default()
    });
    chain.mine(&node, 110).await?;
    let db = tempfile::tempdir()?;
    let port = free_port();
    let mut env = regtest_env(&node, db.path());
    set_env(&mut env, "SERVICES", format!("tcp://127.0.0.1:{port}"));
    set_env(&mut env, "DAEMON_POLL_INTERVAL_MEMPOOL", "100");
    let mut server = ServerProcess::start(&env)?;
    server.wait_for_line("listening for clients", 1, Duration::from_secs(120))?;

    let scripts: Vec<String> = (0..WALLETS)
        .map(|w| ScriptHash::of_script(&ScriptKind::Wallet(w).script()).to_hex())
        .collect();
    let subs = (0..SESSIONS)
        .map(|_| Subscriber::connect(port, &scripts))
        .collect::<Result<Vec<_>>>()?;
    let mut query = RawConn::connect(port)?;
    query.result("server.version", json!(["notifications-test-query", "1.4"]))?;
    tokio::task::block_in_place(|| converged(&mut query, &subs, &scripts, chain.height()))
        .context("after subscribing")?;

    let mut reorgs = 0;
    for round in 0..ROUNDS {
        let what = match rng.random_range(0..10) {
            0..=2 => {
                let n = rng.random_range(1..=3);
                send_some(&node, &mut chain, n).await?;
                chain.mine(&node, 1).await?;
                "block".to_string()
            }
            3..=6 => {
                let depth = rng.random_range(1..=5u32);
                reorgs += 1;
                match rng.random_range(0..3) {
                    0 => {
                        chain.reorg_empty(&node, depth).await?;
                        format!("reorg of depth {depth}, its transactions back to the mempool")
                    }
                    1 => {
                        chain.reorg(&node, depth).await?;
                        format!("reorg of depth {depth} to a conflicting branch")
                    }
                    _ => {
                        chain.reorg_same(&node, depth).await?;
                        format!("reorg of depth {depth} to blocks with the same transactions")
                    }
                }
            }
            _ => {
                let n = rng.random_range(1..=4);
                let accepted = send_some(&node, &mut chain, n).await?;
                format!("{accepted} mempool payments")
            }
        };
        // Sometimes a change follows the first one at once, before the server settled.
        if rng.random_bool(0.3) {
            send_some(&node, &mut chain, 1).await?;
        }
        tokio::task::block_in_place(|| converged(&mut query, &subs, &scripts, chain.height()))
            .with_context(|| format!("round {round}: {what}"))?;
    }
    assert!(reorgs > 0, "the run had reorgs");
    let notified: usize = subs
        .iter()
        .map(|s| s.notified.load(std::sync::atomic::Ordering::Relaxed))
        .sum();
    eprintln!("{notified} notifications over {ROUNDS} rounds ({reorgs} reorgs)");
    assert!(
        notified >= ROUNDS * SESSIONS,
        "every round changed some subscribed script's status"
    );
    drop(subs);
    server.signal("TERM")?;
    assert!(server.wait_exit(Duration::from_secs(30))?.success());
    Ok(())
}
