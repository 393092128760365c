//! A cache of confirmed histories, as ElectrumX keeps: wallets ask for the same scripts again
//! and again, and a long history costs a scan plus one txid lookup per entry. Entries are
//! dropped for every script a new block (or reorg) touches, before notifications go out;
//! an answer computed while such a change happened is not stored (generation check).
//! Bounded by the total number of entries held.

use electrumx_core::{HashX, HistoryItem};
use parking_lot::Mutex;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

/// Histories shorter than this are cheap to recompute and not cached.
const MIN_LEN: usize = 64;

#[derive(Default)]
struct Inner {
    map: HashMap<HashX, (Arc<Vec<HistoryItem>>, u64)>,
    entries: usize,
    tick: u64,
    generation: u64,
    lookups: u64,
    hits: u64,
}

/// Counters of a cache, for `getinfo` and metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Lookups since start.
    pub lookups: u64,
    /// Lookups that found an entry.
    pub hits: u64,
    /// Scripts held.
    pub entries: u64,
    /// History items held.
    pub items: u64,
}

impl CacheStats {
    /// ElectrumX's `getinfo` line: `N lookups, N hits, N entries, hitrate X`.
    pub fn summary(&self) -> String {
        format!(
            "{} lookups, {} hits, {} entries, hitrate {:.4}",
            self.lookups,
            self.hits,
            self.entries,
            self.hits as f64 / self.lookups.max(1) as f64
        )
    }
}

/// The history cache (see the module docs).
pub struct HistoryCache {
    inner: Mutex<Inner>,
    max_entries: usize,
}

impl HistoryCache {
    /// A cache holding at most `max_entries` history items in all.
    pub fn new(max_entries: usize) -> Self {
        HistoryCache {
            inner: Mutex::new(Inner::default()),
            max_entries,
        }
    }

    /// The current generation; pass it back to [`HistoryCache::insert`].
    pub fn generation(&self) -> u64 {
        self.inner.lock().generation
    }

    /// A cached history.
    pub fn get(&self, hashx: &HashX) -> Option<Arc<Vec<HistoryItem>>> {
        let mut inner = self.inner.lock();
        inner.tick += 1;
        inner.lookups += 1;
        let tick = inner.tick;
        let found = inner.map.get_mut(hashx).map(|(h, used)| {
            *used = tick;
            h.clone()
        });
        if found.is_some() {
            inner.hits += 1;
        }
        found
    }

    /// Lookups, hits and size.
    pub fn stats(&self) -> CacheStats {
        let inner = self.inner.lock();
        CacheStats {
            lookups: inner.lookups,
            hits: inner.hits,
            entries: inner.map.len() as u64,
            items: inner.entries as u64,
        }
    }

    /// Stores a history computed during `generation` (ignored if the chain changed since).
    pub fn insert(&self, hashx: HashX, history: Arc<Vec<HistoryItem>>, generation: u64) {
        if history.len() < MIN_LEN || history.len() > self.max_entries / 4 {
            return;
        }
        let mut inner = self.inner.lock();
        if inner.generation != generation {
            return;
        }
        inner.tick += 1;
        let tick = inner.tick;
        inner.entries += history.len();
        if let Some((old, _)) = inner.map.insert(hashx, (history, tick)) {
            inner.entries -= old.len();
        }
        while inner.entries > self.max_entries {
            let Some(oldest) = inner
                .map
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(k, _)| *k)
            else {
                break;
            };
            if let Some((h, _)) = inner.map.remove(&oldest) {
                inner.entries -= h.len();
            }
        }
    }

    /// Drops the histories of `touched` scripts (a new block or a reorg changed them).
    pub fn invalidate(&self, touched: &HashSet<HashX>) {
        let mut inner = self.inner.lock();
        inner.generation += 1;
        for hx in touched {
            if let Some((h, _)) = inner.map.remove(hx) {
                inner.entries -= h.len();
            }
        }
    }

    /// Drops everything.
    pub fn clear(&self) {
        let mut inner = self.inner.lock();
        inner.generation += 1;
        inner.map.clear();
        inner.entries = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use electrumx_core::Hash32;

    fn hist(n: usize) -> Arc<Vec<HistoryItem>> {
        Arc::new(
            (0..n)
                .map(|i| HistoryItem {
                    txid: Hash32([i as u8; 32]),
                    height: i as u32,
                })
                .collect(),
        )
    }

    #[test]
    fn stores_invalidates_and_evicts() {
        let c = HistoryCache::new(1000);
        let (a, b) = (HashX([1; 11]), HashX([2; 11]));
        let g = c.generation();
        c.insert(a, hist(100), g);
        assert_eq!(c.get(&a).unwrap().len(), 100);
        c.insert(b, hist(10), g);
        assert!(c.get(&b).is_none(), "short histories are not cached");
        // A change during the computation: not stored.
        let g = c.generation();
        c.invalidate(&HashSet::from([b]));
        c.insert(b, hist(100), g);
        assert!(c.get(&b).is_none());
        // Invalidation drops touched scripts only.
        c.invalidate(&HashSet::from([a]));
        assert!(c.get(&a).is_none());
        // Eviction keeps the total bounded.
        let g = c.generation();
        for i in 0..20u8 {
            c.insert(HashX([i; 11]), hist(200), g);
        }
        assert!(c.inner.lock().entries <= 1000);
    }
}
