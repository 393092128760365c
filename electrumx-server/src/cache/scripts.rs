//! Caches of confirmed, per-script answers, as ElectrumX keeps of histories: wallets ask for
//! the same scripts again and again (a subscription's status, then its history, then its
//! UTXOs), and a long history costs a scan plus one txid lookup per entry. A hit is also
//! cheap enough to answer on the async worker, without the round trip through the blocking
//! pool that a database read takes. Entries are dropped for every script a new block (or
//! reorg) touches, before notifications go out; an answer computed while such a change
//! happened is not stored (generation check). Bounded by the total number of entries held.

use electrumx_core::{HashX, HistoryItem, Utxo};
use parking_lot::Mutex;
use std::collections::{HashMap, HashSet};
use std::hash::Hash;
use std::sync::Arc;

/// What an entry costs in the caches' unit (a history item or UTXO, some 40 bytes) beyond
/// its items: its key, the map's and the LRU index's slots, the list's own header, about
/// 300 bytes. An empty history or a balance is not free.
const ENTRY_OVERHEAD: usize = 8;

/// Counters of a cache, for `getinfo` and metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Lookups since start.
    pub lookups: u64,
    /// Lookups that found an entry.
    pub hits: u64,
    /// Entries held.
    pub entries: u64,
    /// Size held, in the cache's unit (history items, hashes).
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

/// A least-recently-used map bounded by the summed size of its values (each value's size is
/// given when it is inserted), with lookup and hit counters. Not synchronised: callers hold
/// it in a lock. Recency is an ordered index of use ticks, so a lookup, an insert and each
/// eviction cost O(log n).
pub struct SizedLru<K, V> {
    map: HashMap<K, (V, usize, u64)>,
    /// Last-use tick → key, for every entry of `map` (oldest first).
    by_use: std::collections::BTreeMap<u64, K>,
    size: usize,
    max_size: usize,
    tick: u64,
    lookups: u64,
    hits: u64,
}

impl<K: Hash + Eq + Copy, V: Clone> SizedLru<K, V> {
    /// An empty map holding values of at most `max_size` in all.
    pub fn new(max_size: usize) -> Self {
        SizedLru {
            map: HashMap::new(),
            by_use: std::collections::BTreeMap::new(),
            size: 0,
            max_size,
            tick: 0,
            lookups: 0,
            hits: 0,
        }
    }

    /// The value of `key`, marked as just used.
    pub fn get(&mut self, key: &K) -> Option<V> {
        self.tick += 1;
        self.lookups += 1;
        let tick = self.tick;
        let (v, _, used) = self.map.get_mut(key)?;
        self.by_use.remove(used);
        self.by_use.insert(tick, *key);
        *used = tick;
        self.hits += 1;
        Some(v.clone())
    }

    /// Stores `value` of `size` (not if it alone exceeds the bound), evicting the least
    /// recently used entries until the bound holds.
    pub fn insert(&mut self, key: K, value: V, size: usize) {
        if size > self.max_size {
            return;
        }
        self.tick += 1;
        self.size += size;
        if let Some((_, old, used)) = self.map.insert(key, (value, size, self.tick)) {
            self.size -= old;
            self.by_use.remove(&used);
        }
        self.by_use.insert(self.tick, key);
        while self.size > self.max_size {
            let Some((_, oldest)) = self.by_use.pop_first() else {
                break;
            };
            if let Some((_, size, _)) = self.map.remove(&oldest) {
                self.size -= size;
            }
        }
    }

    /// Drops `key`.
    pub fn remove(&mut self, key: &K) {
        if let Some((_, size, used)) = self.map.remove(key) {
            self.size -= size;
            self.by_use.remove(&used);
        }
    }

    /// Drops everything (counters stay).
    pub fn clear(&mut self) {
        self.map.clear();
        self.by_use.clear();
        self.size = 0;
    }

    /// Lookups, hits, entries and size.
    pub fn stats(&self) -> CacheStats {
        CacheStats {
            lookups: self.lookups,
            hits: self.hits,
            entries: self.map.len() as u64,
            items: self.size as u64,
        }
    }
}

/// Histories at least this long are kept rendered as JSON too.
pub const RENDER_MIN_LEN: usize = 1000;

