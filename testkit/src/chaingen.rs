//! A deterministic, seeded chain generator for regtest, with its own ledger.
//!
//! It builds blocks itself (coinbase with the height, merkle root, regtest proof of work)
//! and submits them with `submitblock`. The chain has a mainnet-like shape: transactions
//! with 1–3 inputs and 1–N outputs, address reuse with a Zipf-like skew (a few scripts get
//! a large share of the transactions, most get one to three), occasional OP_FALSE OP_RETURN
//! outputs, receive-only P2PKH outputs, and spends of outputs created earlier in the same
//! block. Spendable outputs are anyone-can-spend (`<id> OP_DROP OP_TRUE`, spent with an
//! empty scriptSig), which the Bitcoin SV regtest node accepts in blocks and its mempool.
//!
//! The [`Ledger`] is computed from the generator's own blocks, independently of the index,
//! so tests can compare the index with it.

use anyhow::{Result, anyhow, bail};
use electrumx_core::hash::{Hash32, ScriptHash, Txid};
use electrumx_core::parse::merkle_root;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use std::collections::{HashMap, VecDeque};

use crate::node::RegtestNode;

/// Regtest genesis: hash (display order) and time.
pub const REGTEST_GENESIS: &str =
    "0f9188f13cb7b2c71f2a335e3a4fc328bf5beb436012afca590b1a11466e2206";
const REGTEST_GENESIS_TIME: u32 = 1_296_688_602;
const COINBASE_MATURITY: u32 = 100;
const FEE: u64 = 500;

/// Shape of the generated chain.
#[derive(Clone, Debug)]
pub struct GenParams {
    /// RNG seed: the same parameters give the same chain.
    pub seed: u64,
    /// Average non-coinbase transactions per block (once coins have matured).
    pub txs_per_block: u32,
    /// Distinct spendable scripts ("wallets").
    pub wallets: u32,
    /// Zipf exponent of script reuse (1.0 ≈ mainnet-like heavy head).
    pub zipf_exponent: f64,
    /// Most outputs per transaction.
    pub max_outputs: u32,
    /// Share of outputs that are OP_FALSE OP_RETURN data.
    pub op_return_rate: f64,
    /// Share of outputs paid to receive-only P2PKH scripts (never spent).
    pub p2pkh_rate: f64,
}

impl Default for GenParams {
    fn default() -> Self {
        GenParams {
            seed: 1,
            txs_per_block: 20,
            wallets: 200,
            zipf_exponent: 1.0,
            max_outputs: 4,
            op_return_rate: 0.03,
            p2pkh_rate: 0.1,
        }
    }
}

impl GenParams {
    /// A stable key naming these parameters (for caching generated node datadirs).
    pub fn cache_key(&self, blocks: u32) -> String {
        format!(
            "s{}-b{}-t{}-w{}-z{}-o{}-r{}-p{}",
            self.seed,
            blocks,
            self.txs_per_block,
            self.wallets,
            self.zipf_exponent,
            self.max_outputs,
            self.op_return_rate,
            self.p2pkh_rate
        )
    }
}

/// Kinds of output script the generator pays to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ScriptKind {
    /// Spendable by anyone: `<4-byte id> OP_DROP OP_TRUE`.
    Wallet(u32),
    /// A P2PKH to a made-up key hash (receive-only).
    P2pkh(u32),
    /// OP_FALSE OP_RETURN with 8 data bytes.
    OpReturn(u64),
}

impl ScriptKind {
    /// The script bytes.
    pub fn script(&self) -> Vec<u8> {
        match self {
            ScriptKind::Wallet(id) => {
                let mut s = vec![0x04];
                s.extend_from_slice(&id.to_le_bytes());
                s.extend_from_slice(&[0x75, 0x51]);
                s
            }
            ScriptKind::P2pkh(id) => {
                let h = Hash32::sha256d(&id.to_le_bytes());
                let mut s = vec![0x76, 0xa9, 0x14];
                s.extend_from_slice(&h.0[..20]);
                s.extend_from_slice(&[0x88, 0xac]);
                s
            }
            ScriptKind::OpReturn(data) => {
                let mut s = vec![0x00, 0x6a, 0x08];
                s.extend_from_slice(&data.to_le_bytes());
                s
            }
        }
    }

