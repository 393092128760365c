//! Key and value encodings of every column family. All integers in keys are big-endian so
//! that RocksDB's byte order is numeric order: a prefix scan over a script's keys yields its
//! history in chain order.

use crate::hash::{HASHX_LEN, HashX, Txid};

/// Width of a transaction number in keys (40 bits, as ElectrumX: over a trillion txs).
pub const TXNUM_LEN: usize = 5;
/// Bytes of a txid kept in the `txid_index` and `outpoints` keys; collisions are resolved
/// against the full txid in `txids`.
pub const TXID_PREFIX_LEN: usize = 6;

/// Encodes a tx number as 5 big-endian bytes.
pub fn txnum_bytes(n: u64) -> [u8; TXNUM_LEN] {
    let b = n.to_be_bytes();
    [b[3], b[4], b[5], b[6], b[7]]
}

/// Decodes 5 big-endian bytes.
pub fn txnum_from(b: &[u8]) -> u64 {
    let mut x = [0u8; 8];
    x[3..].copy_from_slice(&b[..TXNUM_LEN]);
    u64::from_be_bytes(x)
}

/// Txids under one `txids` key: 4 KiB values, and 128 times fewer keys than transactions
/// for the sync to write.
pub const TXIDS_PER_CHUNK: u64 = 128;

/// `txids`: chunk number (txnum / [`TXIDS_PER_CHUNK`]) → the chunk's txids, concatenated in
/// txnum order. The last chunk may be partial; it is rewritten whole as it fills.
pub fn txids_chunk_key(txnum: u64) -> [u8; TXNUM_LEN] {
    txnum_bytes(txnum / TXIDS_PER_CHUNK)
}

/// The txid of `txnum` in the value of its chunk, if the chunk holds it.
pub fn txid_in_chunk(chunk: &[u8], txnum: u64) -> Option<Txid> {
    let at = (txnum % TXIDS_PER_CHUNK) as usize * 32;
    let bytes: [u8; 32] = chunk.get(at..at + 32)?.try_into().ok()?;
    Some(crate::hash::Hash32(bytes))
}

/// `txid_index`: txid prefix ‖ txnum → ().
pub fn txid_index_key(txid: &Txid, txnum: u64) -> [u8; TXID_PREFIX_LEN + TXNUM_LEN] {
    let mut k = [0u8; TXID_PREFIX_LEN + TXNUM_LEN];
    k[..TXID_PREFIX_LEN].copy_from_slice(&txid.0[..TXID_PREFIX_LEN]);
    k[TXID_PREFIX_LEN..].copy_from_slice(&txnum_bytes(txnum));
    k
}

/// Length of the `outpoints` prefix searched when an input is spent.
pub const OUTPOINT_PREFIX_LEN: usize = TXID_PREFIX_LEN + 4;
/// Length of an `outpoints` key.
pub const OUTPOINT_KEY_LEN: usize = OUTPOINT_PREFIX_LEN + TXNUM_LEN;

/// `outpoints` search prefix: txid prefix ‖ vout.
pub fn outpoint_prefix(txid: &Txid, vout: u32) -> [u8; OUTPOINT_PREFIX_LEN] {
    let mut k = [0u8; OUTPOINT_PREFIX_LEN];
    k[..TXID_PREFIX_LEN].copy_from_slice(&txid.0[..TXID_PREFIX_LEN]);
    k[TXID_PREFIX_LEN..].copy_from_slice(&vout.to_be_bytes());
    k
}

/// `outpoints`: txid prefix ‖ vout ‖ txnum → hashX ‖ value (unspent outputs only).
pub fn outpoint_key(txid_prefix: &[u8], vout: u32, txnum: u64) -> [u8; OUTPOINT_KEY_LEN] {
    let mut k = [0u8; OUTPOINT_KEY_LEN];
    k[..TXID_PREFIX_LEN].copy_from_slice(&txid_prefix[..TXID_PREFIX_LEN]);
    k[TXID_PREFIX_LEN..OUTPOINT_PREFIX_LEN].copy_from_slice(&vout.to_be_bytes());
    k[OUTPOINT_PREFIX_LEN..].copy_from_slice(&txnum_bytes(txnum));
    k
}

/// Value of an `outpoints` entry.
pub fn outpoint_value(hashx: &HashX, value: u64) -> [u8; HASHX_LEN + 8] {
    let mut v = [0u8; HASHX_LEN + 8];
    v[..HASHX_LEN].copy_from_slice(&hashx.0);
    v[HASHX_LEN..].copy_from_slice(&value.to_le_bytes());
    v
}

/// Decodes an `outpoints` value.
pub fn decode_outpoint_value(v: &[u8]) -> Option<(HashX, u64)> {
    if v.len() != HASHX_LEN + 8 {
        return None;
    }
    let mut h = [0u8; HASHX_LEN];
    h.copy_from_slice(&v[..HASHX_LEN]);
    Some((
        HashX(h),
        u64::from_le_bytes(v[HASHX_LEN..].try_into().ok()?),
    ))
}

/// Length of a `utxos` key.
pub const UTXO_KEY_LEN: usize = HASHX_LEN + TXNUM_LEN + 4;

