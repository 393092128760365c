//! A mainnet-shaped chain written straight to Bitcoin Core block files (`blk*.dat`),
//! without a node, at hundreds of thousands of transactions a second.
//!
//! The regtest node accepts a few thousand transactions a second and no segwit, so chains
//! of mainnet's shape and a tenth of its size are written here instead and indexed from
//! their files (`BLOCKS_DIR`, `COIN=Bitcoin NET=regtest`). The shape follows mainnet:
//! - **Height profile**: the first fifth of the heights holds nearly empty blocks, the
//!   next quarter ramps up, the rest holds full blocks (about 2 × the average), and a few
//!   blocks in the full phase hold 10,000+ transactions.
//! - **Script types** in mainnet-like proportions (P2PKH, P2WPKH, P2SH-P2WPKH, P2TR, P2WSH,
//!   P2PK, bare multisig), inputs with the matching scriptSig or witness (segwit and taproot
//!   transactions use the segwit serialization; txids leave the witness out), and
//!   OP_RETURN outputs.
//! - **Transactions**: most with 1–2 inputs and 2 outputs; consolidations of 50–500
//!   inputs; batch payouts of 100–2,000 outputs.
//! - **Spends**: mostly of recent outputs (coins are kept in buckets of 100 blocks, a spend
//!   walks back from the newest bucket with a geometric distance) with a tail of old ones
//!   (4 % of the spends pick a bucket older than a year of blocks, when there is one), so
//!   the unspent set grows to tens of millions on a tenth of mainnet.
//! - **Address reuse with a heavy head**: three scripts receive 1.5 %, 0.6 % and 0.6 % of
//!   all outputs (over a million transactions each on a tenth of mainnet), one receive-only
//!   script 0.1 % of them (its outputs are never spent: 100,000+ unspent outputs), twenty
//!   mining pools share the coinbases, 42 % of the outputs go to a reused population with a
//!   1/rank skew and the rest to fresh scripts.
//!
//! Signatures and keys are filler bytes (nothing here is validated, only indexed); block
//! headers carry a regtest proof of work on the regtest genesis block. For a sample of the
//! scripts (the heavy head, the pools and one script in `sample_one_in` of the others) the
//! generator keeps the truth an index must match: history length, balance, unspent outputs.

use anyhow::{Context, Result};
use bitcoin::hashes::{Hash, HashEngine, sha256d};
use electrumx_core::hash::{Hash32, ScriptHash, Txid};
use electrumx_core::parse::merkle_root;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use std::collections::{HashMap, VecDeque};
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::chaingen::{REGTEST_GENESIS, seal_header, write_varint};

/// Bitcoin Core's largest block file (`MAX_BLOCKFILE_SIZE`).
pub const CORE_FILE_SIZE: u64 = 128 << 20;
/// Blocks of coins per bucket of the spend-age model.
const BUCKET_BLOCKS: u32 = 100;
/// A year of blocks: spends of older coins are the "old" tail.
const YEAR_BLOCKS: u32 = 52_560;
/// Share of spends that pick a coin older than a year (once there are such coins).
const OLD_SPEND_SHARE: f64 = 0.04;
/// Chance of stopping at each bucket when walking back from the newest one.
const RECENT_STOP: f64 = 0.6;
/// Coinbase outputs become spendable this many blocks later.
const COINBASE_MATURITY: u32 = 100;
/// Transactions in each of the few very large blocks.
pub const BIG_BLOCK_TXS: u32 = 12_000;
/// The regtest network magic that frames every block in the files.
const MAGIC: [u8; 4] = [0xfa, 0xbf, 0xb5, 0xda];
const GENESIS_TIME: u32 = 1_296_688_602;

/// Script ids of the heavy head (ids below `FIRST_REUSED` are reserved).
const HEAVY: [u64; 3] = [0, 1, 2];
/// Shares of all outputs paid to the heavy scripts.
const HEAVY_SHARE: [f64; 3] = [0.015, 0.006, 0.006];
/// The receive-only script whose outputs are never spent.
const HOARD: u64 = 3;
const HOARD_SHARE: f64 = 0.001;
/// Mining pools: ids `POOL_BASE..POOL_BASE + POOLS`.
const POOL_BASE: u64 = 10;
const POOLS: u64 = 20;
const FIRST_REUSED: u64 = 64;
/// Share of outputs paid to the reused population (the rest go to fresh scripts).
const REUSED_SHARE: f64 = 0.42;
/// Fresh script ids start here.
const FIRST_FRESH: u64 = 1 << 40;

/// Parameters of a generated chain.
#[derive(Clone, Debug)]
pub struct ShapeParams {
    /// RNG seed: the same parameters give the same chain, byte for byte.
    pub seed: u64,
    /// Blocks above the genesis block.
    pub blocks: u32,
    /// Target number of non-coinbase transactions.
    pub txs: u64,
    /// How many blocks of [`BIG_BLOCK_TXS`] transactions (spread over the full phase).
    pub big_blocks: u32,
    /// Size of the reused script population.
    pub reused_scripts: u64,
    /// Core 28+'s obfuscation key (written to `xor.dat`); `None` writes plain files.
    pub xor: Option<[u8; 8]>,
    /// Largest block file.
    pub file_size: u64,
    /// One script in this many (outside the heavy head and the pools) is sampled.
    pub sample_one_in: u64,
}