    /// True for outputs the index does not track.
    pub fn is_unspendable(&self) -> bool {
        matches!(self, ScriptKind::OpReturn(_))
    }
}

/// A generated transaction.
#[derive(Clone, Debug)]
pub struct GenTx {
    /// Transaction id.
    pub txid: Txid,
    /// Spent outpoints (empty for a coinbase).
    pub inputs: Vec<(Txid, u32)>,
    /// Outputs: value and script.
    pub outputs: Vec<(u64, ScriptKind)>,
    /// Raw serialization.
    pub raw: Vec<u8>,
}

/// A generated block.
#[derive(Clone, Debug)]
pub struct GenBlock {
    /// Height.
    pub height: u32,
    /// Block hash.
    pub hash: Hash32,
    /// Header.
    pub header: [u8; 80],
    /// Transactions, coinbase first.
    pub txs: Vec<GenTx>,
}

impl GenBlock {
    /// Raw serialization.
    pub fn raw(&self) -> Vec<u8> {
        let mut b = self.header.to_vec();
        write_varint(&mut b, self.txs.len() as u64);
        for tx in &self.txs {
            b.extend_from_slice(&tx.raw);
        }
        b
    }

    fn time(&self) -> u32 {
        u32::from_le_bytes(self.header[68..72].try_into().expect("4 bytes"))
    }
}

#[derive(Clone, Copy, Debug)]
struct Coin {
    txid: Txid,
    vout: u32,
    value: u64,
}

/// The generator (see the module docs).
pub struct ChainGen {
    params: GenParams,
    rng: StdRng,
    zipf_cdf: Vec<f64>,
    /// Blocks above genesis, in order (`blocks[0]` is height 1).
    pub blocks: Vec<GenBlock>,
    /// Transactions sent to the mempool and not yet mined.
    pub mempool: Vec<GenTx>,
    pool: Vec<Coin>,
    immature: VecDeque<(u32, Coin)>,
    branch: u32,
    next_p2pkh: u32,
    empty_blocks: bool,
}

impl ChainGen {
    /// A generator starting at the regtest genesis block.
    pub fn new(params: GenParams) -> Self {
        let mut cdf = Vec::with_capacity(params.wallets as usize);
        let mut total = 0.0;
        for i in 0..params.wallets.max(1) {
            total += 1.0 / ((i + 1) as f64).powf(params.zipf_exponent);
            cdf.push(total);
        }
        for c in &mut cdf {
            *c /= total;
        }
        ChainGen {
            rng: StdRng::seed_from_u64(params.seed),
            params,
            zipf_cdf: cdf,
            blocks: Vec::new(),
            mempool: Vec::new(),
            pool: Vec::new(),
            immature: VecDeque::new(),
            branch: 0,
            next_p2pkh: 0,
            empty_blocks: false,
        }
    }

    /// Height of the generated tip.
    pub fn height(&self) -> u32 {
        self.blocks.len() as u32
    }

    fn tip(&self) -> (Hash32, u32) {
        match self.blocks.last() {
            Some(b) => (b.hash, b.time()),
            None => (
                Hash32::from_display_hex(REGTEST_GENESIS).expect("genesis"),
                REGTEST_GENESIS_TIME,
            ),
        }
    }

    fn wallet(&mut self) -> u32 {
        let u: f64 = self.rng.random();
        (self.zipf_cdf.partition_point(|&c| c < u) as u32)
            .min(self.params.wallets.saturating_sub(1))
    }

    fn subsidy(height: u32) -> u64 {
        let halvings = height / 150;
        if halvings >= 64 {
            0
        } else {
            50_0000_0000u64 >> halvings
        }
    }

    fn mature_coins(&mut self, next_height: u32) {
        while let Some((h, _)) = self.immature.front() {
            if h + COINBASE_MATURITY <= next_height {
                let (_, c) = self.immature.pop_front().expect("front exists");
                self.pool.push(c);
            } else {
                break;
            }
        }
    }

