//! Merkle branches: transaction inclusion proofs and header checkpoint (`cp_height`) proofs.
//! Bitcoin's rule: pair double-SHA256, duplicate the last node of an odd level.
//!
//! Blocks asked about are kept as whole trees ([`MerkleTree`]) in a [`MerkleCache`] keyed by
//! block hash (so a reorg can never serve a stale tree), as ElectrumX keeps merkle levels:
//! the next proof from the same block is a few lookups instead of a block read and a rehash.

use crate::cache::CacheStats;
use electrumx_core::{BlockHash, Hash32};
use parking_lot::Mutex;
use std::collections::HashMap;
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

    /// Hashes held (all levels).
    fn size(&self) -> usize {
        self.levels.iter().map(Vec::len).sum()
    }
}

#[derive(Default)]
struct CacheInner {
    map: HashMap<BlockHash, (Arc<MerkleTree>, u64)>,
    hashes: usize,
    tick: u64,
    lookups: u64,
    hits: u64,
}

/// Recently used block merkle trees, bounded by the number of hashes held.
pub struct MerkleCache {
    inner: Mutex<CacheInner>,
    max_hashes: usize,
}

impl MerkleCache {
    /// A cache holding at most `max_hashes` hashes (32 bytes each) over all trees.
    pub fn new(max_hashes: usize) -> Self {
        MerkleCache {
            inner: Mutex::new(CacheInner::default()),
            max_hashes,
        }
    }

    /// The tree of block `hash`, built by `leaves` on a miss.
    pub fn get_or_build<E>(
        &self,
        hash: BlockHash,
        leaves: impl FnOnce() -> Result<Vec<Hash32>, E>,
    ) -> Result<Arc<MerkleTree>, E> {
        {
            let mut inner = self.inner.lock();
            inner.tick += 1;
            inner.lookups += 1;
            let tick = inner.tick;
            if let Some((tree, used)) = inner.map.get_mut(&hash) {
                *used = tick;
                let tree = tree.clone();
                inner.hits += 1;
                return Ok(tree);
            }
        }
        let tree = Arc::new(MerkleTree::new(leaves()?));
        let size = tree.size();
        if size > self.max_hashes {
            return Ok(tree);
        }
        let mut inner = self.inner.lock();
        inner.tick += 1;
        let tick = inner.tick;
        if inner.map.insert(hash, (tree.clone(), tick)).is_none() {
            inner.hashes += size;
        }
        while inner.hashes > self.max_hashes {
            let Some(oldest) = inner
                .map
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(k, _)| *k)
            else {
                break;
            };
            if let Some((t, _)) = inner.map.remove(&oldest) {
                inner.hashes -= t.size();
            }
        }
        Ok(tree)
    }

    /// Lookups, hits and blocks held.
    pub fn stats(&self) -> CacheStats {
        let inner = self.inner.lock();
        CacheStats {
            lookups: inner.lookups,
            hits: inner.hits,
            entries: inner.map.len() as u64,
            items: inner.hashes as u64,
        }
    }
}

fn parent(a: &Hash32, b: &Hash32) -> Hash32 {
    let mut buf = [0u8; 64];
    buf[..32].copy_from_slice(&a.0);
    buf[32..].copy_from_slice(&b.0);
    Hash32::sha256d(&buf)
}

/// The branch (siblings from the leaf level up) of leaf `index`, and the root.
/// `None` if `index` is out of range.
pub fn branch_and_root(leaves: &[Hash32], index: usize) -> Option<(Vec<Hash32>, Hash32)> {
    if index >= leaves.len() {
        return None;
    }
    let mut level = leaves.to_vec();
    let mut idx = index;
    let mut branch = Vec::new();
    while level.len() > 1 {
        if level.len() % 2 == 1 {
            level.push(*level.last().expect("non-empty"));
        }
        branch.push(level[idx ^ 1]);
        level = level
            .chunks_exact(2)
            .map(|p| parent(&p[0], &p[1]))
            .collect();
        idx /= 2;
    }
    Some((branch, level[0]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(n: u8) -> Hash32 {
        Hash32([n; 32])
    }

    #[test]
    fn trees_give_the_same_branches_and_the_cache_is_bounded() {
        for n in 1..40usize {
            let leaves: Vec<Hash32> = (0..n as u8).map(h).collect();
            let tree = MerkleTree::new(leaves.clone());
            for i in 0..n {
                assert_eq!(
                    tree.branch(i).unwrap(),
                    branch_and_root(&leaves, i).unwrap().0
                );
            }
            assert!(tree.branch(n).is_none());
        }
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