struct Inner {
    lru: SizedLru<HashX, Arc<Vec<HistoryItem>>>,
    /// Long histories as `get_history` writes them (JSON list entries without the brackets),
    /// bounded by bytes: rendering tens of thousands of entries costs more than the scan.
    rendered: SizedLru<HashX, Arc<String>>,
    /// Complete lists of confirmed unspent outputs.
    utxos: SizedLru<HashX, Arc<Vec<Utxo>>>,
    /// Confirmed balances.
    balances: SizedLru<HashX, u64>,
    generation: u64,
}

/// The per-script caches (see the module docs).
pub struct ScriptCache {
    inner: Mutex<Inner>,
    max_entries: usize,
}

impl ScriptCache {
    /// A cache holding at most `max_entries` history items in all, as many UTXOs and
    /// balances, and as many rendered JSON bytes as 100 bytes an item (a rendered entry takes
    /// about 95).
    pub fn new(max_entries: usize) -> Self {
        ScriptCache {
            inner: Mutex::new(Inner {
                lru: SizedLru::new(max_entries),
                rendered: SizedLru::new(max_entries.saturating_mul(100)),
                utxos: SizedLru::new(max_entries),
                balances: SizedLru::new(max_entries / 8),
                generation: 0,
            }),
            max_entries,
        }
    }

    /// A cached rendering of a long history.
    pub fn get_rendered(&self, hashx: &HashX) -> Option<Arc<String>> {
        self.inner.lock().rendered.get(hashx)
    }

    /// Stores the rendering of a history of `len` items made during `generation` (ignored
    /// if the chain changed since, or if the history is short).
    pub fn insert_rendered(&self, hashx: HashX, json: Arc<String>, len: usize, generation: u64) {
        if len < RENDER_MIN_LEN {
            return;
        }
        let mut inner = self.inner.lock();
        if inner.generation != generation {
            return;
        }
        let size = json.len();
        inner.rendered.insert(hashx, json, size);
    }

    /// The current generation; pass it back to the `insert` methods.
    pub fn generation(&self) -> u64 {
        self.inner.lock().generation
    }

    /// A cached history.
    pub fn get(&self, hashx: &HashX) -> Option<Arc<Vec<HistoryItem>>> {
        self.inner.lock().lru.get(hashx)
    }

    /// Lookups, hits and size of the history cache.
    pub fn stats(&self) -> CacheStats {
        self.inner.lock().lru.stats()
    }

    /// Lookups, hits and size of the UTXO-list cache.
    pub fn utxo_stats(&self) -> CacheStats {
        self.inner.lock().utxos.stats()
    }

    /// Lookups, hits and size of the balance cache.
    pub fn balance_stats(&self) -> CacheStats {
        self.inner.lock().balances.stats()
    }

    /// Stores a history computed during `generation` (ignored if the chain changed since,
    /// or if it alone would take over a quarter of the cache).
    pub fn insert(&self, hashx: HashX, history: Arc<Vec<HistoryItem>>, generation: u64) {
        self.insert_list(|inner| &mut inner.lru, hashx, history, generation);
    }

    /// Stores `list` in the LRU `pick` chooses, under the rules of [`ScriptCache::insert`].
    fn insert_list<T>(
        &self,
        pick: impl FnOnce(&mut Inner) -> &mut SizedLru<HashX, Arc<Vec<T>>>,
        hashx: HashX,
        list: Arc<Vec<T>>,
        generation: u64,
    ) {
        if list.len() > self.max_entries / 4 {
            return;
        }
        let mut inner = self.inner.lock();
        if inner.generation != generation {
            return;
        }
        let size = list.len() + ENTRY_OVERHEAD;
        pick(&mut inner).insert(hashx, list, size);
    }

    /// A cached, complete list of a script's confirmed UTXOs.
    pub fn get_utxos(&self, hashx: &HashX) -> Option<Arc<Vec<Utxo>>> {
        self.inner.lock().utxos.get(hashx)
    }

    /// Stores a script's complete UTXO list computed during `generation` (same rules as
    /// [`ScriptCache::insert`]).
    pub fn insert_utxos(&self, hashx: HashX, utxos: Arc<Vec<Utxo>>, generation: u64) {
        self.insert_list(|inner| &mut inner.utxos, hashx, utxos, generation);
    }