impl Default for ShapeParams {
    fn default() -> Self {
        ShapeParams {
            seed: 1,
            blocks: 100_000,
            txs: 500_000,
            big_blocks: 1,
            reused_scripts: 1_000_000,
            xor: None,
            file_size: CORE_FILE_SIZE,
            sample_one_in: 1 << 12,
        }
    }
}

/// The truth about one sampled script, from the generator's own bookkeeping.
#[derive(Clone, Debug, Serialize)]
pub struct ScriptTruth {
    /// What the script is in the sample for ("heavy", "hoard", "pool", "sampled").
    pub role: &'static str,
    /// Its type ("p2pkh", "p2wpkh", ...).
    pub kind: &'static str,
    /// The output script, hex.
    pub script: String,
    /// The Electrum script hash (display order hex).
    pub scripthash: String,
    /// Confirmed transactions touching it (its history's length).
    pub history: u64,
    /// Confirmed balance in satoshis.
    pub balance: u64,
    /// Unspent outputs.
    pub utxos: u64,
}

/// What was generated (written as `summary.json` beside the files).
#[derive(Clone, Debug, Default, Serialize)]
pub struct Summary {
    /// Blocks above genesis (the tip's height).
    pub blocks: u32,
    /// Transactions, coinbases included.
    pub txs: u64,
    /// Inputs spent (coinbase inputs excluded).
    pub inputs: u64,
    /// Spendable outputs created.
    pub outputs: u64,
    /// OP_RETURN outputs.
    pub op_returns: u64,
    /// Unspent spendable outputs at the tip.
    pub unspent: u64,
    /// Segwit-serialized transactions.
    pub segwit_txs: u64,
    /// Spends of coins older than a year of blocks.
    pub old_spends: u64,
    /// Bytes of raw blocks (without the 8 bytes of framing each).
    pub block_bytes: u64,
    /// Block files written.
    pub files: u32,
    /// Heights of the blocks of [`BIG_BLOCK_TXS`] transactions.
    pub big_blocks: Vec<u32>,
    /// The largest block's transaction count.
    pub largest_block_txs: u32,
    /// Transactions (coinbases included) at the end of each height's block: every
    /// 10,000th height, for slicing benchmarks by transaction count.
    pub txs_at_height: Vec<(u32, u64)>,
    /// Seconds spent generating.
    pub seconds: f64,
}

#[derive(Clone, Copy)]
struct Coin {
    txid: [u8; 32],
    vout: u32,
    value: u64,
    script: u64,
    height: u32,
}

#[derive(Default)]
struct Truth {
    history: u64,
    last_tx: u64,
    balance: u64,
    utxos: u64,
}

/// Script types and their shares of non-heavy scripts (cumulative per mille).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    P2pkh,
    P2wpkh,
    P2shP2wpkh,
    P2tr,
    P2wsh,
    P2pk,
    Multisig,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::P2pkh => "p2pkh",
            Kind::P2wpkh => "p2wpkh",
            Kind::P2shP2wpkh => "p2sh",
            Kind::P2tr => "p2tr",
            Kind::P2wsh => "p2wsh",
            Kind::P2pk => "p2pk",
            Kind::Multisig => "multisig",
        }
    }
}

/// splitmix64: the script bytes and types are a pure function of the script id.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn kind_of(id: u64) -> Kind {
    match id {
        0 => Kind::P2wpkh,
        1 => Kind::P2pkh,
        2 => Kind::P2shP2wpkh,
        3 => Kind::P2tr,
        _ => match mix(id ^ 0x5eed) % 1000 {
            0..380 => Kind::P2pkh,
            380..680 => Kind::P2wpkh,
            680..800 => Kind::P2shP2wpkh,
            800..900 => Kind::P2tr,
            900..970 => Kind::P2wsh,
            970..990 => Kind::P2pk,
            _ => Kind::Multisig,
        },
    }
}

fn push_filler(out: &mut Vec<u8>, id: u64, n: usize) {
    let mut k = 0u64;
    let mut left = n;
    while left > 0 {
        let w = mix(id.wrapping_mul(31).wrapping_add(k)).to_le_bytes();
        let take = left.min(8);
        out.extend_from_slice(&w[..take]);
        left -= take;
        k += 1;
    }
}

