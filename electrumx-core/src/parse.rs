//! A zero-copy parser for raw blocks: it finds every transaction's txid, inputs and
//! outputs without building per-transaction objects, so the sync hot loop allocates
//! a few vectors per block rather than several per transaction. Segwit-aware: the
//! witness is skipped and the txid hashes the stripped serialization.

use crate::error::ParseError;
use crate::hash::{BlockHash, Hash32, Txid};
use bitcoin::hashes::{Hash, HashEngine, sha256d};
use std::ops::Range;

/// Size of a block header.
pub const HEADER_LEN: usize = 80;

/// One input: the outpoint it spends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InputRef {
    /// Funding transaction id.
    pub prev_txid: Txid,
    /// Funding output index.
    pub prev_vout: u32,
}

/// One output: value and the byte range of its script inside the raw block.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutputRef {
    /// Value in satoshis.
    pub value: u64,
    /// Where the script lies in [`ParsedBlock::raw`].
    pub script: Range<usize>,
}

/// One transaction: its id and the ranges of its inputs and outputs in the block's flat lists.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TxRef {
    /// Transaction id.
    pub txid: Txid,
    /// Indexes into [`ParsedBlock::inputs`] (empty for a coinbase).
    pub inputs: Range<usize>,
    /// Indexes into [`ParsedBlock::outputs`].
    pub outputs: Range<usize>,
    /// Byte range of the whole transaction in [`ParsedBlock::raw`].
    pub bytes: Range<usize>,
    /// Bytes of segwit data (marker, flag and witnesses); 0 for a legacy transaction.
    pub witness_len: usize,
}

impl TxRef {
    /// Virtual size (weight / 4, rounded up), the size fee rates are quoted in.
    pub fn vsize(&self) -> usize {
        let total = self.bytes.len();
        let stripped = total - self.witness_len;
        (stripped * 3 + total).div_ceil(4)
    }
}

/// A parsed block: the raw bytes plus flat lists of transactions, inputs and outputs.
#[derive(Clone, Debug, Default)]
pub struct ParsedBlock {
    /// The block's raw serialization.
    pub raw: Vec<u8>,
    /// Block hash.
    pub hash: BlockHash,
    /// Transactions in block order.
    pub txs: Vec<TxRef>,
    /// Inputs of all non-coinbase transactions, in order.
    pub inputs: Vec<InputRef>,
    /// Outputs of all transactions, in order.
    pub outputs: Vec<OutputRef>,
}

impl ParsedBlock {
    /// Parses a raw block. Checks structure and the merkle root.
    pub fn parse(raw: Vec<u8>) -> Result<ParsedBlock, ParseError> {
        let mut block = ParsedBlock {
            raw,
            ..Default::default()
        };
        block.parse_in_place()?;
        Ok(block)
    }

    fn parse_in_place(&mut self) -> Result<(), ParseError> {
        let raw = &self.raw;
        let mut r = Reader { data: raw, pos: 0 };
        let header = r.take(HEADER_LEN)?;
        self.hash = Hash32::sha256d(header);
        let n_tx = r.compact_size()?;
        // Each transaction takes at least 60 bytes.
        if n_tx == 0 || n_tx > (raw.len() / 60 + 1) as u64 {
            return Err(ParseError::Implausible {
                what: "transaction count",
                value: n_tx,
                offset: r.pos,
            });
        }
        self.txs.reserve(n_tx as usize);
        for _ in 0..n_tx {
            let tx = parse_tx(
                &mut r,
                &mut self.inputs,
                &mut self.outputs,
                self.txs.is_empty(),
            )?;
            self.txs.push(tx);
        }
        if r.pos != raw.len() {
            return Err(ParseError::Trailing(raw.len() - r.pos));
        }
        let root = merkle_root(self.txs.iter().map(|t| t.txid));
        if root.0[..] != raw[36..68] {
            return Err(ParseError::MerkleMismatch);
        }
        Ok(())
    }

    /// The 80-byte header.
    pub fn header(&self) -> &[u8; HEADER_LEN] {
        self.raw[..HEADER_LEN]
            .try_into()
            .expect("parsed block has a header")
    }

    /// The previous block's hash, from the header.
    pub fn prev_hash(&self) -> BlockHash {
        prev_hash_of(self.header())
    }

    /// The script bytes of an output.
    pub fn script(&self, out: &OutputRef) -> &[u8] {
        &self.raw[out.script.clone()]
    }
}

/// The previous block hash field of a header.
pub fn prev_hash_of(header: &[u8; HEADER_LEN]) -> BlockHash {
    let mut h = [0u8; 32];
    h.copy_from_slice(&header[4..36]);
    Hash32(h)
}

/// The merkle root of a list of txids (Bitcoin's rule: duplicate the last of an odd level).
pub fn merkle_root(txids: impl IntoIterator<Item = Txid>) -> Hash32 {
    let mut level: Vec<Hash32> = txids.into_iter().collect();
    if level.is_empty() {
        return Hash32::default();
    }
    while level.len() > 1 {
        if level.len() % 2 == 1 {
            level.push(*level.last().expect("non-empty"));
        }
        level = level
            .chunks_exact(2)
            .map(|pair| {
                let mut buf = [0u8; 64];
                buf[..32].copy_from_slice(&pair[0].0);
                buf[32..].copy_from_slice(&pair[1].0);
                Hash32::sha256d(&buf)
            })
            .collect();
    }
    level[0]
}