/// `utxos`: hashX ‖ txnum ‖ vout → value (LE u64).
pub fn utxo_key(hashx: &HashX, txnum: u64, vout: u32) -> [u8; UTXO_KEY_LEN] {
    let mut k = [0u8; UTXO_KEY_LEN];
    k[..HASHX_LEN].copy_from_slice(&hashx.0);
    k[HASHX_LEN..HASHX_LEN + TXNUM_LEN].copy_from_slice(&txnum_bytes(txnum));
    k[HASHX_LEN + TXNUM_LEN..].copy_from_slice(&vout.to_be_bytes());
    k
}

/// Most tx numbers in one `history` group; a script with more entries in one flush gets
/// several keys (bounded values, and pages of a long history stay cheap to skip to).
pub const HISTORY_GROUP_MAX: usize = 1000;

/// `history`: hashX ‖ first txnum → the group's other txnums, each as the LEB128 varint of
/// its distance from the one before: the script's transactions written by one flush (a
/// group; one entry has an empty value). Groups of a script cover disjoint txnum ranges, so
/// key order is chain order.
pub fn history_key(hashx: &HashX, txnum: u64) -> [u8; HASHX_LEN + TXNUM_LEN] {
    let mut k = [0u8; HASHX_LEN + TXNUM_LEN];
    k[..HASHX_LEN].copy_from_slice(&hashx.0);
    k[HASHX_LEN..].copy_from_slice(&txnum_bytes(txnum));
    k
}

/// `spenders`: funding txnum ‖ vout → spending txnum.
pub fn spender_key(txnum: u64, vout: u32) -> [u8; TXNUM_LEN + 4] {
    let mut k = [0u8; TXNUM_LEN + 4];
    k[..TXNUM_LEN].copy_from_slice(&txnum_bytes(txnum));
    k[TXNUM_LEN..].copy_from_slice(&vout.to_be_bytes());
    k
}

/// Appends the tx numbers of the `history` group whose key holds `first` to `out`; false
/// (with `out` in an unspecified state) if the value is malformed.
pub fn decode_history_group(first: u64, value: &[u8], out: &mut Vec<u64>) -> bool {
    out.push(first);
    let mut prev = first;
    let mut delta = 0u64;
    let mut shift = 0u32;
    for &b in value {
        if shift > 56 {
            return false;
        }
        delta |= u64::from(b & 0x7f) << shift;
        if b & 0x80 != 0 {
            shift += 7;
            continue;
        }
        match prev.checked_add(delta) {
            Some(n) if delta > 0 => {
                out.push(n);
                prev = n;
            }
            _ => return false,
        }
        delta = 0;
        shift = 0;
    }
    shift == 0
}

/// Replaces `out` with the tx numbers of the `history` entry (`key`, `value`); false if the
/// key or the value is malformed.
pub fn read_history_group(key: &[u8], value: &[u8], out: &mut Vec<u64>) -> bool {
    if key.len() != HASHX_LEN + TXNUM_LEN {
        return false;
    }
    out.clear();
    decode_history_group(txnum_from(&key[HASHX_LEN..]), value, out)
}

/// Appends the `history` group encoding of `txnum`, which follows `prev` in the group.
pub fn encode_history_next(out: &mut Vec<u8>, prev: u64, txnum: u64) {
    debug_assert!(txnum > prev);
    let mut d = txnum - prev;
    while d >= 0x80 {
        out.push((d as u8 & 0x7f) | 0x80);
        d >>= 7;
    }
    out.push(d as u8);
}

/// `headers` and `undo`: height.
pub fn height_key(height: u32) -> [u8; 4] {
    height.to_be_bytes()
}

/// An output created by a block, as its undo record lists it. Its txid is found from the
/// tx number in `txids`, and its script from `outpoints` (or from the spent outputs of the
/// blocks taken back with it), when the block is taken back: records stay small.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CreatedOutput {
    /// Output index.
    pub vout: u32,
    /// Funding tx number.
    pub txnum: u64,
}

/// An output spent by a block, with all it takes to restore it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SpentOutput {
    /// The output as it was created.
    pub created: CreatedOutput,
    /// Owner script.
    pub hashx: HashX,
    /// Its value.
    pub value: u64,
    /// The spending tx number.
    pub spender_txnum: u64,
}

const CREATED_LEN: usize = 4 + TXNUM_LEN;
const SPENT_LEN: usize = CREATED_LEN + HASHX_LEN + 8 + TXNUM_LEN;

/// Undo information of one block: what to delete and what to restore to take it back.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UndoRecord {
    /// Outputs the block created (spendable ones).
    pub created: Vec<CreatedOutput>,
    /// Outputs the block spent.
    pub spent: Vec<SpentOutput>,
}

