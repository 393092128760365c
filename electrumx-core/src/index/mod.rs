//! The index proper: the block processor that writes it and the query side that reads it.

mod cache;
mod pending;
pub mod processor;
pub mod query;

pub use processor::{BlockProcessor, PreparedBlock, ProcessorOptions, Touched};
pub use query::{ChainIndex, HistoryItem, Index, Utxo};