/// Appends the output script of script `id` to `out`.
fn write_script(out: &mut Vec<u8>, id: u64) {
    match kind_of(id) {
        Kind::P2pkh => {
            out.extend_from_slice(&[0x76, 0xa9, 0x14]);
            push_filler(out, id, 20);
            out.extend_from_slice(&[0x88, 0xac]);
        }
        Kind::P2wpkh => {
            out.extend_from_slice(&[0x00, 0x14]);
            push_filler(out, id, 20);
        }
        Kind::P2shP2wpkh => {
            out.extend_from_slice(&[0xa9, 0x14]);
            push_filler(out, id, 20);
            out.push(0x87);
        }
        Kind::P2tr => {
            out.extend_from_slice(&[0x51, 0x20]);
            push_filler(out, id, 32);
        }
        Kind::P2wsh => {
            out.extend_from_slice(&[0x00, 0x20]);
            push_filler(out, id, 32);
        }
        Kind::P2pk => {
            out.extend_from_slice(&[0x21, 0x02]);
            push_filler(out, id, 32);
            out.push(0xac);
        }
        Kind::Multisig => {
            out.extend_from_slice(&[0x51, 0x21, 0x03]);
            push_filler(out, id, 32);
            out.extend_from_slice(&[0x21, 0x02]);
            push_filler(out, id ^ 0xabcd, 32);
            out.extend_from_slice(&[0x52, 0xae]);
        }
    }
}

/// The output script of script `id`.
fn script_bytes(id: u64) -> Vec<u8> {
    let mut s = Vec::with_capacity(72);
    write_script(&mut s, id);
    s
}

fn script_len(kind: Kind) -> usize {
    match kind {
        Kind::P2pkh => 25,
        Kind::P2wpkh => 22,
        Kind::P2shP2wpkh => 23,
        Kind::P2tr | Kind::P2wsh => 34,
        Kind::P2pk => 35,
        Kind::Multisig => 71,
    }
}

/// Filler bytes for signatures and keys (random once, copied from at random offsets).
struct Noise(Vec<u8>);

impl Noise {
    fn new(rng: &mut StdRng) -> Self {
        Noise((0..4096).map(|_| rng.random()).collect())
    }

    fn push(&self, out: &mut Vec<u8>, rng: &mut StdRng, n: usize) {
        let at = rng.random_range(0..self.0.len() - n);
        out.extend_from_slice(&self.0[at..at + n]);
    }
}

/// The regtest genesis block (Bitcoin's genesis coinbase under the regtest header).
pub fn regtest_genesis_block() -> Vec<u8> {
    let coinbase = const_hex::decode(concat!(
        "01000000010000000000000000000000000000000000000000000000000000000000000000ffffffff",
        "4d04ffff001d0104455468652054696d65732030332f4a616e2f32303039204368616e63656c6c6f72",
        "206f6e206272696e6b206f66207365636f6e64206261696c6f757420666f722062616e6b73ffffffff",
        "0100f2052a01000000434104678afdb0fe5548271967f1a67130b7105cd6a828e03909a67962e0ea1f",
        "61deb649f6bc3f4cef38c4f35504e51ec112de5c384df7ba0b8d578a4c702b6bf11d5fac00000000"
    ))
    .expect("genesis coinbase hex");
    let root = Hash32::sha256d(&coinbase);
    let mut block = Vec::with_capacity(80 + 1 + coinbase.len());
    block.extend_from_slice(&1u32.to_le_bytes());
    block.extend_from_slice(&[0u8; 32]);
    block.extend_from_slice(&root.0);
    block.extend_from_slice(&GENESIS_TIME.to_le_bytes());
    block.extend_from_slice(&0x207f_ffffu32.to_le_bytes());
    block.extend_from_slice(&2u32.to_le_bytes());
    block.push(1);
    block.extend_from_slice(&coinbase);
    block
}

/// Writes framed blocks into `blk%05d.dat` files, rolling over at the size limit.
struct FileWriter {
    dir: PathBuf,
    xor: [u8; 8],
    limit: u64,
    number: u32,
    pos: u64,
    out: Option<std::io::BufWriter<std::fs::File>>,
    frame: Vec<u8>,
}

impl FileWriter {
    fn new(dir: &Path, xor: Option<[u8; 8]>, limit: u64) -> Result<Self> {
        std::fs::create_dir_all(dir).with_context(|| dir.display().to_string())?;
        if let Some(key) = xor {
            std::fs::write(dir.join("xor.dat"), key)?;
        }
        Ok(FileWriter {
            dir: dir.into(),
            xor: xor.unwrap_or([0; 8]),
            limit,
            number: 0,
            pos: 0,
            out: None,
            frame: Vec::new(),
        })
    }

    fn write_block(&mut self, header_and_count: &[u8], body: &[u8]) -> Result<()> {
        let len = (header_and_count.len() + body.len()) as u64;
        if self.out.is_some() && self.pos + 8 + len > self.limit {
            self.finish_file()?;
            self.number += 1;
            self.pos = 0;
        }
        if self.out.is_none() {
            let path = self.dir.join(format!("blk{:05}.dat", self.number));
            let f = std::fs::File::create(&path).with_context(|| path.display().to_string())?;
            self.out = Some(std::io::BufWriter::with_capacity(4 << 20, f));
        }
        let out = self.out.as_mut().expect("open file");
        if self.xor == [0; 8] {
            out.write_all(&MAGIC)?;
            out.write_all(&(len as u32).to_le_bytes())?;
            out.write_all(header_and_count)?;
            out.write_all(body)?;
        } else {
            self.frame.clear();
            self.frame.extend_from_slice(&MAGIC);
            self.frame.extend_from_slice(&(len as u32).to_le_bytes());
            self.frame.extend_from_slice(header_and_count);
            self.frame.extend_from_slice(body);
            for (i, b) in self.frame.iter_mut().enumerate() {
                *b ^= self.xor[((self.pos + i as u64) % 8) as usize];
            }
            out.write_all(&self.frame)?;
        }
        self.pos += 8 + len;
        Ok(())
    }