    fn random_tx(&mut self) -> Option<GenTx> {
        if self.pool.is_empty() {
            return None;
        }
        let n_in = match self.rng.random_range(0..10) {
            0..6 => 1,
            6..9 => 2,
            _ => 3,
        }
        .min(self.pool.len());
        let mut inputs = Vec::with_capacity(n_in);
        let mut sum = 0u64;
        for _ in 0..n_in {
            let i = self.rng.random_range(0..self.pool.len());
            let c = self.pool.swap_remove(i);
            sum += c.value;
            inputs.push((c.txid, c.vout));
        }
        let fee = FEE.min(sum / 2);
        let mut remaining = sum - fee;
        let n_out = self.rng.random_range(1..=self.params.max_outputs.max(1));
        let mut outputs = Vec::with_capacity(n_out as usize);
        for k in 0..n_out {
            let last = k + 1 == n_out;
            let r: f64 = self.rng.random();
            if r < self.params.op_return_rate && !last {
                outputs.push((0, ScriptKind::OpReturn(self.rng.random())));
            } else if r < self.params.op_return_rate + self.params.p2pkh_rate && !last {
                let v = remaining.min(self.rng.random_range(546..20_000));
                remaining -= v;
                let id = if self.rng.random_bool(0.5) && self.next_p2pkh > 0 {
                    self.rng.random_range(0..self.next_p2pkh)
                } else {
                    self.next_p2pkh += 1;
                    self.next_p2pkh - 1
                };
                outputs.push((v, ScriptKind::P2pkh(id)));
            } else {
                let v = if last {
                    remaining
                } else {
                    remaining / 2 + self.rng.random_range(0..=remaining / 4)
                };
                remaining -= v;
                let w = self.wallet();
                outputs.push((v, ScriptKind::Wallet(w)));
            }
        }
        let tx = build_tx(&inputs, &outputs, None);
        for (vout, (value, kind)) in tx.outputs.iter().enumerate() {
            if let ScriptKind::Wallet(_) = kind {
                self.pool.push(Coin {
                    txid: tx.txid,
                    vout: vout as u32,
                    value: *value,
                });
            }
        }
        Some(tx)
    }

    /// Generates the next block (including any transactions left in the mempool).
    pub fn next_block(&mut self) -> &GenBlock {
        let height = self.height() + 1;
        self.mature_coins(height);
        let mut txs: Vec<GenTx> = std::mem::take(&mut self.mempool);
        if !self.pool.is_empty() && !self.empty_blocks {
            let n = self
                .rng
                .random_range(self.params.txs_per_block / 2..=self.params.txs_per_block * 3 / 2);
            for _ in 0..n {
                match self.random_tx() {
                    Some(tx) => txs.push(tx),
                    None => break,
                }
            }
        }
        // The coinbase claims the subsidy only (claiming less than subsidy + fees is valid).
        let payout = Self::subsidy(height);
        let w = self.wallet();
        let mut tag = b"gen".to_vec();
        tag.extend_from_slice(&self.params.seed.to_le_bytes());
        tag.extend_from_slice(&self.branch.to_le_bytes());
        let coinbase = build_tx(&[], &[(payout, ScriptKind::Wallet(w))], Some((height, tag)));
        self.immature.push_back((
            height,
            Coin {
                txid: coinbase.txid,
                vout: 0,
                value: payout,
            },
        ));
        txs.insert(0, coinbase);
        let (prev, prev_time) = self.tip();
        let root = merkle_root(txs.iter().map(|t| t.txid));
        let (header, hash) = seal_header(prev, prev_time + 1, root);
        self.blocks.push(GenBlock {
            height,
            hash,
            header,
            txs,
        });
        self.blocks.last().expect("just pushed")
    }

    /// Builds transactions for the mempool (mined in the next generated block).
    pub fn mempool_txs(&mut self, n: usize) -> Vec<GenTx> {
        let next = self.height() + 1;
        self.mature_coins(next);
        let mut out = Vec::new();
        for _ in 0..n {
            match self.random_tx() {
                Some(tx) => out.push(tx),
                None => break,
            }
        }
        self.mempool.extend(out.iter().cloned());
        out
    }

