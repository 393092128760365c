//! The index proper: the block processor that writes it and the query side that reads it.

mod cache;
mod pending;
pub(crate) mod processor;
mod query;

pub(crate) use processor::{BlockProcessor, PreparedBlock, ProcessorOptions};
pub use query::{ChainIndex, HistoryItem, Index, Utxo};
