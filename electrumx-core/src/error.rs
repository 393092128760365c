//! Typed errors of the library.

use std::path::PathBuf;

/// Errors from talking to the node (or another block source).
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The node could not be reached or answered with a temporary failure; retrying may help.
    #[error("daemon temporarily unavailable: {0}")]
    Unavailable(String),
    /// The node answered with a JSON-RPC error.
    #[error("daemon RPC error {code}: {message}")]
    Rpc {
        /// JSON-RPC error code.
        code: i64,
        /// The node's message text.
        message: String,
    },
    /// The node's answer could not be understood.
    #[error("bad daemon response: {0}")]
    BadResponse(String),
    /// Authentication failed (wrong credentials or unreadable cookie).
    #[error("daemon authentication failed: {0}")]
    Auth(String),
    /// Configuration of the daemon client is invalid.
    #[error("daemon configuration: {0}")]
    Config(String),
    /// The client is shutting down.
    #[error("daemon client cancelled")]
    Cancelled,
}

impl DaemonError {
    /// True for failures worth retrying (node down, warming up, HTTP 5xx).
    pub fn is_temporary(&self) -> bool {
        match self {
            DaemonError::Unavailable(_) => true,
            DaemonError::Rpc { code, .. } => *code == -28,
            _ => false,
        }
    }
}

/// Errors from parsing raw blocks and transactions.
#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    /// The input ended before the structure was complete.
    #[error("unexpected end of data at offset {0}")]
    Truncated(usize),
    /// A length or count is out of any plausible range.
    #[error("implausible {what} {value} at offset {offset}")]
    Implausible {
        /// Which field.
        what: &'static str,
        /// Its value.
        value: u64,
        /// Byte offset.
        offset: usize,
    },
    /// Bytes were left after the last transaction.
    #[error("{0} trailing bytes after block")]
    Trailing(usize),
    /// The header's merkle root does not match the transactions.
    #[error("merkle root mismatch")]
    MerkleMismatch,
}

/// Errors of the index (database, consistency, configuration).
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    /// RocksDB failed.
    #[error("database error: {0}")]
    Db(#[from] rocksdb::Error),
    /// The database on disk was written by an incompatible version.
    #[error(
        "database at {path} has format version {found}, this build needs {expected}; \
         move it away or point DB_DIRECTORY elsewhere to index from scratch"
    )]
    FormatVersion {
        /// DB directory.
        path: PathBuf,
        /// Version found on disk.
        found: u32,
        /// Version this build writes.
        expected: u32,
    },
    /// The database belongs to another coin or network.
    #[error(
        "database at {path} is for genesis {found}, but the configured network's genesis is {expected}"
    )]
    WrongChain {
        /// DB directory.
        path: PathBuf,
        /// Genesis stored.
        found: String,
        /// Genesis expected.
        expected: String,
    },
    /// The stored data is inconsistent (a bug or disk corruption).
    #[error("database corrupt: {0}")]
    Corrupt(String),
    /// A block could not be parsed.
    #[error("block at height {height}: {source}")]
    Parse {
        /// Height of the block.
        height: u32,
        /// The parse failure.
        source: ParseError,
    },
    /// A transaction input spends an output the index does not know.
    #[error("block at height {height}: input spends unknown output {txid}:{vout}")]
    MissingPrevout {
        /// Height of the spending block.
        height: u32,
        /// Funding txid (display order).
        txid: String,
        /// Output index.
        vout: u32,
    },
    /// A chain reorganisation is deeper than the undo information kept.
    #[error(
        "reorg of at least {depth} blocks below height {tip} exceeds REORG_LIMIT {limit}; \
         the database is consistent at height {tip}, but cannot follow the node's chain"
    )]
    ReorgTooDeep {
        /// Current indexed tip.
        tip: u32,
        /// Depth needed (lower bound).
        depth: u32,
        /// Configured limit.
        limit: u32,
    },
    /// The node's chain does not fit the index (e.g. different genesis).
    #[error("chain mismatch: {0}")]
    ChainMismatch(String),
    /// The block source failed.
    #[error(transparent)]
    Daemon(#[from] DaemonError),
    /// Invalid configuration.
    #[error("configuration: {0}")]
    Config(String),
    /// I/O failure outside the database.
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// The index is shutting down.
    #[error("shutting down")]
    ShuttingDown,
    /// The sync loop stopped with an error (its message).
    #[error("sync stopped: {0}")]
    SyncStopped(String),
    /// A background task of the library panicked or was cancelled (what it was doing).
    #[error("background task failed: {0}")]
    Task(String),
}

/// A setting the library cannot use (`COIN`, `NET`, `DAEMON_URL`); the message names it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SettingError {
    /// `COIN` names no coin we index.
    #[error("COIN: unknown coin {0:?} (expected Bitcoin or BitcoinSV)")]
    UnknownCoin(String),
    /// `NET` names no network.
    #[error("NET: unknown network {0:?} (expected mainnet, testnet, testnet4, signet or regtest)")]
    UnknownNetwork(String),
    /// The coin has no such network.
    #[error("COIN/NET: {coin} has no {network} network")]
    NoSuchNetwork {
        /// The coin's name.
        coin: &'static str,
        /// The network's name.
        network: &'static str,
    },
    /// A node URL cannot be used (the reason).
    #[error("{0}")]
    DaemonUrl(String),
}

/// Result alias for index operations.
pub type Result<T, E = IndexError> = std::result::Result<T, E>;