    /// Drops the last `k` blocks (for a competing branch); the next blocks differ from them.
    pub fn truncate(&mut self, k: u32) {
        let keep = self.blocks.len().saturating_sub(k as usize);
        self.blocks.truncate(keep);
        self.mempool.clear();
        self.branch += 1;
        // Rebuild the coin pool by replaying the kept chain.
        self.pool.clear();
        self.immature.clear();
        let mut unspent: HashMap<(Txid, u32), (u64, bool, u32)> = HashMap::new();
        for b in &self.blocks {
            for (i, tx) in b.txs.iter().enumerate() {
                for inp in &tx.inputs {
                    unspent.remove(inp);
                }
                for (vout, (value, kind)) in tx.outputs.iter().enumerate() {
                    if let ScriptKind::Wallet(_) = kind {
                        unspent.insert((tx.txid, vout as u32), (*value, i == 0, b.height));
                    }
                }
            }
        }
        let mut coins: Vec<_> = unspent.into_iter().collect();
        coins.sort_by_key(|((t, v), (_, _, h))| (*h, *t, *v));
        for ((txid, vout), (value, is_cb, h)) in coins {
            let c = Coin { txid, vout, value };
            if is_cb {
                self.immature.push_back((h, c))
            } else {
                self.pool.push(c)
            }
        }
        self.mature_coins(self.height() + 1);
    }

    /// Generates `n` blocks and submits them to the node, in batches.
    pub async fn mine(&mut self, node: &RegtestNode, n: u32) -> Result<()> {
        let mut pending = Vec::new();
        for _ in 0..n {
            let b = self.next_block();
            pending.push(json!([const_hex::encode(b.raw())]));
            if pending.len() >= 50 {
                submit(node, std::mem::take(&mut pending)).await?;
            }
        }
        if !pending.is_empty() {
            submit(node, pending).await?;
        }
        let best = node.rpc("getbestblockhash", json!([])).await?;
        let ours = self.tip().0.to_display_hex();
        if best.as_str() != Some(ours.as_str()) {
            bail!("node's tip {best} is not the generated tip {ours}");
        }
        Ok(())
    }

    /// Replaces the last `k` blocks with a longer competing branch of `k + 1` blocks and
    /// submits it, so that the node reorganises.
    pub async fn reorg(&mut self, node: &RegtestNode, k: u32) -> Result<()> {
        self.truncate(k);
        let mut raws = Vec::new();
        for _ in 0..=k {
            raws.push(json!([const_hex::encode(self.next_block().raw())]));
        }
        submit_allowing_side(node, raws).await?;
        let best = node.rpc("getbestblockhash", json!([])).await?;
        let ours = self.tip().0.to_display_hex();
        if best.as_str() != Some(ours.as_str()) {
            bail!("after the competing branch the node's tip is {best}, not {ours}");
        }
        Ok(())
    }

    /// Like [`ChainGen::reorg`], but the competing branch has only coinbases, so the
    /// transactions of the replaced blocks conflict with nothing and return to the node's
    /// mempool.
    pub async fn reorg_empty(&mut self, node: &RegtestNode, k: u32) -> Result<()> {
        self.empty_blocks = true;
        let r = self.reorg(node, k).await;
        self.empty_blocks = false;
        r
    }

    /// Replaces the last `k` blocks with blocks carrying the same transactions at the same
    /// heights (only their coinbases differ), plus one more empty block, and submits them:
    /// the node reorganises, yet most scripts' histories end as they were before.
    pub async fn reorg_same(&mut self, node: &RegtestNode, k: u32) -> Result<()> {
        let keep = self.blocks.len().saturating_sub(k as usize);
        let carried: Vec<Vec<GenTx>> = self.blocks[keep..]
            .iter()
            .map(|b| b.txs[1..].to_vec())
            .collect();
        self.truncate(k);
        self.empty_blocks = true;
        let mut raws = Vec::new();
        for txs in carried {
            self.mempool = txs;
            raws.push(json!([const_hex::encode(self.next_block().raw())]));
        }
        raws.push(json!([const_hex::encode(self.next_block().raw())]));
        self.empty_blocks = false;
        // The coin pool again from the whole chain (the carried transactions spent and
        // created coins the truncated pool did not know about).
        self.truncate(0);
        submit_allowing_side(node, raws).await?;
        let best = node.rpc("getbestblockhash", json!([])).await?;
        let ours = self.tip().0.to_display_hex();
        if best.as_str() != Some(ours.as_str()) {
            bail!("after the same-transactions branch the node's tip is {best}, not {ours}");
        }
        Ok(())
    }

