//! Hash types used across the index: transaction ids, script hashes and their
//! truncated database form, in the byte orders the Electrum protocol uses.

use bitcoin::hashes::{Hash, sha256, sha256d};
use std::fmt;

/// Length of a [`HashX`], the truncated script hash stored in the database (as ElectrumX).
pub const HASHX_LEN: usize = 11;

/// A 32-byte double-SHA256 (txid or block hash) in internal byte order.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Hash32(pub [u8; 32]);

impl Hash32 {
    /// Double SHA-256 of `data`.
    pub fn sha256d(data: &[u8]) -> Self {
        Hash32(sha256d::Hash::hash(data).to_byte_array())
    }

    /// Parses display-order (byte-reversed) hex, as RPCs and the Electrum protocol print it.
    pub fn from_display_hex(s: &str) -> Option<Self> {
        let mut bytes = [0u8; 32];
        const_hex::decode_to_slice(s, &mut bytes).ok()?;
        bytes.reverse();
        Some(Hash32(bytes))
    }

    /// Display-order hex.
    pub fn to_display_hex(&self) -> String {
        let mut b = self.0;
        b.reverse();
        const_hex::encode(b)
    }
}

impl fmt::Display for Hash32 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_display_hex())
    }
}

impl fmt::Debug for Hash32 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_display_hex())
    }
}

/// Transaction id (internal byte order; displayed reversed).
pub type Txid = Hash32;
/// Block hash (internal byte order; displayed reversed).
pub type BlockHash = Hash32;

/// The Electrum script hash: SHA-256 of the output script (internal order; shown reversed).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ScriptHash(pub [u8; 32]);

impl ScriptHash {
    /// Script hash of an output script.
    pub fn of_script(script: &[u8]) -> Self {
        ScriptHash(sha256::Hash::hash(script).to_byte_array())
    }

    /// Parses the protocol's hex form (display order, 64 hex digits).
    pub fn from_hex(s: &str) -> Option<Self> {
        Hash32::from_display_hex(s).map(|h| ScriptHash(h.0))
    }

    /// The protocol's hex form.
    pub fn to_hex(&self) -> String {
        Hash32(self.0).to_display_hex()
    }

    /// The truncated form the database keys on.
    pub fn hashx(&self) -> HashX {
        let mut x = [0u8; HASHX_LEN];
        x.copy_from_slice(&self.0[..HASHX_LEN]);
        HashX(x)
    }
}

impl fmt::Debug for ScriptHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// Truncated script hash (first [`HASHX_LEN`] bytes of the internal-order SHA-256),
/// the database's per-script key.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct HashX(pub [u8; HASHX_LEN]);

impl HashX {
    /// The HashX of an output script.
    pub fn of_script(script: &[u8]) -> Self {
        ScriptHash::of_script(script).hashx()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_hex_round_trip() {
        let s = "000000000019d6689c085ae165831e934ff763ae46a2a6c172b3f1b60a8ce26f";
        let h = Hash32::from_display_hex(s).unwrap();
        assert_eq!(h.0[31], 0);
        assert_eq!(h.to_display_hex(), s);
        assert!(Hash32::from_display_hex("zz").is_none());
    }
}