/// True if an output script can never be spent (starts with OP_RETURN), so it gets no UTXO
/// or history entry (as in ElectrumX).
pub fn is_unspendable(script: &[u8]) -> bool {
    script.first() == Some(&0x6a)
}

fn parse_tx(
    r: &mut Reader<'_>,
    inputs: &mut Vec<InputRef>,
    outputs: &mut Vec<OutputRef>,
    is_coinbase: bool,
) -> Result<TxRef, ParseError> {
    let start = r.pos;
    let mut engine = sha256d::Hash::engine();
    let version = r.take(4)?;
    engine.input(version);
    let mut segwit = false;
    // Segwit marker (0x00) and flag (0x01): an empty input list is otherwise invalid.
    if r.peek()? == 0 {
        let flag = r.peek_at(1)?;
        if flag != 1 {
            return Err(ParseError::Implausible {
                what: "segwit flag",
                value: flag as u64,
                offset: r.pos + 1,
            });
        }
        r.pos += 2;
        segwit = true;
    }
    let body_start = r.pos;
    let n_in = r.compact_size()?;
    r.check_count("input count", n_in, 41)?;
    let first_input = inputs.len();
    for _ in 0..n_in {
        let prev = r.take(32)?;
        let vout = r.u32()?;
        let script_len = r.compact_size()?;
        r.check_count("scriptSig length", script_len, 1)?;
        r.take(script_len as usize)?;
        r.take(4)?; // sequence
        if !is_coinbase {
            let mut h = [0u8; 32];
            h.copy_from_slice(prev);
            inputs.push(InputRef {
                prev_txid: Hash32(h),
                prev_vout: vout,
            });
        }
    }
    let n_out = r.compact_size()?;
    r.check_count("output count", n_out, 9)?;
    let first_output = outputs.len();
    for _ in 0..n_out {
        let value = r.u64()?;
        let script_len = r.compact_size()?;
        r.check_count("script length", script_len, 1)?;
        let script_start = r.pos;
        r.take(script_len as usize)?;
        outputs.push(OutputRef {
            value,
            script: script_start..r.pos,
        });
    }
    engine.input(&r.data[body_start..r.pos]);
    let witness_start = r.pos;
    if segwit {
        for _ in 0..n_in {
            let n_items = r.compact_size()?;
            r.check_count("witness item count", n_items, 1)?;
            for _ in 0..n_items {
                let len = r.compact_size()?;
                r.check_count("witness item length", len, 1)?;
                r.take(len as usize)?;
            }
        }
    }
    let witness_len = if segwit { r.pos - witness_start + 2 } else { 0 };
    engine.input(r.take(4)?); // lock time
    let txid = Hash32(sha256d::Hash::from_engine(engine).to_byte_array());
    Ok(TxRef {
        txid,
        inputs: first_input..inputs.len(),
        outputs: first_output..outputs.len(),
        bytes: start..r.pos,
        witness_len,
    })
}

/// Parses one raw transaction on its own (for mempool transactions).
pub fn parse_transaction(
    raw: &[u8],
    inputs: &mut Vec<InputRef>,
    outputs: &mut Vec<OutputRef>,
) -> Result<TxRef, ParseError> {
    let mut r = Reader { data: raw, pos: 0 };
    let tx = parse_tx(&mut r, inputs, outputs, false)?;
    if r.pos != raw.len() {
        return Err(ParseError::Trailing(raw.len() - r.pos));
    }
    Ok(tx)
}

struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], ParseError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.data.len())
            .ok_or(ParseError::Truncated(self.pos))?;
        let s = &self.data[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn peek(&self) -> Result<u8, ParseError> {
        self.peek_at(0)
    }

    fn peek_at(&self, off: usize) -> Result<u8, ParseError> {
        self.data
            .get(self.pos + off)
            .copied()
            .ok_or(ParseError::Truncated(self.pos))
    }

    fn u32(&mut self) -> Result<u32, ParseError> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }

    fn u64(&mut self) -> Result<u64, ParseError> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }

    fn compact_size(&mut self) -> Result<u64, ParseError> {
        let first = self.take(1)?[0];
        Ok(match first {
            0xfd => u16::from_le_bytes(self.take(2)?.try_into().expect("2 bytes")) as u64,
            0xfe => self.u32()? as u64,
            0xff => self.u64()?,
            n => n as u64,
        })
    }

    /// Rejects a count that could not fit in the remaining bytes at `min_size` bytes each.
    fn check_count(&self, what: &'static str, n: u64, min_size: u64) -> Result<(), ParseError> {
        let remaining = (self.data.len() - self.pos) as u64;
        if n.saturating_mul(min_size) > remaining {
            return Err(ParseError::Implausible {
                what,
                value: n,
                offset: self.pos,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncated_and_garbage_input_is_an_error_not_a_panic() {
        assert!(ParsedBlock::parse(vec![]).is_err());
        assert!(ParsedBlock::parse(vec![0u8; 80]).is_err());
        let mut b = vec![0u8; 81];
        b[80] = 0xff;
        assert!(ParsedBlock::parse(b).is_err());
        for len in 0..200 {
            let data: Vec<u8> = (0..len).map(|i| (i * 37 % 251) as u8).collect();
            let _ = ParsedBlock::parse(data);
        }
    }

    #[test]
    fn unspendable_detects_op_return() {
        assert!(is_unspendable(&[0x6a, 0x01, 0x00]));
        assert!(!is_unspendable(&[0x51]));
        assert!(!is_unspendable(&[]));
    }
}