    /// Sends `n` new transactions to the node's mempool.
    pub async fn send_to_mempool(&mut self, node: &RegtestNode, n: usize) -> Result<Vec<GenTx>> {
        let txs = self.mempool_txs(n);
        let params = txs
            .iter()
            .map(|t| json!([const_hex::encode(&t.raw)]))
            .collect();
        node.rpc_batch("sendrawtransaction", params).await?;
        Ok(txs)
    }

    /// The ledger of the confirmed chain.
    pub fn ledger(&self) -> Ledger {
        Ledger::from_blocks(&self.blocks)
    }
}

/// A regtest header on `prev` with `merkle_root` and `time`, its nonce ground until the hash
/// meets the regtest target (bits 0x207fffff); returns the header and its hash.
pub fn seal_header(prev: Hash32, time: u32, merkle_root: Hash32) -> ([u8; 80], Hash32) {
    let mut header = [0u8; 80];
    header[..4].copy_from_slice(&0x2000_0000u32.to_le_bytes());
    header[4..36].copy_from_slice(&prev.0);
    header[36..68].copy_from_slice(&merkle_root.0);
    header[68..72].copy_from_slice(&time.to_le_bytes());
    header[72..76].copy_from_slice(&0x207f_ffffu32.to_le_bytes());
    let mut nonce = 0u32;
    let hash = loop {
        header[76..80].copy_from_slice(&nonce.to_le_bytes());
        let h = Hash32::sha256d(&header);
        // Target 0x7fffff << 232: the top byte of the hash (as a number) must be < 0x7f.
        if h.0[31] < 0x7f {
            break h;
        }
        nonce += 1;
    };
    (header, hash)
}

/// A block on `prev` (at `height`, `prev_time` being the parent's time) holding a coinbase
/// (the subsidy to an anyone-can-spend script; `tag` in its scriptSig makes it unique)
/// followed by exactly `raw_txs`, in that order: the node's mempool plays no part.
/// Returns the block hash and the raw block.
pub fn block_with_txs(
    prev: Hash32,
    prev_time: u32,
    height: u32,
    raw_txs: &[Vec<u8>],
    tag: &[u8],
) -> (Hash32, Vec<u8>) {
    let coinbase = build_tx(
        &[],
        &[(ChainGen::subsidy(height), ScriptKind::Wallet(u32::MAX))],
        Some((height, tag.to_vec())),
    );
    let txids = std::iter::once(coinbase.txid).chain(raw_txs.iter().map(|r| Hash32::sha256d(r)));
    let (header, hash) = seal_header(prev, prev_time + 1, merkle_root(txids));
    let mut raw = header.to_vec();
    write_varint(&mut raw, 1 + raw_txs.len() as u64);
    raw.extend_from_slice(&coinbase.raw);
    for tx in raw_txs {
        raw.extend_from_slice(tx);
    }
    (hash, raw)
}

