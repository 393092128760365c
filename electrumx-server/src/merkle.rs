//! Merkle branches: transaction inclusion proofs and header checkpoint (`cp_height`) proofs.
//! Bitcoin's rule: pair double-SHA256, duplicate the last node of an odd level.

use electrumx_core::Hash32;

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
