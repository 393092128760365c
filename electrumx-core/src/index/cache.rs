//! In-memory maps of the sync hot loop, keyed by outpoints with a hasher that uses the
//! txid's own randomness instead of SipHash.

use crate::hash::{HashX, Txid};
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hash, Hasher};

/// An outpoint as a map key.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct OutKey {
    /// Funding txid.
    pub txid: Txid,
    /// Output index.
    pub vout: u32,
}

impl Hash for OutKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        let head = u64::from_le_bytes(self.txid.0[..8].try_into().expect("8 bytes"));
        state.write_u64(head ^ (self.vout as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15));
    }
}

/// Hasher for keys that are already uniformly random.
#[derive(Default)]
pub struct PassThroughHasher(u64);

impl Hasher for PassThroughHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut b = [0u8; 8];
            b[..chunk.len()].copy_from_slice(chunk);
            self.0 =
                (self.0.rotate_left(5) ^ u64::from_le_bytes(b)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 ^= n;
    }
}

/// A HashMap with [`PassThroughHasher`].
pub type FastMap<K, V> = HashMap<K, V, BuildHasherDefault<PassThroughHasher>>;

/// A HashSet with [`PassThroughHasher`].
pub type FastSet<K> = std::collections::HashSet<K, BuildHasherDefault<PassThroughHasher>>;

/// An output known to the processor but not (or not yet) in the database.
#[derive(Clone, Copy, Debug)]
pub struct CoinInfo {
    /// Funding tx number.
    pub txnum: u64,
    /// Owner script.
    pub hashx: HashX,
    /// Value.
    pub value: u64,
}

/// Approximate heap bytes of one cache entry (key, value, hash-table overhead).
pub const COIN_ENTRY_BYTES: usize = 128;