/// Mines one block on the node's tip holding exactly `raw_txs` (after the coinbase) and
/// submits it; fails unless the node accepts it as its new tip. Returns its hash (display
/// hex). Unlike the node's `generate`, the block leaves out whatever else the mempool holds,
/// so a reorg's replacement block can keep one transaction and drop another.
pub async fn mine_block_with_txs(
    node: &RegtestNode,
    raw_txs: &[Vec<u8>],
    tag: &[u8],
) -> Result<String> {
    let tip = node.rpc("getbestblockhash", json!([])).await?;
    let header = node.rpc("getblockheader", json!([tip])).await?;
    let (Some(tip), Some(height), Some(time)) = (
        tip.as_str(),
        header["height"].as_u64(),
        header["time"].as_u64(),
    ) else {
        bail!("unexpected getblockheader reply: {header}");
    };
    let prev = Hash32::from_display_hex(tip).ok_or_else(|| anyhow!("bad tip hash {tip}"))?;
    let (hash, raw) = block_with_txs(prev, time as u32, height as u32 + 1, raw_txs, tag);
    let reply = node
        .rpc("submitblock", json!([const_hex::encode(raw)]))
        .await?;
    if !reply.is_null() {
        bail!("submitblock at height {} rejected: {reply}", height + 1);
    }
    let hash = hash.to_display_hex();
    let best = node.rpc("getbestblockhash", json!([])).await?;
    if best.as_str() != Some(hash.as_str()) {
        bail!("the node's tip is {best}, not the submitted block {hash}");
    }
    Ok(hash)
}

async fn submit(node: &RegtestNode, raws: Vec<Value>) -> Result<()> {
    for (i, r) in node
        .rpc_batch("submitblock", raws)
        .await?
        .into_iter()
        .enumerate()
    {
        if !r.is_null() {
            bail!("submitblock #{i} rejected: {r}");
        }
    }
    Ok(())
}

async fn submit_allowing_side(node: &RegtestNode, raws: Vec<Value>) -> Result<()> {
    for (i, r) in node
        .rpc_batch("submitblock", raws)
        .await?
        .into_iter()
        .enumerate()
    {
        if !r.is_null() && r.as_str() != Some("inconclusive") {
            bail!("submitblock #{i} rejected: {r}");
        }
    }
    Ok(())
}

/// Appends Bitcoin's variable-length integer encoding of `n`.
pub(crate) fn write_varint(b: &mut Vec<u8>, n: u64) {
    match n {
        0..=0xfc => b.push(n as u8),
        0xfd..=0xffff => {
            b.push(0xfd);
            b.extend_from_slice(&(n as u16).to_le_bytes());
        }
        0x10000..=0xffff_ffff => {
            b.push(0xfe);
            b.extend_from_slice(&(n as u32).to_le_bytes());
        }
        _ => {
            b.push(0xff);
            b.extend_from_slice(&n.to_le_bytes());
        }
    }
}

fn push_int(s: &mut Vec<u8>, n: u32) {
    match n {
        0 => s.push(0x00),
        1..=16 => s.push(0x50 + n as u8),
        _ => {
            let mut bytes = Vec::new();
            let mut v = n;
            while v > 0 {
                bytes.push((v & 0xff) as u8);
                v >>= 8;
            }
            if bytes.last().is_some_and(|b| b & 0x80 != 0) {
                bytes.push(0);
            }
            s.push(bytes.len() as u8);
            s.extend_from_slice(&bytes);
        }
    }
}

fn build_tx(
    inputs: &[(Txid, u32)],
    outputs: &[(u64, ScriptKind)],
    coinbase: Option<(u32, Vec<u8>)>,
) -> GenTx {
    let mut raw = Vec::with_capacity(16 + inputs.len() * 41 + outputs.len() * 40);
    raw.extend_from_slice(&1u32.to_le_bytes());
    match &coinbase {
        Some((height, tag)) => {
            write_varint(&mut raw, 1);
            raw.extend_from_slice(&[0u8; 32]);
            raw.extend_from_slice(&0xffff_ffffu32.to_le_bytes());
            let mut sig = Vec::new();
            push_int(&mut sig, *height);
            sig.push(tag.len() as u8);
            sig.extend_from_slice(tag);
            write_varint(&mut raw, sig.len() as u64);
            raw.extend_from_slice(&sig);
            raw.extend_from_slice(&0xffff_ffffu32.to_le_bytes());
        }
        None => {
            write_varint(&mut raw, inputs.len() as u64);
            for (txid, vout) in inputs {
                raw.extend_from_slice(&txid.0);
                raw.extend_from_slice(&vout.to_le_bytes());
                raw.push(0);
                raw.extend_from_slice(&0xffff_ffffu32.to_le_bytes());
            }
        }
    }
    write_varint(&mut raw, outputs.len() as u64);
    for (value, kind) in outputs {
        raw.extend_from_slice(&value.to_le_bytes());
        let s = kind.script();
        write_varint(&mut raw, s.len() as u64);
        raw.extend_from_slice(&s);
    }
    raw.extend_from_slice(&0u32.to_le_bytes());
    GenTx {
        txid: Hash32::sha256d(&raw),
        inputs: inputs.to_vec(),
        outputs: outputs.to_vec(),
        raw,
    }
}