    fn finish_file(&mut self) -> Result<()> {
        if let Some(mut out) = self.out.take() {
            out.flush()?;
        }
        Ok(())
    }
}

/// The generator (see the module docs).
pub struct BlockGen {
    params: ShapeParams,
    rng: StdRng,
    noise: Noise,
    buckets: VecDeque<Vec<Coin>>,
    /// Bucket number of `buckets[0]`.
    first_bucket: u32,
    immature: VecDeque<Coin>,
    truth: HashMap<u64, Truth>,
    next_fresh: u64,
    tx_seq: u64,
    summary: Summary,
    /// Height of the last block that is a big one's, in order.
    big_heights: Vec<u32>,
    full_mean: f64,
}

impl BlockGen {
    /// A generator for `params`.
    pub fn new(params: ShapeParams) -> Self {
        let mut rng = StdRng::seed_from_u64(params.seed);
        let noise = Noise::new(&mut rng);
        // Profile: 20 % of heights near empty (0.5 tx a block), 25 % ramping to the full
        // mean M, 55 % around M: txs ≈ N (0.1 + 0.675 M) + big blocks.
        let n = params.blocks.max(1) as f64;
        let big = params.big_blocks as f64 * BIG_BLOCK_TXS as f64;
        let full_mean = ((params.txs as f64 - big).max(0.0) / n - 0.1).max(0.0) / 0.675;
        let full_start = (params.blocks as f64 * 0.45) as u32;
        let span = params.blocks.saturating_sub(full_start).max(1);
        let big_heights = (0..params.big_blocks)
            .map(|i| {
                full_start
                    + (span as u64 * (2 * i as u64 + 1) / (2 * params.big_blocks as u64)) as u32
            })
            .collect();
        let mut truth = HashMap::new();
        for id in HEAVY
            .iter()
            .copied()
            .chain([HOARD])
            .chain(POOL_BASE..POOL_BASE + POOLS)
        {
            truth.insert(id, Truth::default());
        }
        BlockGen {
            params,
            rng,
            noise,
            buckets: VecDeque::new(),
            first_bucket: 0,
            immature: VecDeque::new(),
            truth,
            next_fresh: FIRST_FRESH,
            tx_seq: 0,
            summary: Summary::default(),
            big_heights,
            full_mean,
        }
    }

    fn sampled(&self, id: u64) -> bool {
        id < FIRST_REUSED || mix(id ^ 0x5a11).is_multiple_of(self.params.sample_one_in)
    }

    fn touch(&mut self, id: u64, value: u64, created: bool) {
        if !self.sampled(id) {
            return;
        }
        let seq = self.tx_seq;
        let t = self.truth.entry(id).or_default();
        if t.last_tx != seq || t.history == 0 {
            t.history += 1;
            t.last_tx = seq;
        }
        if created {
            t.balance += value;
            t.utxos += 1;
        } else {
            t.balance -= value;
            t.utxos -= 1;
        }
    }

    /// Non-coinbase transactions wanted in the block at `height`.
    fn txs_for(&mut self, height: u32) -> u32 {
        if self.big_heights.binary_search(&height).is_ok() {
            return BIG_BLOCK_TXS;
        }
        let n = self.params.blocks as f64;
        let x = height as f64 / n;
        let mean = if x < 0.2 {
            0.5
        } else if x < 0.45 {
            0.5 + (self.full_mean - 0.5) * (x - 0.2) / 0.25
        } else {
            self.full_mean
        };
        if mean < 2.0 {
            return u32::from(self.rng.random_bool((mean / 2.0).clamp(0.0, 1.0)))
                * self.rng.random_range(1..=3);
        }
        self.rng.random_range(mean * 0.5..mean * 1.5).round() as u32
    }

    fn output_script(&mut self) -> u64 {
        let r: f64 = self.rng.random();
        let mut acc = 0.0;
        for (id, share) in HEAVY.iter().zip(HEAVY_SHARE) {
            acc += share;
            if r < acc {
                return *id;
            }
        }
        acc += HOARD_SHARE;
        if r < acc {
            return HOARD;
        }
        if r < acc + REUSED_SHARE {
            // A 1/rank skew over the reused population: log-uniform rank.
            let u: f64 = self.rng.random();
            let rank = ((self.params.reused_scripts as f64 + 1.0).powf(u) - 1.0) as u64;
            return FIRST_REUSED + rank.min(self.params.reused_scripts - 1);
        }
        self.next_fresh += 1;
        self.next_fresh
    }