impl UndoRecord {
    /// Serializes the record.
    pub fn encode(&self) -> Vec<u8> {
        let mut v =
            Vec::with_capacity(8 + self.created.len() * CREATED_LEN + self.spent.len() * SPENT_LEN);
        v.extend_from_slice(&(self.created.len() as u32).to_le_bytes());
        for c in &self.created {
            encode_created(&mut v, c);
        }
        v.extend_from_slice(&(self.spent.len() as u32).to_le_bytes());
        for s in &self.spent {
            encode_created(&mut v, &s.created);
            v.extend_from_slice(&s.hashx.0);
            v.extend_from_slice(&s.value.to_le_bytes());
            v.extend_from_slice(&txnum_bytes(s.spender_txnum));
        }
        v
    }

    /// Parses a record; `None` if it is malformed.
    pub fn decode(mut b: &[u8]) -> Option<UndoRecord> {
        let mut rec = UndoRecord::default();
        let n = read_u32(&mut b)? as usize;
        if b.len() < n.checked_mul(CREATED_LEN)? {
            return None;
        }
        for _ in 0..n {
            rec.created.push(decode_created(&mut b)?);
        }
        let n = read_u32(&mut b)? as usize;
        if b.len() != n.checked_mul(SPENT_LEN)? {
            return None;
        }
        for _ in 0..n {
            let created = decode_created(&mut b)?;
            let mut h = [0u8; HASHX_LEN];
            h.copy_from_slice(b.get(..HASHX_LEN)?);
            b = &b[HASHX_LEN..];
            let value = u64::from_le_bytes(b.get(..8)?.try_into().ok()?);
            let spender_txnum = txnum_from(b.get(8..8 + TXNUM_LEN)?);
            b = &b[8 + TXNUM_LEN..];
            rec.spent.push(SpentOutput {
                created,
                hashx: HashX(h),
                value,
                spender_txnum,
            });
        }
        Some(rec)
    }
}

fn read_u32(b: &mut &[u8]) -> Option<u32> {
    let v = u32::from_le_bytes(b.get(..4)?.try_into().ok()?);
    *b = &b[4..];
    Some(v)
}

fn encode_created(v: &mut Vec<u8>, c: &CreatedOutput) {
    v.extend_from_slice(&c.vout.to_be_bytes());
    v.extend_from_slice(&txnum_bytes(c.txnum));
}

fn decode_created(b: &mut &[u8]) -> Option<CreatedOutput> {
    let s = b.get(..CREATED_LEN)?;
    let vout = u32::from_be_bytes(s[..4].try_into().ok()?);
    let txnum = txnum_from(&s[4..]);
    *b = &b[CREATED_LEN..];
    Some(CreatedOutput { vout, txnum })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn txnum_round_trip_and_order() {
        for n in [0u64, 1, 255, 256, 1 << 32, (1 << 40) - 1] {
            assert_eq!(txnum_from(&txnum_bytes(n)), n);
        }
        assert!(txnum_bytes(256) > txnum_bytes(255));
    }

    #[test]
    fn txids_chunks_hold_128_consecutive_txnums() {
        assert_eq!(txids_chunk_key(0), txids_chunk_key(127));
        assert_ne!(txids_chunk_key(127), txids_chunk_key(128));
        let chunk: Vec<u8> = (0u8..3).flat_map(|i| [i; 32]).collect();
        assert_eq!(
            txid_in_chunk(&chunk, 128 + 2),
            Some(crate::hash::Hash32([2; 32]))
        );
        assert_eq!(
            txid_in_chunk(&chunk, 128 + 3),
            None,
            "beyond a partial chunk"
        );
    }

    #[test]
    fn history_groups_round_trip() {
        let txnums = [3u64, 4, 130, 1 << 33, (1 << 40) - 1];
        let mut v = Vec::new();
        for w in txnums.windows(2) {
            encode_history_next(&mut v, w[0], w[1]);
        }
        let mut out = Vec::new();
        assert!(decode_history_group(3, &v, &mut out));
        assert_eq!(out, txnums);
        out.clear();
        assert!(decode_history_group(9, &[], &mut out), "one entry");
        assert_eq!(out, [9]);
        let key = history_key(&HashX([1; 11]), 3);
        assert!(read_history_group(&key, &v, &mut out));
        assert_eq!(
            out, txnums,
            "read from the key's txnum, replacing what was there"
        );
        assert!(!read_history_group(&key[..15], &v, &mut out), "short key");
        assert!(
            !decode_history_group(3, &v[..v.len() - 1], &mut Vec::new()),
            "cut varint"
        );
        assert!(
            !decode_history_group(3, &[0], &mut Vec::new()),
            "zero distance"
        );
        assert!(
            !decode_history_group(3, &[0xff; 12], &mut Vec::new()),
            "overlong"
        );
    }

    #[test]
    fn undo_round_trip() {
        let c = CreatedOutput { vout: 7, txnum: 99 };
        let rec = UndoRecord {
            created: vec![c, CreatedOutput { vout: 0, ..c }],
            spent: vec![SpentOutput {
                created: c,
                hashx: HashX([3; 11]),
                value: 5_000_000_000,
                spender_txnum: 1234,
            }],
        };
        let enc = rec.encode();
        assert_eq!(UndoRecord::decode(&enc), Some(rec));
        assert_eq!(UndoRecord::decode(&enc[..enc.len() - 1]), None);
        assert_eq!(UndoRecord::decode(&[0xff; 3]), None);
    }
}
