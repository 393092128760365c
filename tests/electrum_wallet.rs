//! The real Electrum wallet (Debian's `electrum` 4.3.4, run as a daemon) against the real
//! binary on a real regtest node (issue 22): payments, unconfirmed children, reorgs of depth
//! 1, 2 and 3 done at once or block by block "by hand", dropped payments re-mined, a payment
//! that comes back unconfirmed under its child. After every step the wallet must be
//! synchronized within seconds, its history (txids and heights) and balance must equal what
//! the node says, and its log must not show "status mismatch" (a history that does not hash
//! to the status the server sent; Electrum then waits for a new status, unsynchronized until
//! it comes).
//!
//! The node's view is computed from the node alone: every transaction of the active chain
//! and of the mempool that pays or spends one of the wallet's addresses, at its block height,
//! or 0 (-1 with an unconfirmed parent) in the mempool; the balance by Electrum's rules.
//! Each step is one change of the node (a block, payments to distinct addresses, one spend,
//! one reorg) and the wallet settles before the next, so no status is legitimately
//! superseded while the wallet fetches the history behind it. (Paying and mining without a
//! wait in between makes the wallet log a mismatch even against ElectrumX 2.0.0: the status
//! of the mempool payment is outdated by the block before the wallet asks for the history.)

use anyhow::{Context, Result, anyhow, bail, ensure};
use electrumx_core::Hash32;
use electrumx_testkit::chaingen::block_with_txs;
use electrumx_testkit::electrum::{Balance, ElectrumWallet, STATUS_MISMATCH, TEST_SEED};
use electrumx_testkit::node::{RegtestNode, free_port};
use electrumx_testkit::server::{ServerProcess, regtest_env, set_env};
use serde_json::{Value, json};
use std::collections::{BTreeSet, HashMap, HashSet};
use std::time::{Duration, Instant};

/// How long the wallet may take to reflect one change of the node.
const SYNC_TIMEOUT: Duration = Duration::from_secs(20);
/// How long the wallet must stay synchronized and equal to the node before the next step
/// (it may still be reorganising its own header chain when it first looks settled).
const SETTLE: Duration = Duration::from_millis(400);
/// How long the node sits on the fork point during a reorg done "by hand".
const PAUSE: Duration = Duration::from_secs(1);
/// The fee of the transactions the test signs itself.
const FEE: u64 = 10_000;

/// What the wallet shows, or should show.
#[derive(Debug, Default, PartialEq)]
struct View {
    tip: i64,
    history: BTreeSet<(String, i64)>,
    balance: Balance,
}

struct Fixture {
    node: RegtestNode,
    server: ServerProcess,
    wallet: ElectrumWallet,
    _db: tempfile::TempDir,
    /// Steps whose check found "status mismatch" lines (the step, the new lines).
    mismatches: Vec<(String, Vec<String>)>,
    mismatch_lines_seen: usize,
    /// (wallet log length, step) when each step's check passed, for the saved log.
    settled: Vec<(usize, String)>,
    name: &'static str,
    started: Instant,
}

fn sats(btc: &Value) -> Result<u64> {
    let v = btc
        .as_f64()
        .ok_or_else(|| anyhow!("not an amount: {btc}"))?;
    Ok((v * 1e8).round() as u64)
}

fn btc(sats: u64) -> f64 {
    sats as f64 / 1e8
}

/// The single address an output pays, if any.
fn address_of(out: &Value) -> Option<&str> {
    match out["scriptPubKey"]["addresses"]
        .as_array()
        .map(Vec::as_slice)
    {
        Some([a]) => a.as_str(),
        _ => None,
    }
}