    fn add_coin(&mut self, coin: Coin) {
        let b = coin.height / BUCKET_BLOCKS;
        while self.first_bucket + self.buckets.len() as u32 <= b {
            self.buckets.push_back(Vec::new());
        }
        let i = (b - self.first_bucket) as usize;
        self.buckets[i].push(coin);
    }

    fn take_coin(&mut self, height: u32) -> Option<Coin> {
        let n = self.buckets.len();
        if n == 0 {
            return None;
        }
        let year_buckets = (YEAR_BLOCKS / BUCKET_BLOCKS) as usize;
        let mut pick = None;
        if n > year_buckets + 1 && self.rng.random_bool(OLD_SPEND_SHARE) {
            for _ in 0..8 {
                let b = self.rng.random_range(0..n - year_buckets);
                if !self.buckets[b].is_empty() {
                    pick = Some(b);
                    break;
                }
            }
        }
        if pick.is_none() {
            let mut b = n;
            let mut last_full = None;
            while b > 0 {
                b -= 1;
                if !self.buckets[b].is_empty() {
                    last_full = Some(b);
                    if self.rng.random_bool(RECENT_STOP) {
                        break;
                    }
                }
                if n - b > 64 && last_full.is_some() {
                    break;
                }
            }
            pick = last_full;
        }
        let b = pick?;
        let bucket = &mut self.buckets[b];
        let i = self.rng.random_range(0..bucket.len());
        let coin = bucket.swap_remove(i);
        if bucket.capacity() > 4096 && bucket.len() < bucket.capacity() / 4 {
            bucket.shrink_to_fit();
        }
        if height.saturating_sub(coin.height) > YEAR_BLOCKS {
            self.summary.old_spends += 1;
        }
        Some(coin)
    }

    fn write_input(&mut self, tx: &mut Vec<u8>, coin: &Coin) {
        tx.extend_from_slice(&coin.txid);
        tx.extend_from_slice(&coin.vout.to_le_bytes());
        match kind_of(coin.script) {
            Kind::P2pkh => {
                tx.extend_from_slice(&[106, 71]);
                self.noise.push(tx, &mut self.rng, 71);
                tx.push(33);
                self.noise.push(tx, &mut self.rng, 33);
            }
            Kind::P2pk => {
                tx.extend_from_slice(&[72, 71]);
                self.noise.push(tx, &mut self.rng, 71);
            }
            Kind::Multisig => {
                tx.extend_from_slice(&[73, 0, 71]);
                self.noise.push(tx, &mut self.rng, 71);
            }
            Kind::P2shP2wpkh => {
                tx.extend_from_slice(&[23, 22, 0x00, 0x14]);
                self.noise.push(tx, &mut self.rng, 20);
            }
            Kind::P2wpkh | Kind::P2tr | Kind::P2wsh => tx.push(0),
        }
        tx.extend_from_slice(&0xffff_fffdu32.to_le_bytes());
    }

    fn write_witness(&mut self, tx: &mut Vec<u8>, kind: Kind) {
        match kind {
            Kind::P2wpkh | Kind::P2shP2wpkh => {
                tx.extend_from_slice(&[2, 71]);
                self.noise.push(tx, &mut self.rng, 71);
                tx.push(33);
                self.noise.push(tx, &mut self.rng, 33);
            }
            Kind::P2tr => {
                tx.extend_from_slice(&[1, 64]);
                self.noise.push(tx, &mut self.rng, 64);
            }
            Kind::P2wsh => {
                tx.extend_from_slice(&[4, 0, 71]);
                self.noise.push(tx, &mut self.rng, 71);
                tx.push(71);
                self.noise.push(tx, &mut self.rng, 71);
                tx.push(105);
                self.noise.push(tx, &mut self.rng, 105);
            }
            _ => tx.push(0),
        }
    }

