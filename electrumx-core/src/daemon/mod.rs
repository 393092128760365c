//! The block source: a node reached over JSON-RPC ([`RpcDaemon`]), raw block files on
//! disk ([`BlockFileDaemon`]), or a node whose block files are read during the initial sync
//! ([`HybridDaemon`]). The indexer only sees the [`Daemon`] trait.

mod files;
mod hybrid;
mod rpc;

pub use files::BlockFileDaemon;
pub use hybrid::{BlockFileStats, DEFAULT_NEAR_TIP, HybridDaemon};
pub use rpc::{DaemonUrl, RpcDaemon, RpcDaemonConfig};

use crate::error::DaemonError;
use crate::hash::{BlockHash, Txid};
use async_trait::async_trait;

/// Result of daemon calls.
pub type DaemonResult<T> = Result<T, DaemonError>;

/// What the indexer, the mempool and the protocol need from a node.
///
/// Implementations retry temporary failures themselves; an error returned is final for
/// that call (or [`DaemonError::Cancelled`] on shutdown).
#[async_trait]
pub trait Daemon: Send + Sync + 'static {
    /// Height of the node's best chain.
    async fn height(&self) -> DaemonResult<u32>;

    /// Hash of the node's best block.
    async fn best_block_hash(&self) -> DaemonResult<BlockHash> {
        let h = self.height().await?;
        let hashes = self.block_hashes(h, 1).await?;
        hashes
            .into_iter()
            .next()
            .ok_or_else(|| DaemonError::bad_response("no best block"))
    }

    /// Hashes of the blocks at heights `first .. first + count` of the node's best chain.
    async fn block_hashes(&self, first: u32, count: u32) -> DaemonResult<Vec<BlockHash>>;

    /// Raw serialized blocks, in the order of `hashes`.
    async fn raw_blocks(&self, hashes: &[BlockHash]) -> DaemonResult<Vec<Vec<u8>>>;

    /// Called when a block this source returned failed the parser's checks (structure,
    /// merkle root) or is not the block asked for: returns it again from a source that can
    /// be trusted more, or `None` (the default) when there is none, and then the error
    /// stands. [`HybridDaemon`] asks its wrapped node for blocks read from files.
    async fn refetch_block(&self, _hash: &BlockHash) -> DaemonResult<Option<Vec<u8>>> {
        Ok(None)
    }

    /// Txids in the node's mempool.
    async fn mempool_txids(&self) -> DaemonResult<Vec<Txid>> {
        Ok(Vec::new())
    }

    /// Raw transactions by txid; `None` where the node does not have one.
    async fn raw_transactions(&self, txids: &[Txid]) -> DaemonResult<Vec<Option<Vec<u8>>>> {
        Ok(vec![None; txids.len()])
    }

    /// Submits a raw transaction; returns its txid.
    async fn broadcast(&self, _raw_tx: &[u8]) -> DaemonResult<Txid> {
        Err(DaemonError::Rpc {
            code: -32601,
            message: "this block source cannot broadcast".into(),
        })
    }

    /// Fee rate estimate in coin units per kB for confirmation within `blocks`; `None` if the
    /// node cannot estimate.
    async fn estimate_fee(&self, _blocks: u32) -> DaemonResult<Option<f64>> {
        Ok(None)
    }

    /// The node's minimum relay fee in coin units per kB.
    async fn relay_fee(&self) -> DaemonResult<f64> {
        Ok(0.00001)
    }

    /// Any other node RPC, for pass-through answers (verbose transactions, mempool info).
    async fn call_json(
        &self,
        method: &str,
        _params: serde_json::Value,
    ) -> DaemonResult<serde_json::Value> {
        Err(DaemonError::Rpc {
            code: -32601,
            message: format!("{method}: not available from this block source"),
        })
    }

    /// A short description for logs (URL without credentials, or a path).
    fn describe(&self) -> String;

    /// Request statistics, for sources that talk to a node (`None` otherwise).
    fn stats(&self) -> Option<crate::stats::DaemonStats> {
        None
    }
}

/// The obfuscation key of a blocks directory (`xor.dat`, Core 28+): all zeros (none) when
/// the file is missing; an error if it is not an 8-byte key or cannot be read.
pub(crate) fn read_xor_key(dir: &std::path::Path) -> Result<[u8; 8], DaemonError> {
    match std::fs::read(dir.join("xor.dat")) {
        Ok(key) => <[u8; 8]>::try_from(key.as_slice()).map_err(|_| {
            DaemonError::config(format!(
                "{}: xor.dat holds {} bytes, not an 8-byte key",
                dir.display(),
                key.len()
            ))
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok([0; 8]),
        Err(e) => Err(DaemonError::config_from(dir.display().to_string(), e)),
    }
}

/// Removes `xor.dat`'s obfuscation from `buf`, read at `offset` of its file (each byte was
/// XORed with `key[(offset + i) % 8]`); nothing to do for the all-zero key. Eight bytes at
/// a time with the key turned to `offset`: every byte of every block read goes through it.
pub(crate) fn unxor(buf: &mut [u8], offset: u64, key: &[u8; 8]) {
    if *key == [0; 8] {
        return;
    }
    let mut turned = [0u8; 8];
    for (i, k) in turned.iter_mut().enumerate() {
        *k = key[((offset % 8) as usize + i) % 8];
    }
    let word = u64::from_ne_bytes(turned);
    let mut chunks = buf.chunks_exact_mut(8);
    for chunk in &mut chunks {
        let v = u64::from_ne_bytes((&*chunk).try_into().expect("8 bytes")) ^ word;
        chunk.copy_from_slice(&v.to_ne_bytes());
    }
    for (b, k) in chunks.into_remainder().iter_mut().zip(turned) {
        *b ^= k;
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn unxor_matches_the_byte_rule_at_any_offset_and_length() {
        let key = [0x5a, 0x01, 0xff, 0x80, 0x13, 0x37, 0x00, 0xc4];
        for offset in 0..17u64 {
            for len in 0..40usize {
                let data: Vec<u8> = (0..len as u8).map(|b| b.wrapping_mul(31)).collect();
                let mut fast = data.clone();
                super::unxor(&mut fast, offset, &key);
                let slow: Vec<u8> = data
                    .iter()
                    .enumerate()
                    .map(|(i, b)| b ^ key[((offset + i as u64) % 8) as usize])
                    .collect();
                assert_eq!(fast, slow, "offset {offset} len {len}");
            }
        }
    }
}