/// The node's view of the wallet whose addresses are `mine`.
async fn node_view(node: &RegtestNode, mine: &HashSet<String>) -> Result<View> {
    let tip = node.height().await?;
    let hashes = node
        .rpc_batch("getblockhash", (1..=tip).map(|h| json!([h])).collect())
        .await?;
    let blocks = node
        .rpc_batch("getblock", hashes.iter().map(|h| json!([h, 2])).collect())
        .await?;
    let mut txs: Vec<(Value, i64)> = Vec::new();
    for (i, block) in blocks.into_iter().enumerate() {
        let list = block["tx"]
            .as_array()
            .ok_or_else(|| anyhow!("getblock without transactions"))?;
        txs.extend(list.iter().map(|tx| (tx.clone(), i as i64 + 1)));
    }
    let mempool = node.rpc("getrawmempool", json!([true])).await?;
    let entries = mempool
        .as_object()
        .ok_or_else(|| anyhow!("getrawmempool: {mempool}"))?;
    let ids: Vec<&String> = entries.keys().collect();
    let raws = node
        .rpc_batch(
            "getrawtransaction",
            ids.iter().map(|t| json!([t, 1])).collect(),
        )
        .await?;
    for (id, tx) in ids.iter().zip(raws) {
        let unconfirmed_parent = entries[id.as_str()]["depends"]
            .as_array()
            .is_some_and(|d| !d.is_empty());
        txs.push((tx, if unconfirmed_parent { -1 } else { 0 }));
    }

    // The wallet's outputs: outpoint → (value, height of the paying transaction).
    let mut outputs: HashMap<(String, u64), (u64, i64)> = HashMap::new();
    for (tx, height) in &txs {
        let txid = tx["txid"].as_str().unwrap_or_default();
        for out in tx["vout"].as_array().into_iter().flatten() {
            if address_of(out).is_some_and(|a| mine.contains(a)) {
                let n = out["n"].as_u64().ok_or_else(|| anyhow!("vout without n"))?;
                outputs.insert((txid.to_string(), n), (sats(&out["value"])?, *height));
            }
        }
    }
    let prevout =
        |input: &Value| Some((input["txid"].as_str()?.to_string(), input["vout"].as_u64()?));
    let mut view = View {
        tip: i64::from(tip),
        ..View::default()
    };
    let mut spent = HashSet::new();
    let mut by_txid = HashMap::new();
    for (tx, height) in &txs {
        let txid = tx["txid"].as_str().unwrap_or_default().to_string();
        let inputs = tx["vin"].as_array().cloned().unwrap_or_default();
        let mut touches = outputs.keys().any(|(t, _)| *t == txid);
        for op in inputs.iter().filter_map(prevout) {
            if outputs.contains_key(&op) {
                touches = true;
                spent.insert(op);
            }
        }
        if touches {
            view.history.insert((txid.clone(), *height));
        }
        by_txid.insert(txid, inputs);
    }
    // Electrum's AddressSynchronizer.get_balance: a confirmed coin is confirmed; an
    // unconfirmed one counts as confirmed up to what its transaction spends of the wallet's
    // confirmed coins.
    for (op, (value, height)) in &outputs {
        if spent.contains(op) {
            continue;
        }
        if *height > 0 {
            view.balance.confirmed += value;
            continue;
        }
        let confirmed_spent: u64 = by_txid[&op.0]
            .iter()
            .filter_map(prevout)
            .filter_map(|p| outputs.get(&p))
            .filter(|(_, h)| *h > 0)
            .map(|(v, _)| v)
            .sum();
        if confirmed_spent >= *value {
            view.balance.confirmed += value;
        } else {
            view.balance.confirmed += confirmed_spent;
            view.balance.unconfirmed += value - confirmed_spent;
        }
    }
    Ok(view)
}

fn describe_difference(want: &View, got: &View) -> String {
    let missing: Vec<_> = want.history.difference(&got.history).collect();
    let extra: Vec<_> = got.history.difference(&want.history).collect();
    format!(
        "tip: node {} wallet {}; history entries missing from the wallet {missing:?}, \
         in the wallet but not the node's {extra:?}; balance: node {:?} wallet {:?}",
        want.tip, got.tip, want.balance, got.balance
    )
}

impl Fixture {
    /// Node with 101 blocks, the server synced to it, the wallet restored and loaded.
    async fn start(name: &'static str) -> Result<Fixture> {
        let started = Instant::now();
        let node = RegtestNode::start().await?;
        node.rpc("generate", json!([101])).await?;
        let db = tempfile::tempdir()?;
        let port = free_port();
        let mut env = regtest_env(&node, db.path());
        set_env(&mut env, "SERVICES", format!("tcp://127.0.0.1:{port}"));
        set_env(&mut env, "DAEMON_POLL_INTERVAL_MEMPOOL", "100");
        set_env(&mut env, "LOG_LEVEL", "info,electrumx_server::server=trace");
        let mut server = ServerProcess::start(&env)?;
        server.wait_for_line("listening for clients", 1, Duration::from_secs(120))?;
        let wallet = ElectrumWallet::start(&format!("127.0.0.1:{port}"), TEST_SEED)?;
        Ok(Fixture {
            node,
            server,
            wallet,
            _db: db,
            mismatches: Vec::new(),
            mismatch_lines_seen: 0,
            settled: Vec::new(),
            name,
            started,
        })
    }