    /// Builds one transaction into `body`; returns its txid, or `None` if no coin was left.
    fn write_tx(
        &mut self,
        body: &mut Vec<u8>,
        height: u32,
        simple: bool,
        spent: &mut Vec<Coin>,
        created: &mut Vec<Coin>,
    ) -> Option<[u8; 32]> {
        // A block of 10,000+ transactions holds small ones, as on mainnet (it stays under
        // the 4 MB a block can take).
        let shape: f64 = if simple { 1.0 } else { self.rng.random() };
        let (n_in, n_out) = if shape < 0.002 {
            (50 + (self.rng.random::<f64>().powi(3) * 450.0) as usize, 1)
        } else if shape < 0.0025 {
            (
                self.rng.random_range(1..=3),
                100 + (self.rng.random::<f64>().powi(3) * 1900.0) as usize,
            )
        } else {
            let i = match if simple {
                0
            } else {
                self.rng.random_range(0..100)
            } {
                0..65 => 1,
                65..90 => 2,
                _ => self.rng.random_range(3..=5),
            };
            let o = match if simple {
                50
            } else {
                self.rng.random_range(0..100)
            } {
                0..10 => 1,
                10..90 => 2,
                _ => self.rng.random_range(3..=6),
            };
            (i, o)
        };
        spent.clear();
        let mut sum = 0u64;
        for _ in 0..n_in {
            match self.take_coin(height) {
                Some(c) => {
                    sum += c.value;
                    spent.push(c);
                }
                None => break,
            }
        }
        if spent.is_empty() {
            return None;
        }
        self.tx_seq += 1;
        let segwit = spent.iter().any(|c| {
            matches!(
                kind_of(c.script),
                Kind::P2wpkh | Kind::P2shP2wpkh | Kind::P2tr | Kind::P2wsh
            )
        });
        let start = body.len();
        body.extend_from_slice(&2u32.to_le_bytes());
        if segwit {
            body.extend_from_slice(&[0, 1]);
        }
        let core_start = body.len();
        write_varint(body, spent.len() as u64);
        for c in spent.iter() {
            self.write_input(body, c);
        }
        let op_return = self.rng.random_bool(0.02);
        write_varint(body, (n_out + usize::from(op_return)) as u64);
        let fee = (200 + self.rng.random_range(0..2000u64)).min(sum / 2);
        let mut left = sum - fee;
        created.clear();
        for k in 0..n_out {
            let value = if k + 1 == n_out {
                left
            } else {
                let share = left / (n_out - k) as u64;
                let v = self
                    .rng
                    .random_range(share / 2..=share + share / 2)
                    .min(left);
                left -= v;
                v
            };
            let script = self.output_script();
            body.extend_from_slice(&value.to_le_bytes());
            body.push(script_len(kind_of(script)) as u8);
            write_script(body, script);
            created.push(Coin {
                txid: [0; 32],
                vout: k as u32,
                value,
                script,
                height,
            });
        }
        if op_return {
            body.extend_from_slice(&0u64.to_le_bytes());
            body.extend_from_slice(&[10, 0x6a, 8]);
            self.noise.push(body, &mut self.rng, 8);
            self.summary.op_returns += 1;
        }
        let core_end = body.len();
        if segwit {
            self.summary.segwit_txs += 1;
            for c in spent.iter() {
                self.write_witness(body, kind_of(c.script));
            }
        }
        body.extend_from_slice(&0u32.to_le_bytes());
        let mut engine = sha256d::Hash::engine();
        engine.input(&body[start..start + 4]);
        engine.input(&body[core_start..core_end]);
        engine.input(&[0, 0, 0, 0]);
        let txid = sha256d::Hash::from_engine(engine).to_byte_array();
        for c in spent.iter() {
            self.touch(c.script, c.value, false);
        }
        self.summary.inputs += spent.len() as u64;
        for c in created.iter_mut() {
            c.txid = txid;
            let c = *c;
            self.touch(c.script, c.value, true);
            self.summary.outputs += 1;
            if c.script != HOARD {
                self.add_coin(c);
            }
        }
        Some(txid)
    }

    fn write_coinbase(&mut self, body: &mut Vec<u8>, height: u32) -> [u8; 32] {
        self.tx_seq += 1;
        let pool = POOL_BASE + ((self.rng.random::<f64>().powi(2)) * POOLS as f64) as u64;
        let value = 6_2500_0000u64;
        let start = body.len();
        body.extend_from_slice(&1u32.to_le_bytes());
        body.push(1);
        body.extend_from_slice(&[0u8; 32]);
        body.extend_from_slice(&0xffff_ffffu32.to_le_bytes());
        let mut sig = Vec::with_capacity(16);
        sig.push(4);
        sig.extend_from_slice(&height.to_le_bytes());
        sig.push(8);
        sig.extend_from_slice(&self.params.seed.to_le_bytes());
        write_varint(body, sig.len() as u64);
        body.extend_from_slice(&sig);
        body.extend_from_slice(&0xffff_ffffu32.to_le_bytes());
        body.push(1);
        body.extend_from_slice(&value.to_le_bytes());
        body.push(script_len(kind_of(pool)) as u8);
        write_script(body, pool);
        body.extend_from_slice(&0u32.to_le_bytes());
        let txid = Hash32::sha256d(&body[start..]).0;
        self.touch(pool, value, true);
        self.summary.outputs += 1;
        self.immature.push_back(Coin {
            txid,
            vout: 0,
            value,
            script: pool,
            height,
        });
        txid
    }