    /// A cached confirmed balance.
    pub fn get_balance(&self, hashx: &HashX) -> Option<u64> {
        self.inner.lock().balances.get(hashx)
    }

    /// Stores a confirmed balance computed during `generation`.
    pub fn insert_balance(&self, hashx: HashX, sats: u64, generation: u64) {
        let mut inner = self.inner.lock();
        if inner.generation != generation {
            return;
        }
        inner.balances.insert(hashx, sats, ENTRY_OVERHEAD);
    }

    /// Drops what is cached of `touched` scripts (a new block or a reorg changed them).
    pub fn invalidate(&self, touched: &HashSet<HashX>) {
        let mut inner = self.inner.lock();
        inner.generation += 1;
        for hx in touched {
            inner.lru.remove(hx);
            inner.rendered.remove(hx);
            inner.utxos.remove(hx);
            inner.balances.remove(hx);
        }
    }

    /// Drops everything.
    pub fn clear(&self) {
        let mut inner = self.inner.lock();
        inner.generation += 1;
        inner.lru.clear();
        inner.rendered.clear();
        inner.utxos.clear();
        inner.balances.clear();
    }
}

/// Raw confirmed transactions, hex-encoded, as `blockchain.transaction.get` answers them
/// (wallets fetch the same transactions again and again, and each miss is a node request).
/// Bounded by the bytes held: two generations of about half the bound each; a lookup finds
/// an entry in either and moves it to the current one, and when the current one is full it
/// becomes the previous one, whose entries are dropped. Only confirmed transactions are
/// stored (their bytes are fixed by their block); a reorg clears the cache.
pub struct TxCache {
    inner: Mutex<TxGenerations>,
    max_bytes: usize,
}

#[derive(Default)]
struct TxGenerations {
    current: HashMap<electrumx_core::Txid, Arc<str>>,
    current_bytes: usize,
    previous: HashMap<electrumx_core::Txid, Arc<str>>,
    /// Bumped by every clear: an answer looked up before one is not stored after it.
    generation: u64,
    lookups: u64,
    hits: u64,
}

impl TxCache {
    /// An empty cache holding about `max_bytes` of hex at most.
    pub fn new(max_bytes: usize) -> Self {
        TxCache {
            inner: Mutex::new(TxGenerations::default()),
            max_bytes,
        }
    }

    /// The hex of `txid`, if cached.
    pub fn get(&self, txid: &electrumx_core::Txid) -> Option<Arc<str>> {
        let mut g = self.inner.lock();
        g.lookups += 1;
        if let Some(hex) = g.current.get(txid).cloned() {
            g.hits += 1;
            return Some(hex);
        }
        let hex = g.previous.remove(txid)?;
        g.hits += 1;
        self.store(&mut g, *txid, hex.clone());
        Some(hex)
    }

    /// The current generation, to pass to [`TxCache::insert`].
    pub fn generation(&self) -> u64 {
        self.inner.lock().generation
    }

    /// Keeps the hex of a transaction found confirmed at `generation` (not if the cache was
    /// cleared since).
    pub fn insert(&self, txid: electrumx_core::Txid, hex: Arc<str>, generation: u64) {
        if hex.len() > self.max_bytes / 2 {
            return;
        }
        let mut g = self.inner.lock();
        if g.generation == generation {
            self.store(&mut g, txid, hex);
        }
    }

    fn store(&self, g: &mut TxGenerations, txid: electrumx_core::Txid, hex: Arc<str>) {
        if g.current_bytes + hex.len() > self.max_bytes / 2 {
            g.previous = std::mem::take(&mut g.current);
            g.current_bytes = 0;
        }
        g.current_bytes += hex.len();
        if let Some(old) = g.current.insert(txid, hex) {
            g.current_bytes -= old.len();
        }
    }

    /// Drops everything (the chain was reorganised).
    pub fn clear(&self) {
        let mut g = self.inner.lock();
        g.current.clear();
        g.previous.clear();
        g.current_bytes = 0;
        g.generation += 1;
    }