    /// Waits until the wallet is synchronized and shows the node's view, and stays so for
    /// [`SETTLE`]; then records any new "status mismatch" lines of its log against `step`.
    async fn check(&mut self, step: &str) -> Result<()> {
        let t0 = Instant::now();
        let mine: HashSet<String> = self.wallet.addresses(false, false)?.into_iter().collect();
        let want = node_view(&self.node, &mine).await?;
        let mut equal_since: Option<Instant> = None;
        let took = loop {
            let synchronized = self.wallet.is_synchronized()?;
            let got = View {
                tip: self.wallet.local_height()?,
                history: self.wallet.history()?.into_iter().collect(),
                balance: self.wallet.balance()?,
            };
            if synchronized && got == want {
                let since = *equal_since.get_or_insert_with(Instant::now);
                if since.elapsed() >= SETTLE {
                    break since - t0;
                }
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
            equal_since = None;
            if t0.elapsed() > SYNC_TIMEOUT {
                bail!(
                    "{step}: after {SYNC_TIMEOUT:?} the wallet is {}\nstatus mismatches: \
                     {:?}\nwallet log tail: {:#?}\nserver log tail: {:#?}\n{}",
                    match (synchronized, got == want) {
                        (false, true) => "not synchronized (its history and balance equal \
                                          the node's)"
                            .to_string(),
                        (s, false) => format!(
                            "{}synchronized and differs from the node: {}",
                            if s { "" } else { "not " },
                            describe_difference(&want, &got)
                        ),
                        (true, true) => "synchronized and equal to the node, but not for \
                                         long"
                            .to_string(),
                    },
                    self.wallet.log_matching(STATUS_MISMATCH),
                    self.wallet.log_tail(25),
                    self.server.tail(25),
                    self.save_logs(),
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        self.settled
            .push((self.wallet.log_lines().len(), step.to_string()));
        let lines = self.wallet.log_matching(STATUS_MISMATCH);
        let new = lines[self.mismatch_lines_seen..].to_vec();
        self.mismatch_lines_seen = lines.len();
        eprintln!(
            "[{:6.1} s] {step}: wallet synchronized and equal to the node after {:.2} s \
             (tip {}, {} history entries, balance {:?}){}",
            self.started.elapsed().as_secs_f64(),
            took.as_secs_f64(),
            want.tip,
            want.history.len(),
            want.balance,
            if new.is_empty() {
                String::new()
            } else {
                format!("; STATUS MISMATCH: {new:?}")
            }
        );
        if !new.is_empty() {
            self.mismatches.push((step.to_string(), new));
        }
        Ok(())
    }

    /// The node's wallet pays `amount` to `address`; returns the txid. Unlike
    /// `sendtoaddress`, with lock time 0: with the tip's height as lock time (the node's
    /// anti-fee-sniping), a reorg deeper than one block can leave the payment non-final at
    /// the fork point, and the node drops it from its mempool while Electrum keeps it as a
    /// local transaction (height -2), which no server can tell it about.
    async fn pay(&self, address: &str, amount: f64) -> Result<String> {
        let raw = self
            .node
            .rpc("createrawtransaction", json!([[], {address: amount}, 0]))
            .await?;
        let funded = self.node.rpc("fundrawtransaction", json!([raw])).await?;
        let signed = self
            .node
            .rpc(
                "signrawtransaction",
                json!([funded["hex"], null, null, "ALL|FORKID"]),
            )
            .await?;
        ensure!(signed["complete"] == json!(true), "not signed: {signed}");
        let txid = self
            .node
            .rpc("sendrawtransaction", json!([signed["hex"]]))
            .await?;
        txid.as_str()
            .map(str::to_string)
            .ok_or_else(|| anyhow!("sendrawtransaction: {txid}"))
    }

    async fn generate(&self) -> Result<()> {
        self.node.rpc("generate", json!([1])).await?;
        Ok(())
    }

    async fn raw_tx(&self, txid: &str) -> Result<Vec<u8>> {
        let hex = self.node.rpc("getrawtransaction", json!([txid])).await?;
        Ok(const_hex::decode(
            hex.as_str()
                .ok_or_else(|| anyhow!("getrawtransaction: {hex}"))?,
        )?)
    }

    /// The raw transactions of the active chain's block at `height`, coinbase excluded.
    async fn block_txs(&self, height: u32) -> Result<Vec<Vec<u8>>> {
        let hash = self.node.rpc("getblockhash", json!([height])).await?;
        let block = self.node.rpc("getblock", json!([hash, 2])).await?;
        let txs = block["tx"]
            .as_array()
            .ok_or_else(|| anyhow!("getblock without transactions"))?;
        txs.iter()
            .skip(1)
            .map(|tx| {
                let hex = tx["hex"].as_str().ok_or_else(|| anyhow!("no hex: {tx}"))?;
                Ok(const_hex::decode(hex)?)
            })
            .collect()
    }

    /// Spends the output of `parent` paying the wallet's address `from` to its address `to`
    /// (less the fee), signed by the node with the wallet's key; returns the txid.
    async fn spend(&self, parent: &str, from: &str, to: &str) -> Result<String> {
        let tx = self
            .node
            .rpc("getrawtransaction", json!([parent, 1]))
            .await?;
        let out = tx["vout"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|o| address_of(o) == Some(from))
            .ok_or_else(|| anyhow!("{parent} pays nothing to {from}"))?;
        let (vout, value, script) = (
            out["n"].clone(),
            sats(&out["value"])?,
            out["scriptPubKey"]["hex"].clone(),
        );
        let key = self.wallet.private_key(from)?;
        let raw = self
            .node
            .rpc(
                "createrawtransaction",
                json!([[{"txid": parent, "vout": vout}], {to: btc(value - FEE)}]),
            )
            .await?;
        let prevtx =
            json!([{"txid": parent, "vout": vout, "scriptPubKey": script, "amount": btc(value)}]);
        let signed = self
            .node
            .rpc(
                "signrawtransaction",
                json!([raw, prevtx, [key], "ALL|FORKID"]),
            )
            .await?;
        ensure!(signed["complete"] == json!(true), "not signed: {signed}");
        let txid = self
            .node
            .rpc("sendrawtransaction", json!([signed["hex"]]))
            .await?;
        txid.as_str()
            .map(str::to_string)
            .ok_or_else(|| anyhow!("sendrawtransaction: {txid}"))
    }

    /// Takes back the top `depth` blocks (`invalidateblock`; their transactions go back to
    /// the mempool) and mines `blocks` in their place, block `i` holding exactly
    /// `blocks[i]`. The replacement branch is built first. With no `pause` it is submitted in
    /// one batch right after the invalidation, so the node goes from the old tip to the new
    /// one at once; with a pause, one block at a time, `pause` after the invalidation and
    /// after each block, as when someone mines the replacement by hand (issue 22): the node
    /// sits on the fork point and then on the shorter new branch, the taken-back
    /// transactions in its mempool, while the server still has the old tip.
    async fn reorg(
        &self,
        depth: u32,
        blocks: &[Vec<Vec<u8>>],
        tag: &str,
        pause: Duration,
    ) -> Result<()> {
        ensure!(
            blocks.len() > depth as usize,
            "the new branch must be longer"
        );
        let tip = self.node.height().await?;
        let fork = tip - depth;
        let fork_hash = self.node.rpc("getblockhash", json!([fork])).await?;
        let header = self.node.rpc("getblockheader", json!([fork_hash])).await?;
        let mut prev = fork_hash
            .as_str()
            .and_then(Hash32::from_display_hex)
            .ok_or_else(|| anyhow!("getblockhash: {fork_hash}"))?;
        let fork_time = header["time"]
            .as_u64()
            .ok_or_else(|| anyhow!("getblockheader: {header}"))? as u32;
        let mut raws = Vec::new();
        for (i, txs) in (0u32..).zip(blocks) {
            // Each block's time is its parent's plus one (block_with_txs).
            let (hash, raw) = block_with_txs(
                prev,
                fork_time + i,
                fork + 1 + i,
                txs,
                format!("{tag} {i}").as_bytes(),
            );
            raws.push(json!([const_hex::encode(raw)]));
            prev = hash;
        }
        let first_replaced = self.node.rpc("getblockhash", json!([fork + 1])).await?;
        self.node
            .rpc("invalidateblock", json!([first_replaced]))
            .await?;
        // Without a pause, one batch; with one, a block at a time, pausing before each.
        let batches: Vec<Vec<Value>> = if pause.is_zero() {
            vec![raws]
        } else {
            raws.into_iter().map(|r| vec![r]).collect()
        };
        for batch in batches {
            tokio::time::sleep(pause).await;
            for reply in self.node.rpc_batch("submitblock", batch).await? {
                ensure!(reply.is_null(), "replacement block rejected: {reply}");
            }
        }
        let best = self.node.rpc("getbestblockhash", json!([])).await?;
        ensure!(
            best.as_str() == Some(prev.to_display_hex().as_str()),
            "after the reorg the node's tip is {best}, not the replacement branch's"
        );
        Ok(())
    }
}

/// Restores the wallet and returns the fixture with the wallet's receiving addresses.
async fn start(name: &'static str) -> Result<(Fixture, Vec<String>)> {
    let mut f = Fixture::start(name).await?;
    f.check("restored wallet, node at 101 blocks").await?;
    let a = f.wallet.addresses(true, false)?;
    ensure!(
        a.len() >= 8,
        "the wallet has {} receiving addresses",
        a.len()
    );
    Ok((f, a))
}

impl Fixture {
    /// Fails if any step's check saw "status mismatch"; stops the wallet.
    fn finish(mut self) -> Result<()> {
        if !self.mismatches.is_empty() {
            let saved = self.save_logs();
            bail!(
                "the wallet logged \"{STATUS_MISMATCH}\" (a history that does not hash to the \
                 status the server sent) at these steps: {:#?}\n{}",
                self.mismatches,
                saved
            );
        }
        self.wallet.stop().context("stopping the Electrum daemon")
    }

    /// Writes the whole wallet log (marked where each step settled) and server log to files
    /// under the temporary directory; returns a line naming them.
    fn save_logs(&mut self) -> String {
        let dir = std::env::temp_dir().join(format!("electrum-wallet-logs-{}", std::process::id()));
        let wallet_log = dir.join(format!("{}-electrum.log", self.name));
        let server_log = dir.join(format!("{}-server.log", self.name));
        let mut wallet = String::new();
        let mut marks = self.settled.iter().peekable();
        for (i, line) in self.wallet.log_lines().iter().enumerate() {
            while let Some((_, step)) = marks.next_if(|(at, _)| *at <= i) {
                wallet.push_str(&format!("===== settled: {step}\n"));
            }
            wallet.push_str(line);
            wallet.push('\n');
        }
        let server = self.server.tail(usize::MAX).join("\n");
        let saved = std::fs::create_dir_all(&dir)
            .and_then(|()| std::fs::write(&wallet_log, wallet))
            .and_then(|()| std::fs::write(&server_log, server));
        match saved {
            Ok(()) => format!(
                "full logs: {} and {}",
                wallet_log.display(),
                server_log.display()
            ),
            Err(e) => format!("could not save the logs in {}: {e}", dir.display()),
        }
    }
}

/// Issue 22's scenario, then the dropped payment re-mined, a reorg of depth 3, and rounds of
/// reorgs of depth 1 and 2 at different paces on reused addresses.
#[tokio::test]
async fn wallet_follows_payments_and_reorgs() -> Result<()> {
    let (mut f, a) = start("payments_and_reorgs").await?;

    // The scenario.
    for address in &a[..3] {
        f.pay(address, 1.5).await?;
    }
    f.check("three payments in the mempool").await?;
    f.generate().await?;
    f.check("three payments mined in block 102").await?;

    let p = f.pay(&a[0], 0.7).await?;
    f.check("a second payment to a used address, in the mempool")
        .await?;
    f.spend(&p, &a[0], &a[3]).await?;
    f.check("its output spent to another wallet address: an unconfirmed child")
        .await?;
    f.generate().await?;
    f.check("block 103 with the payment and its child").await?;

    let q1 = f.pay(&a[4], 0.25).await?;
    f.pay(&a[5], 0.35).await?;
    f.check("two more payments in the mempool").await?;
    f.generate().await?;
    f.check("block 104 with both payments").await?;

    let q1_raw = f.raw_tx(&q1).await?;
    f.reorg(1, &[vec![q1_raw.clone()], vec![]], "depth 1", PAUSE)
        .await?;
    f.check("reorg depth 1: the new 104 keeps one payment, the other back in the mempool, tip 105")
        .await?;

    // Variations.
    f.generate().await?;
    f.check("the dropped payment re-mined in block 106").await?;

    f.reorg(3, &[vec![], vec![q1_raw], vec![], vec![]], "depth 3", PAUSE)
        .await?;
    f.check(
        "reorg depth 3: one payment moves from 104 to 105, the other back in the mempool, tip 107",
    )
    .await?;

    // Rounds of reorgs of depth 1 and 2 at different paces, addresses reused (longer
    // histories): mine what the mempool holds (the payment the previous round dropped), pay
    // two addresses, mine both, replace the top block (depth 1) or the top two (depth 2: the
    // first replacement block holds the first replaced block's transactions again) by a
    // branch keeping only the first payment.
    for (round, pause_ms) in [0u64, 30, 100, 250, 0, 600, 50, 400, 0, 150]
        .into_iter()
        .enumerate()
    {
        let depth = 1 + round as u32 % 2;
        f.generate().await?;
        f.check(&format!("round {round}: the mempool mined"))
            .await?;
        let remined = f.block_txs(f.node.height().await?).await?;
        let x = f.pay(&a[round % 8], 0.11).await?;
        f.pay(&a[(round + 3) % 8], 0.12).await?;
        f.check(&format!("round {round}: two payments in the mempool"))
            .await?;
        f.generate().await?;
        f.check(&format!("round {round}: both mined")).await?;
        let x_raw = f.raw_tx(&x).await?;
        let mut branch = vec![vec![]; depth as usize + 1];
        if depth == 2 {
            branch[0] = remined;
        }
        branch[0].push(x_raw);
        let pause = Duration::from_millis(pause_ms);
        f.reorg(depth, &branch, &format!("round {round}"), pause)
            .await?;
        f.check(&format!(
            "round {round}: reorg depth {depth} (pause {pause_ms} ms) keeping one payment"
        ))
        .await?;
    }
    f.finish()
}

/// A confirmed payment whose output the wallet's child transaction spends comes back
/// unconfirmed: the child's height turns from 0 to -1. Once with the child in the mempool
/// (reorgs of depth 1, at once and by hand), once with the child confirmed too (depth 2).
#[tokio::test]
async fn wallet_sees_a_payment_come_back_unconfirmed_with_its_child() -> Result<()> {
    let (mut f, a) = start("back_unconfirmed").await?;
    for (i, pause) in [Duration::ZERO, PAUSE].into_iter().enumerate() {
        let (from, to) = (&a[2 * i], &a[2 * i + 1]);
        let paid = f.pay(from, 0.5).await?;
        f.check(&format!("#{i}: a payment in the mempool")).await?;
        f.generate().await?;
        f.check(&format!("#{i}: the payment mined")).await?;
        f.spend(&paid, from, to).await?;
        f.check(&format!("#{i}: its output spent in the mempool"))
            .await?;
        f.reorg(1, &[vec![], vec![]], &format!("unconfirm {i}"), pause)
            .await?;
        f.check(&format!(
            "#{i}: reorg depth 1 (pause {pause:?}): the payment back unconfirmed, its child \
             with an unconfirmed parent"
        ))
        .await?;
        f.generate().await?;
        f.check(&format!("#{i}: both mined")).await?;
    }

    let paid = f.pay(&a[4], 0.5).await?;
    f.check("a payment in the mempool").await?;
    f.generate().await?;
    f.check("the payment mined").await?;
    f.spend(&paid, &a[4], &a[5]).await?;
    f.check("its output spent in the mempool").await?;
    f.generate().await?;
    f.check("the child mined in the next block").await?;
    f.reorg(
        2,
        &[vec![], vec![], vec![]],
        "unconfirm both",
        Duration::ZERO,
    )
    .await?;
    f.check("reorg depth 2: the payment and its child both back in the mempool")
        .await?;
    f.generate().await?;
    f.check("both mined again").await?;
    f.finish()
}