    /// Writes the whole chain into `dir` (block files, `summary.json`, `truth.json`),
    /// calling `progress` every 10,000 blocks.
    pub fn write(mut self, dir: &Path, mut progress: impl FnMut(&Summary)) -> Result<Summary> {
        let started = std::time::Instant::now();
        let mut files = FileWriter::new(dir, self.params.xor, self.params.file_size)?;
        let genesis = regtest_genesis_block();
        files.write_block(&genesis, &[])?;
        let mut prev = Hash32::sha256d(&genesis[..80]);
        anyhow::ensure!(prev.to_display_hex() == REGTEST_GENESIS, "genesis hash");
        let mut body = Vec::with_capacity(1 << 20);
        let mut txids: Vec<Txid> = Vec::new();
        let (mut spent, mut created) = (Vec::new(), Vec::new());
        let mut head = Vec::with_capacity(89);
        self.summary.txs = 1;
        for height in 1..=self.params.blocks {
            while self
                .immature
                .front()
                .is_some_and(|c| c.height + COINBASE_MATURITY <= height)
            {
                let mut c = self.immature.pop_front().expect("front");
                c.height = height;
                self.add_coin(c);
            }
            body.clear();
            txids.clear();
            txids.push(Hash32(self.write_coinbase(&mut body, height)));
            let want = self.txs_for(height);
            for _ in 0..want {
                let simple = want == BIG_BLOCK_TXS;
                match self.write_tx(&mut body, height, simple, &mut spent, &mut created) {
                    Some(txid) => txids.push(Hash32(txid)),
                    None => break,
                }
            }
            let root = merkle_root(txids.iter().copied());
            let (header, hash) = seal_header(prev, GENESIS_TIME + 600 * height, root);
            head.clear();
            head.extend_from_slice(&header);
            write_varint(&mut head, txids.len() as u64);
            files.write_block(&head, &body)?;
            prev = hash;
            let s = &mut self.summary;
            s.blocks = height;
            s.txs += txids.len() as u64;
            s.block_bytes += (head.len() + body.len()) as u64;
            s.largest_block_txs = s.largest_block_txs.max(txids.len() as u32);
            if want == BIG_BLOCK_TXS {
                s.big_blocks.push(height);
            }
            if height % 10_000 == 0 || height == self.params.blocks {
                s.txs_at_height.push((height, s.txs));
                s.seconds = started.elapsed().as_secs_f64();
                progress(s);
            }
            // Drop empty buckets from the old end.
            while self.buckets.len() > 1 && self.buckets.front().is_some_and(Vec::is_empty) {
                self.buckets.pop_front();
                self.first_bucket += 1;
            }
        }
        files.finish_file()?;
        let s = &mut self.summary;
        s.files = files.number + 1;
        s.unspent = self.buckets.iter().map(|b| b.len() as u64).sum::<u64>()
            + self.immature.len() as u64
            + self.truth.get(&HOARD).map_or(0, |t| t.utxos);
        s.seconds = started.elapsed().as_secs_f64();
        s.block_bytes += genesis.len() as u64;
        let mut truth: Vec<(u64, ScriptTruth)> = self
            .truth
            .iter()
            .map(|(&id, t)| {
                let script = script_bytes(id);
                let role = match id {
                    0..=2 => "heavy",
                    HOARD => "hoard",
                    _ if id < FIRST_REUSED => "pool",
                    _ => "sampled",
                };
                (
                    id,
                    ScriptTruth {
                        role,
                        kind: kind_of(id).name(),
                        scripthash: ScriptHash::of_script(&script).to_hex(),
                        script: const_hex::encode(&script),
                        history: t.history,
                        balance: t.balance,
                        utxos: t.utxos,
                    },
                )
            })
            .filter(|(_, t)| t.history > 0)
            .collect();
        truth.sort_by_key(|(id, _)| *id);
        let truth: Vec<ScriptTruth> = truth.into_iter().map(|(_, t)| t).collect();
        std::fs::write(dir.join("truth.json"), serde_json::to_vec_pretty(&truth)?)?;
        std::fs::write(
            dir.join("summary.json"),
            serde_json::to_vec_pretty(&self.summary)?,
        )?;
        Ok(self.summary)
    }
}

/// Reads `truth.json` written by [`BlockGen::write`].
pub fn read_truth(dir: &Path) -> Result<Vec<serde_json::Value>> {
    let raw = std::fs::read(dir.join("truth.json"))?;
    Ok(serde_json::from_slice(&raw)?)
}

/// What [`check_truth`] found.
#[derive(Clone, Debug, Default)]
pub struct TruthReport {
    /// Scripts checked.
    pub scripts: usize,
    /// Histories compared entry count for entry count.
    pub histories_compared: usize,
    /// Histories over the server's limit, answered with error 10001 as they should be.
    pub histories_too_large: usize,
    /// UTXO lists compared.
    pub utxo_lists_compared: usize,
    /// UTXO lists over the server's answer size, refused with an error.
    pub utxo_lists_refused: usize,
    /// Mismatches, described.
    pub mismatches: Vec<String>,
}