    /// Counters (size in bytes of hex).
    pub fn stats(&self) -> CacheStats {
        let g = self.inner.lock();
        CacheStats {
            lookups: g.lookups,
            hits: g.hits,
            entries: (g.current.len() + g.previous.len()) as u64,
            items: (g.current_bytes + g.previous.values().map(|h| h.len()).sum::<usize>()) as u64,
        }
    }
}

/// A long history's status hashing, saved after its confirmed entries.
#[derive(Clone)]
pub struct Midstate {
    /// SHA-256 state after the `txid:height:` lines of the first `confirmed` entries.
    pub engine: bitcoin::hashes::sha256::HashEngine,
    /// Confirmed entries hashed.
    pub confirmed: usize,
    /// Height of the last entry hashed.
    pub last_height: u32,
    /// Entries hashed at `last_height` (the next update reads from that height and skips
    /// them).
    pub at_last_height: usize,
}

/// Where the status hashing of long histories (over the history cache's limit) stands, so
/// the status of a script with millions of transactions is brought up to date by hashing
/// only the entries confirmed since: work in proportion to what changed. A block only
/// appends to a history, so a midstate stays valid until a reorg, which clears them all.
pub struct StatusMidstates {
    inner: Mutex<MidstateMap>,
    max_entries: usize,
}

#[derive(Default)]
struct MidstateMap {
    map: HashMap<HashX, Midstate>,
    /// Reorgs seen (a midstate computed across one is not stored).
    reorgs: u64,
}

impl StatusMidstates {
    /// Room for `max_entries` scripts (a midstate is about 120 bytes).
    pub fn new(max_entries: usize) -> Self {
        StatusMidstates {
            inner: Mutex::new(MidstateMap::default()),
            max_entries,
        }
    }

    /// The reorg count: read it before reading the index for a midstate to store.
    pub fn reorgs(&self) -> u64 {
        self.inner.lock().reorgs
    }

    /// The saved midstate of `hashx`.
    pub fn get(&self, hashx: &HashX) -> Option<Midstate> {
        self.inner.lock().map.get(hashx).cloned()
    }

    /// Saves a midstate computed from the index read after [`StatusMidstates::reorgs`]
    /// returned `reorgs` (ignored if a reorg came since).
    pub fn insert(&self, hashx: HashX, midstate: Midstate, reorgs: u64) {
        let mut inner = self.inner.lock();
        if inner.reorgs != reorgs {
            return;
        }
        if inner.map.len() >= self.max_entries && !inner.map.contains_key(&hashx) {
            // Full: start over (midstates are rebuilt by the next status of each).
            inner.map.clear();
        }
        inner.map.insert(hashx, midstate);
    }

    /// A reorg: every midstate may count entries taken back.
    pub fn clear(&self) {
        let mut inner = self.inner.lock();
        inner.reorgs += 1;
        inner.map.clear();
    }

    /// Scripts with a saved midstate.
    pub fn len(&self) -> usize {
        self.inner.lock().map.len()
    }

    /// Whether none is saved.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
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
    fn sized_lru_evicts_the_least_recently_used() {
        let mut lru: SizedLru<u32, &str> = SizedLru::new(10);
        lru.insert(1, "a", 4);
        lru.insert(2, "b", 4);
        assert_eq!(lru.get(&1), Some("a"), "1 is now the most recently used");
        lru.insert(3, "c", 4);
        assert_eq!(lru.get(&2), None, "2 was the least recently used");
        assert_eq!((lru.get(&1), lru.get(&3)), (Some("a"), Some("c")));
        // Replacing a value counts its new size only.
        lru.insert(1, "A", 6);
        assert_eq!(lru.stats().items, 10);
        assert_eq!(lru.get(&3), Some("c"));
        lru.remove(&1);
        assert_eq!(lru.stats().entries, 1);
        lru.insert(4, "d", 6);
        assert_eq!((lru.get(&3), lru.get(&4)), (Some("c"), Some("d")));
        // Too large alone: not stored, nothing evicted.
        lru.insert(5, "e", 11);
        assert_eq!((lru.get(&5), lru.stats().entries), (None, 2));
        lru.clear();
        lru.insert(6, "f", 10);
        assert_eq!(lru.get(&6), Some("f"));
    }

