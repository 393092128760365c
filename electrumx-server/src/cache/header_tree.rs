//! Checkpoint proofs (`cp_height`) from cached levels of the merkle tree over the block
//! hashes, as ElectrumX's `MerkleCache` keeps them: without it, every `block.header(s)`
//! with a checkpoint hashed every block hash up to `cp_height` (a million double-SHA256 at
//! mainnet height, per request).
//!
//! The roots of complete subtrees of `2^LOW` leaves and up are kept (about 2 bytes per
//! block in all); they never change while the chain only grows. A proof for leaf `i` of
//! the tree over the first `n` leaves then takes its siblings from those levels, hashes
//! the few levels below `LOW` from at most `2^LOW` leaves, and computes the nodes of the
//! right edge (the partial subtrees ending at `n`): work logarithmic in the height, after
//! the first request built the levels. A reorg is noticed by the last cached leaf's hash
//! (a block hash commits to all before it), and only the segments it changed are dropped.

use super::merkle::parent;
use electrumx_core::Hash32;
use parking_lot::{RwLock, RwLockWriteGuard};

/// Levels below this are hashed from the leaves for each proof (32 leaves at most).
const LOW: u32 = 5;

/// The cached levels of the block-hash tree.
#[derive(Debug, Default)]
pub struct HeaderTree {
    inner: RwLock<Levels>,
}

#[derive(Debug, Default)]
struct Levels {
    /// `levels[j - LOW][k]`: the root of the complete subtree over leaves
    /// `k << j .. (k + 1) << j`.
    levels: Vec<Vec<Hash32>>,
    /// The last leaf of each level-`LOW` segment cached (to notice a reorg).
    last_leaves: Vec<Hash32>,
}

impl Levels {
    /// Leaves covered by complete level-`LOW` segments.
    fn covered(&self) -> u64 {
        (self.last_leaves.len() as u64) << LOW
    }

    /// Keeps the first `segments` level-`LOW` segments (and what is built on them).
    fn truncate(&mut self, segments: usize) {
        self.last_leaves.truncate(segments);
        for (d, level) in self.levels.iter_mut().enumerate() {
            level.truncate(segments >> d);
        }
    }

    /// Whether the levels cover the first `n` leaves of the current chain (nothing to drop
    /// or add).
    fn synced(&self, n: u64, hashes: &dyn Fn(u64, u64) -> Vec<Hash32>) -> bool {
        if (self.last_leaves.len() as u64) < n >> LOW {
            return false;
        }
        match self.last_leaves.last() {
            None => true,
            Some(last) => hashes(self.covered() - 1, 1).first() == Some(last),
        }
    }

    /// Drops what a reorg changed, then extends the levels over the first `n` leaves.
    fn sync(&mut self, n: u64, hashes: &dyn Fn(u64, u64) -> Vec<Hash32>) {
        // The chain grows at the end only, except in a reorg: the last cached leaf tells.
        while let Some(last) = self.last_leaves.last() {
            if hashes(self.covered() - 1, 1).first() == Some(last) {
                break;
            }
            self.truncate(self.last_leaves.len() - 1);
        }
        let want = (n >> LOW) as usize;
        let have = self.last_leaves.len();
        if want <= have {
            return;
        }
        let seg = 1u64 << LOW;
        let leaves = hashes(have as u64 * seg, (want - have) as u64 * seg);
        if leaves.len() as u64 != (want - have) as u64 * seg {
            return; // the chain is shorter than asked: nothing is cached from it
        }
        if self.levels.is_empty() {
            self.levels.push(Vec::new());
        }
        for chunk in leaves.chunks(seg as usize) {
            self.levels[0].push(root_of_complete(chunk));
            self.last_leaves.push(chunk[chunk.len() - 1]);
        }
        // Complete nodes of every higher level from the one below.
        let mut d = 1;
        while self.levels[d - 1].len() >= 2 {
            if self.levels.len() == d {
                self.levels.push(Vec::new());
            }
            let below_len = self.levels[d - 1].len();
            while self.levels[d].len() < below_len / 2 {
                let k = self.levels[d].len();
                let node = parent(&self.levels[d - 1][2 * k], &self.levels[d - 1][2 * k + 1]);
                self.levels[d].push(node);
            }
            d += 1;
        }
    }

    /// The node at level `j`, position `k` of the tree over the first `n` leaves (`None`
    /// beyond its last node), with Bitcoin's rule: an odd level's last node is paired with
    /// itself.
    fn node(&self, j: u32, k: u64, n: u64, leaf: &dyn Fn(u64) -> Hash32) -> Option<Hash32> {
        let start = k << j;
        if start >= n {
            return None;
        }
        if j == 0 {
            return Some(leaf(k));
        }
        let complete = start + (1u64 << j) <= n;
        if complete && j >= LOW {
            let cached = self
                .levels
                .get((j - LOW) as usize)
                .and_then(|l| l.get(k as usize));
            if let Some(node) = cached {
                return Some(*node);
            }
        }
        let left = self.node(j - 1, 2 * k, n, leaf)?;
        let right = self.node(j - 1, 2 * k + 1, n, leaf).unwrap_or(left);
        Some(parent(&left, &right))
    }
}