/// Asks a server (an index of a chain written by [`BlockGen`], on `127.0.0.1:port`) about
/// every sampled script and compares its answers with the generator's truth: the confirmed
/// balance always; the history's length, unless the history is longer than `max_history`
/// (then error 10001 is expected); the unspent outputs' count, unless the server refuses
/// the list as too large to send.
pub fn check_truth(
    port: u16,
    truth: &[serde_json::Value],
    max_history: u64,
) -> Result<TruthReport> {
    use serde_json::json;
    let mut conn = crate::rawclient::RawConn::connect(port)?;
    conn.result("server.version", json!(["truthcheck", "1.4"]))?;
    let mut report = TruthReport::default();
    for t in truth {
        let sh = t["scripthash"].as_str().context("scripthash")?;
        let history = t["history"].as_u64().context("history")?;
        let utxos = t["utxos"].as_u64().context("utxos")?;
        let balance = t["balance"].as_u64().context("balance")?;
        let who = format!("{} {} {sh}", t["role"], t["kind"]);
        report.scripts += 1;
        let b = conn.result("blockchain.scripthash.get_balance", json!([sh]))?;
        if b["confirmed"].as_u64() != Some(balance) || b["unconfirmed"].as_i64() != Some(0) {
            report
                .mismatches
                .push(format!("{who}: balance {b}, truth {balance}"));
        }
        let h = conn.call("blockchain.scripthash.get_history", json!([sh]))?;
        if history > max_history {
            if h["error"]["code"].as_i64() == Some(10001) {
                report.histories_too_large += 1;
            } else {
                report
                    .mismatches
                    .push(format!("{who}: history of {history} not refused"));
            }
        } else {
            match h["result"].as_array() {
                Some(list) if list.len() as u64 == history => report.histories_compared += 1,
                _ => report.mismatches.push(format!(
                    "{who}: history {} entries, truth {history}",
                    h["result"].as_array().map_or(-1, |l| l.len() as i64)
                )),
            }
        }
        let u = conn.call("blockchain.scripthash.listunspent", json!([sh]))?;
        match u["result"].as_array() {
            Some(list) if list.len() as u64 == utxos => report.utxo_lists_compared += 1,
            Some(list) => report.mismatches.push(format!(
                "{who}: {} unspent outputs, truth {utxos}",
                list.len()
            )),
            None if utxos > 10_000 && u["error"]["code"].is_i64() => report.utxo_lists_refused += 1,
            None => report.mismatches.push(format!("{who}: listunspent {u}")),
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use electrumx_core::parse::ParsedBlock;

    #[test]
    fn genesis_is_regtest_genesis() {
        let g = regtest_genesis_block();
        assert_eq!(Hash32::sha256d(&g[..80]).to_display_hex(), REGTEST_GENESIS);
    }

    #[tokio::test]
    async fn obfuscated_files_read_back_through_the_offline_reader() {
        use electrumx_core::daemon::{BlockFileDaemon, Daemon};
        let dir = tempfile::tempdir().unwrap();
        let params = ShapeParams {
            blocks: 300,
            txs: 20_000,
            big_blocks: 1,
            reused_scripts: 1000,
            file_size: 1 << 20,
            xor: Some([1, 2, 3, 4, 5, 6, 7, 0x80]),
            ..ShapeParams::default()
        };
        let s = BlockGen::new(params).write(dir.path(), |_| {}).unwrap();
        let genesis = Hash32::from_display_hex(REGTEST_GENESIS).unwrap();
        let d = BlockFileDaemon::open(dir.path(), genesis).unwrap();
        assert_eq!(d.height().await.unwrap(), s.blocks);
        let hashes = d.block_hashes(0, s.blocks + 1).await.unwrap();
        for (h, raw) in d.raw_blocks(&hashes).await.unwrap().into_iter().enumerate() {
            let b = <bitcoin::Block as bitcoin::consensus::Decodable>::consensus_decode(
                &mut raw.as_slice(),
            )
            .unwrap_or_else(|e| panic!("block {h}: {e}"));
            assert_eq!(b.block_hash().to_string(), hashes[h].to_display_hex());
        }
    }

    #[test]
    fn script_lengths_match() {
        for id in 0..2000u64 {
            assert_eq!(script_bytes(id).len(), script_len(kind_of(id)), "id {id}");
        }
    }

    #[test]
    fn blocks_parse_and_txids_leave_out_witnesses() {
        let dir = tempfile::tempdir().unwrap();
        let params = ShapeParams {
            blocks: 400,
            txs: 20_000,
            big_blocks: 0,
            reused_scripts: 1000,
            file_size: 1 << 20,
            ..ShapeParams::default()
        };
        let s = BlockGen::new(params).write(dir.path(), |_| {}).unwrap();
        assert!(s.files > 1, "{s:?}");
        assert!(s.segwit_txs > 0);
        let mut blocks = 0;
        for f in 0..s.files {
            let data = std::fs::read(dir.path().join(format!("blk{f:05}.dat"))).unwrap();
            let mut pos = 0;
            while pos < data.len() {
                assert_eq!(data[pos..pos + 4], MAGIC);
                let len = u32::from_le_bytes(data[pos + 4..pos + 8].try_into().unwrap()) as usize;
                let raw = data[pos + 8..pos + 8 + len].to_vec();
                // rust-bitcoin reads every block, with the same txids as our parser (which
                // leaves witnesses out and checks the merkle root).
                let theirs = <bitcoin::Block as bitcoin::consensus::Decodable>::consensus_decode(
                    &mut raw.as_slice(),
                )
                .unwrap_or_else(|e| panic!("block {blocks}: {e}"));
                let b = ParsedBlock::parse(raw).expect("parses");
                for (ours, theirs) in b.txs.iter().zip(&theirs.txdata) {
                    assert_eq!(
                        ours.txid.to_display_hex(),
                        theirs.compute_txid().to_string()
                    );
                }
                blocks += 1;
                pos += 8 + len;
            }
        }
        assert_eq!(blocks, s.blocks + 1);
    }
}