    #[test]
    fn stores_invalidates_and_evicts() {
        let c = ScriptCache::new(1000);
        let (a, b) = (HashX([1; 11]), HashX([2; 11]));
        let g = c.generation();
        c.insert(a, hist(100), g);
        assert_eq!(c.get(&a).unwrap().len(), 100);
        c.insert(b, hist(0), g);
        assert_eq!(
            c.get(&b).unwrap().len(),
            0,
            "empty histories are cached too"
        );
        c.insert(b, hist(251), g);
        assert_eq!(
            c.get(&b).unwrap().len(),
            0,
            "over a quarter of the cache: not stored"
        );
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
        assert!(c.stats().items <= 1000);
    }

    #[test]
    fn utxos_and_balances_follow_the_chain() {
        let c = ScriptCache::new(1000);
        let (a, b) = (HashX([1; 11]), HashX([2; 11]));
        let utxo = |value| Utxo {
            txid: Hash32([7; 32]),
            vout: 0,
            height: 5,
            value,
        };
        let g = c.generation();
        c.insert_utxos(a, Arc::new(vec![utxo(10), utxo(20)]), g);
        c.insert_balance(a, 30, g);
        c.insert_balance(b, 1, g);
        assert_eq!(c.get_utxos(&a).unwrap().len(), 2);
        assert_eq!((c.get_balance(&a), c.get_balance(&b)), (Some(30), Some(1)));
        // A block touching `a` drops its entries only; answers computed before it are refused.
        c.invalidate(&HashSet::from([a]));
        assert!(c.get_utxos(&a).is_none() && c.get_balance(&a).is_none());
        assert_eq!(c.get_balance(&b), Some(1));
        c.insert_utxos(a, Arc::new(vec![utxo(10)]), g);
        c.insert_balance(a, 10, g);
        assert!(c.get_utxos(&a).is_none() && c.get_balance(&a).is_none());
        assert_eq!((c.utxo_stats().hits, c.balance_stats().hits), (1, 3));
        c.clear();
        assert!(c.get_balance(&b).is_none());
    }

    #[test]
    fn renderings_follow_the_histories() {
        let c = ScriptCache::new(100_000);
        let a = HashX([1; 11]);
        let g = c.generation();
        c.insert_rendered(a, Arc::new("x".into()), 10, g);
        assert!(
            c.get_rendered(&a).is_none(),
            "short histories are not kept rendered"
        );
        c.insert_rendered(a, Arc::new("x".into()), RENDER_MIN_LEN, g);
        assert_eq!(c.get_rendered(&a).unwrap().as_str(), "x");
        c.invalidate(&HashSet::from([a]));
        assert!(c.get_rendered(&a).is_none());
        c.insert_rendered(a, Arc::new("x".into()), RENDER_MIN_LEN, g);
        assert!(
            c.get_rendered(&a).is_none(),
            "rendered before the change: not stored"
        );
    }

    #[test]
    fn tx_cache_keeps_recent_transactions_within_its_bound() {
        let txid = |i: u8| electrumx_core::Hash32([i; 32]);
        let cache = TxCache::new(400);
        for i in 0..10u8 {
            cache.insert(txid(i), Arc::from("ab".repeat(50)), cache.generation());
        }
        let stats = cache.stats();
        assert!(stats.items <= 400, "{stats:?}");
        assert!(cache.get(&txid(9)).is_some(), "the newest stays");
        assert!(cache.get(&txid(0)).is_none(), "the oldest went");
        // A hit in the previous generation moves the entry to the current one.
        let kept = (0..10u8)
            .rev()
            .find(|i| cache.get(&txid(*i)).is_some())
            .unwrap();
        for i in 20..22u8 {
            cache.insert(txid(i), Arc::from("ab".repeat(50)), cache.generation());
        }
        assert!(cache.get(&txid(kept)).is_some());
        let before = cache.generation();
        cache.clear();
        assert!(cache.get(&txid(9)).is_none());
        cache.insert(txid(9), Arc::from("ab"), before);
        assert!(
            cache.get(&txid(9)).is_none(),
            "looked up before the clear: not kept"
        );
    }
}