/// What the confirmed chain says, computed from the generated blocks alone.
#[derive(Default, Debug)]
pub struct Ledger {
    /// History of each script: (txid, height) in chain order.
    pub history: HashMap<ScriptHash, Vec<(Txid, u32)>>,
    /// Unspent outputs: outpoint → (script hash, value, height).
    pub utxos: HashMap<(Txid, u32), (ScriptHash, u64, u32)>,
    /// Spent outpoints → (spending txid, height).
    pub spenders: HashMap<(Txid, u32), (Txid, u32)>,
    /// Every transaction: txid → (height, position).
    pub positions: HashMap<Txid, (u32, u32)>,
    /// Number of transactions (genesis excluded).
    pub tx_count: u64,
}

impl Ledger {
    /// Replays `blocks` (heights 1..) into a ledger.
    pub fn from_blocks(blocks: &[GenBlock]) -> Ledger {
        let mut l = Ledger::default();
        let mut owners: HashMap<(Txid, u32), (ScriptHash, u64, u32)> = HashMap::new();
        for b in blocks {
            for (pos, tx) in b.txs.iter().enumerate() {
                l.tx_count += 1;
                l.positions.insert(tx.txid, (b.height, pos as u32));
                let mut touched: Vec<ScriptHash> = Vec::new();
                for inp in &tx.inputs {
                    let (sh, _, _) = owners.remove(inp).expect("generator spends known outputs");
                    l.utxos.remove(inp);
                    l.spenders.insert(*inp, (tx.txid, b.height));
                    touched.push(sh);
                }
                for (vout, (value, kind)) in tx.outputs.iter().enumerate() {
                    if kind.is_unspendable() {
                        continue;
                    }
                    let sh = ScriptHash::of_script(&kind.script());
                    owners.insert((tx.txid, vout as u32), (sh, *value, b.height));
                    l.utxos
                        .insert((tx.txid, vout as u32), (sh, *value, b.height));
                    touched.push(sh);
                }
                let mut seen = Vec::new();
                for sh in touched {
                    if !seen.contains(&sh) {
                        seen.push(sh);
                        l.history.entry(sh).or_default().push((tx.txid, b.height));
                    }
                }
            }
        }
        l
    }

    /// Balance of a script.
    pub fn balance(&self, sh: &ScriptHash) -> u64 {
        self.utxos
            .values()
            .filter(|(s, _, _)| s == sh)
            .map(|(_, v, _)| v)
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use electrumx_core::parse::ParsedBlock;

    #[test]
    fn generated_blocks_parse_and_are_deterministic() {
        let mut a = ChainGen::new(GenParams::default());
        let mut b = ChainGen::new(GenParams::default());
        for _ in 0..130 {
            a.next_block();
            b.next_block();
        }
        assert_eq!(a.blocks.last().unwrap().hash, b.blocks.last().unwrap().hash);
        let last = a.blocks.last().unwrap();
        assert!(
            last.txs.len() > 1,
            "coins matured, so blocks carry transactions"
        );
        let parsed = ParsedBlock::parse(last.raw()).expect("our own block parses");
        assert_eq!(parsed.hash, last.hash);
        assert_eq!(parsed.txs.len(), last.txs.len());
        let ledger = a.ledger();
        let max = ledger.history.values().map(Vec::len).max().unwrap();
        let min = ledger.history.values().map(Vec::len).min().unwrap();
        assert!(
            max > 10 * min,
            "script reuse is skewed: max {max}, min {min}"
        );
    }
}
