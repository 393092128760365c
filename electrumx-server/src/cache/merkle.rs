//! Merkle branches: transaction inclusion proofs and header checkpoint (`cp_height`) proofs.
//! Bitcoin's rule: pair double-SHA256, duplicate the last node of an odd level.
//!
//! Blocks asked about are kept as whole trees ([`MerkleTree`]) in a [`MerkleCache`] keyed by
//! block hash (so a reorg can never serve a stale tree), as ElectrumX keeps merkle levels:
//! the next proof from the same block is a few lookups instead of a block read and a rehash.

use crate::cache::{CacheStats, SizedLru};
use electrumx_core::{BlockHash, Hash32};
use parking_lot::Mutex;
use std::sync::Arc;

/// Every level of a block's merkle tree, leaves (txids) first.
#[derive(Debug)]
pub struct MerkleTree {
    levels: Vec<Vec<Hash32>>,
}

impl MerkleTree {
    /// Builds the tree over `leaves` (at least one).
    pub fn new(leaves: Vec<Hash32>) -> Self {
        let mut levels = vec![leaves];
        while levels.last().is_some_and(|l| l.len() > 1) {
            let level = levels.last().expect("non-empty");
            let next = level
                .chunks(2)
                .map(|p| parent(&p[0], p.get(1).unwrap_or(&p[0])))
                .collect();
            levels.push(next);
        }
        MerkleTree { levels }
    }

    /// The leaves (the block's txids in order).
    pub fn leaves(&self) -> &[Hash32] {
        &self.levels[0]
    }

    /// The branch of leaf `index` (siblings from the leaf level up), `None` if out of range.
    pub fn branch(&self, index: usize) -> Option<Vec<Hash32>> {
        if index >= self.leaves().len() {
            return None;
        }
        let mut idx = index;
        let mut branch = Vec::with_capacity(self.levels.len());
        for level in &self.levels[..self.levels.len() - 1] {
            // An odd level's last node is paired with itself.
            branch.push(*level.get(idx ^ 1).unwrap_or(&level[idx]));
            idx /= 2;
        }
        Some(branch)
    }

    /// The root (`None` for a tree without leaves).
    pub fn root(&self) -> Option<Hash32> {
        self.levels.last()?.first().copied()
    }

    /// Hashes held (all levels).
    fn size(&self) -> usize {
        self.levels.iter().map(Vec::len).sum()
    }
}

/// Recently used block merkle trees, bounded by the number of hashes held.
pub struct MerkleCache {
    inner: Mutex<SizedLru<BlockHash, Arc<MerkleTree>>>,
}

impl MerkleCache {
    /// A cache holding at most `max_hashes` hashes (32 bytes each) over all trees.
    pub fn new(max_hashes: usize) -> Self {
        MerkleCache {
            inner: Mutex::new(SizedLru::new(max_hashes)),
        }
    }

    /// The tree of block `hash`, built by `leaves` on a miss.
    pub fn get_or_build<E>(
        &self,
        hash: BlockHash,
        leaves: impl FnOnce() -> Result<Vec<Hash32>, E>,
    ) -> Result<Arc<MerkleTree>, E> {
        match self.get(&hash) {
            Some(tree) => Ok(tree),
            None => self.build(hash, leaves),
        }
    }

    /// The cached tree of block `hash`.
    pub fn get(&self, hash: &BlockHash) -> Option<Arc<MerkleTree>> {
        self.inner.lock().get(hash)
    }

    /// Builds the tree of block `hash` from `leaves` (outside the lock: another session may
    /// build the same tree meanwhile) and caches it.
    pub fn build<E>(
        &self,
        hash: BlockHash,
        leaves: impl FnOnce() -> Result<Vec<Hash32>, E>,
    ) -> Result<Arc<MerkleTree>, E> {
        let tree = Arc::new(MerkleTree::new(leaves()?));
        self.inner.lock().insert(hash, tree.clone(), tree.size());
        Ok(tree)
    }

    /// Lookups, hits and blocks held.
    pub fn stats(&self) -> CacheStats {
        self.inner.lock().stats()
    }
}

pub(crate) fn parent(a: &Hash32, b: &Hash32) -> Hash32 {
    let mut buf = [0u8; 64];
    buf[..32].copy_from_slice(&a.0);
    buf[32..].copy_from_slice(&b.0);
    Hash32::sha256d(&buf)
}

/// The branch (siblings from the leaf level up) of leaf `index`, and the root.
/// `None` if `index` is out of range.
pub fn branch_and_root(leaves: &[Hash32], index: usize) -> Option<(Vec<Hash32>, Hash32)> {
    let tree = MerkleTree::new(leaves.to_vec());
    Some((tree.branch(index)?, tree.root()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(n: u8) -> Hash32 {
        Hash32([n; 32])
    }

    #[test]
    fn the_cache_is_bounded_and_out_of_range_leaves_have_no_branch() {
        assert!(MerkleTree::new(vec![h(1), h(2)]).branch(2).is_none());
        assert!(MerkleTree::new(Vec::new()).root().is_none());
        let cache = MerkleCache::new(10);
        let build = |n: u8| move || Ok::<_, ()>((0..n).map(h).collect::<Vec<_>>());
        cache.get_or_build(h(100), build(4)).unwrap(); // 4 + 2 + 1 = 7 hashes
        cache.get_or_build(h(100), build(4)).unwrap();
        cache.get_or_build(h(101), build(2)).unwrap(); // 3 more: 10
        cache.get_or_build(h(102), build(2)).unwrap(); // evicts the oldest
        let s = cache.stats();
        assert_eq!((s.lookups, s.hits), (4, 1));
        assert!(s.items <= 10, "{s:?}");
    }

    #[test]
    fn branch_verifies_to_root() {
        for n in 1..20usize {
            let leaves: Vec<Hash32> = (0..n as u8).map(h).collect();
            let root = electrumx_core::parse::merkle_root(leaves.iter().copied());
            for i in 0..n {
                let (branch, r) = branch_and_root(&leaves, i).unwrap();
                assert_eq!(r, root);
                let mut acc = leaves[i];
                let mut idx = i;
                for sib in &branch {
                    acc = if idx & 1 == 1 {
                        parent(sib, &acc)
                    } else {
                        parent(&acc, sib)
                    };
                    idx >>= 1;
                }
                assert_eq!(acc, root, "n={n} i={i}");
            }
        }
        assert!(branch_and_root(&[h(1)], 1).is_none());
        assert_eq!(branch_and_root(&[h(1)], 0).unwrap().0.len(), 0);
    }
}
