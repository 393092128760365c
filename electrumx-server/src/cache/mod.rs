//! What the server keeps to answer again without redoing the work: per-script answers
//! (histories, balances, UTXOs, rendered JSON, status midstates), raw transactions, block
//! merkle trees, rendered header chunks, and the node's answers per block.
//!
//! Every cache is bounded, and every entry is dropped (or keyed so that it cannot be
//! served) once a block or reorg makes it stale; see each module.

pub mod header_chunks;
pub mod header_tree;
pub mod merkle;
pub mod node_calls;
mod scripts;

pub use scripts::{
    CacheStats, Midstate, RENDER_MIN_LEN, ScriptCache, SizedLru, StatusMidstates, TxCache,
};