/// The merkle root of a power-of-two number of leaves.
fn root_of_complete(leaves: &[Hash32]) -> Hash32 {
    let mut level: Vec<Hash32> = leaves.to_vec();
    while level.len() > 1 {
        level = level.chunks(2).map(|p| parent(&p[0], &p[1])).collect();
    }
    level[0]
}

impl HeaderTree {
    /// Whether the cached levels cover the first `length` leaves as the chain has them
    /// now: a proof is then a few microseconds of work (no level to extend).
    pub fn is_ready(&self, length: u64, hashes: &dyn Fn(u64, u64) -> Vec<Hash32>) -> bool {
        self.inner.read().synced(length, hashes)
    }

    /// The branch of leaf `index` in the tree over the first `length` leaves, and its
    /// root; `None` if `index >= length` or the chain has fewer leaves. `hashes(start,
    /// count)` reads the leaves (block hashes) of the current chain.
    pub fn branch_and_root(
        &self,
        length: u64,
        index: u64,
        hashes: &dyn Fn(u64, u64) -> Vec<Hash32>,
    ) -> Option<(Vec<Hash32>, Hash32)> {
        if index >= length {
            return None;
        }
        // Proofs share the levels; only a request that needs them extended (or a reorg
        // noticed) takes them alone, once.
        let mut levels = self.inner.read();
        if !levels.synced(length, hashes) {
            drop(levels);
            let mut w = self.inner.write();
            w.sync(length, hashes);
            levels = RwLockWriteGuard::downgrade(w);
        }
        // Leaves below `LOW` are read per proof: those of at most two segments (the
        // leaf's, and the partial one at the end), read once each.
        let seg = 1u64 << LOW;
        let read = std::cell::RefCell::new(Vec::<(u64, Vec<Hash32>)>::new());
        let leaf = |k: u64| -> Hash32 {
            let base = k & !(seg - 1);
            let mut read = read.borrow_mut();
            if let Some((_, l)) = read.iter().find(|(b, _)| *b == base) {
                // Shorter than asked if the chain shrank meanwhile: the proof then fails
                // its final check below rather than panicking here.
                return l.get((k - base) as usize).copied().unwrap_or_default();
            }
            let l = hashes(base, seg.min(length - base));
            let h = l.get((k - base) as usize).copied().unwrap_or_default();
            read.push((base, l));
            h
        };
        if hashes(length - 1, 1).is_empty() {
            return None;
        }
        let depth = 64 - (length - 1).leading_zeros();
        let mut branch = Vec::with_capacity(depth as usize);
        for j in 0..depth {
            let own = index >> j;
            let sibling = levels
                .node(j, own ^ 1, length, &leaf)
                .or_else(|| levels.node(j, own, length, &leaf))?;
            branch.push(sibling);
        }
        let root = levels.node(depth, 0, length, &leaf)?;
        Some((branch, root))
    }

    /// Hashes held.
    pub fn size(&self) -> usize {
        let l = self.inner.read();
        l.levels.iter().map(Vec::len).sum::<usize>() + l.last_leaves.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::merkle::branch_and_root;
    use proptest::prelude::*;

    fn chain(n: usize, salt: u8) -> Vec<Hash32> {
        (0..n)
            .map(|i| {
                let mut h = [salt; 32];
                h[..8].copy_from_slice(&(i as u64).to_le_bytes());
                Hash32(h)
            })
            .collect()
    }

    fn reader(c: &[Hash32]) -> impl Fn(u64, u64) -> Vec<Hash32> + '_ {
        move |start, count| {
            let s = (start as usize).min(c.len());
            let e = (s + count as usize).min(c.len());
            c[s..e].to_vec()
        }
    }

    proptest! {
        /// Any leaf, any length, on a growing chain and across a reorg: the same branch and
        /// root as hashing every leaf.
        #[test]
        fn proofs_equal_the_full_computation(
            len in 1usize..3000,
            picks in proptest::collection::vec((any::<u16>(), any::<u16>()), 1..12),
            fork in any::<u16>(),
        ) {
            let tree = HeaderTree::default();
            let mut c = chain(len, 1);
            for (round, (a, b)) in picks.iter().enumerate() {
                if round == picks.len() / 2 {
                    // A reorg: the chain from `fork` on is replaced (and may be shorter).
                    let f = fork as usize % c.len();
                    c.truncate(f.max(1));
                    c.extend(chain(len + 40, 2).into_iter().skip(c.len()));
                }
                let n = 1 + (*a as usize % c.len());
                let i = *b as usize % n;
                let got = tree.branch_and_root(n as u64, i as u64, &reader(&c));
                let want = branch_and_root(&c[..n], i);
                prop_assert_eq!(got, want);
            }
        }
    }

    #[test]
    fn out_of_range_is_none_and_the_cache_is_small() {
        let c = chain(100_000, 3);
        let tree = HeaderTree::default();
        assert!(tree.branch_and_root(10, 10, &reader(&c)).is_none());
        assert!(tree.branch_and_root(200_000, 5, &reader(&c)).is_none());
        let (branch, root) = tree.branch_and_root(100_000, 77_777, &reader(&c)).unwrap();
        assert_eq!(Some((branch, root)), branch_and_root(&c, 77_777));
        // About 2 hashes per 32 leaves.
        assert!(tree.size() < 100_000 / 32 * 3, "{}", tree.size());
    }
}
