//! Typed errors of the library.

use std::path::PathBuf;

/// An underlying error kept as the [`source`](std::error::Error::source) of one of ours.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Errors from talking to the node (or another block source).
///
/// The underlying failure (HTTP, I/O, JSON), where there is one, is kept as the error's
/// [`source`](std::error::Error::source); `Display` shows only this level (print the chain,
/// e.g. with `anyhow`'s `{:#}`, for the whole story).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DaemonError {
    /// The node could not be reached or answered with a temporary failure; retrying may help.
    #[error("daemon temporarily unavailable: {message}")]
    Unavailable {
        /// What failed (the URL or file, and the step).
        message: String,
        /// The underlying failure, if any.
        #[source]
        source: Option<BoxError>,
    },
    /// The node answered with a JSON-RPC error.
    #[error("daemon RPC error {code}: {message}")]
    Rpc {
        /// JSON-RPC error code.
        code: i64,
        /// The node's message text.
        message: String,
    },
    /// The node's answer could not be understood.
    #[error("bad daemon response: {message}")]
    BadResponse {
        /// What was wrong with it.
        message: String,
        /// The underlying failure (JSON, hex decoding), if any.
        #[source]
        source: Option<BoxError>,
    },
    /// Authentication failed (wrong credentials or unreadable cookie).
    #[error("daemon authentication failed: {0}")]
    Auth(String),
    /// Configuration of the daemon client is invalid.
    #[error("daemon configuration: {message}")]
    Config {
        /// What is wrong.
        message: String,
        /// The underlying failure (building the HTTP client, reading a directory), if any.
        #[source]
        source: Option<BoxError>,
    },
    /// The client is shutting down.
    #[error("daemon client cancelled")]
    Cancelled,
}

impl DaemonError {
    /// True for failures worth retrying (node down, warming up, HTTP 5xx).
    pub fn is_temporary(&self) -> bool {
        match self {
            DaemonError::Unavailable { .. } => true,
            DaemonError::Rpc { code, .. } => *code == -28,
            _ => false,
        }
    }

    /// [`DaemonError::Unavailable`] without an underlying error.
    pub fn unavailable(message: impl Into<String>) -> Self {
        DaemonError::Unavailable {
            message: message.into(),
            source: None,
        }
    }

    /// [`DaemonError::Unavailable`] caused by `source`.
    pub fn unavailable_from(message: impl Into<String>, source: impl Into<BoxError>) -> Self {
        DaemonError::Unavailable {
            message: message.into(),
            source: Some(source.into()),
        }
    }

    /// [`DaemonError::BadResponse`] without an underlying error.
    pub fn bad_response(message: impl Into<String>) -> Self {
        DaemonError::BadResponse {
            message: message.into(),
            source: None,
        }
    }

    /// [`DaemonError::BadResponse`] caused by `source`.
    pub fn bad_response_from(message: impl Into<String>, source: impl Into<BoxError>) -> Self {
        DaemonError::BadResponse {
            message: message.into(),
            source: Some(source.into()),
        }
    }

    /// [`DaemonError::Config`] without an underlying error.
    pub fn config(message: impl Into<String>) -> Self {
        DaemonError::Config {
            message: message.into(),
            source: None,
        }
    }

    /// [`DaemonError::Config`] caused by `source`.
    pub fn config_from(message: impl Into<String>, source: impl Into<BoxError>) -> Self {
        DaemonError::Config {
            message: message.into(),
            source: Some(source.into()),
        }
    }
}

/// `e` and its sources, joined with `": "` (for logs and status strings).
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s
}

/// Errors from parsing raw blocks and transactions.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
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

/// A failure of the database engine (opaque: the engine is an implementation detail).
#[derive(Debug)]
pub struct DbError(rocksdb::Error);

impl DbError {
    /// The engine's message.
    pub fn message(&self) -> String {
        self.0.to_string()
    }
}

impl std::fmt::Display for DbError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "database error: {}", self.0)
    }
}

impl std::error::Error for DbError {}

/// Converts the engine's errors (crate-private: `?` on a RocksDB result goes through here).
pub(crate) trait DbResultExt<T> {
    /// The result with a RocksDB error turned into [`IndexError::Db`].
    fn db(self) -> Result<T, IndexError>;
}

impl<T> DbResultExt<T> for std::result::Result<T, rocksdb::Error> {
    fn db(self) -> Result<T, IndexError> {
        self.map_err(|e| IndexError::Db(DbError(e)))
    }
}

/// Misuse of a [`Controller`](crate::Controller)'s lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LifecycleError {
    /// [`Controller::start`](crate::Controller::start) was called a second time.
    #[error("the controller is already started")]
    AlreadyStarted,
    /// The controller was stopped; a stopped controller is not restarted (build a new one).
    #[error("the controller was stopped")]
    Stopped,
    /// [`Controller::start`](crate::Controller::start) was called outside a Tokio runtime.
    #[error("Controller::start needs a Tokio runtime")]
    NoRuntime,
}

/// A required setting of the [`ControllerBuilder`](crate::ControllerBuilder) is missing or
/// two settings conflict.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// A required setting was not given (its builder method).
    #[error("ControllerBuilder: {0} not set")]
    Missing(&'static str),
    /// A setting has a value that cannot be used (which, and why).
    #[error("ControllerBuilder: {0}")]
    Invalid(String),
    /// Two settings set the same thing (the builder methods).
    #[error("ControllerBuilder: {0} and {1} both set the same option; set it once")]
    Conflict(&'static str, &'static str),
}

/// Errors of the index (database, consistency, configuration).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IndexError {
    /// The database engine failed.
    #[error(transparent)]
    Db(DbError),
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
    /// The controller was built with missing or conflicting settings.
    #[error(transparent)]
    Build(#[from] BuildError),
    /// The controller was used out of order (started twice, used after a stop).
    #[error(transparent)]
    Lifecycle(#[from] LifecycleError),
    /// I/O failure outside the database.
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// The index is shutting down.
    #[error("shutting down")]
    ShuttingDown,
    /// The sync loop stopped with an error (its message).
    #[error("sync stopped: {0}")]
    SyncStopped(String),
    /// A thread or task of the library panicked: a bug, not a problem of the database.
    #[error("{task} panicked: {message}")]
    Panic {
        /// What was running (`"sync loop"`, `"flush"`, ...).
        task: &'static str,
        /// The panic's message, if it had one.
        message: String,
    },
    /// A task of the library was cancelled before it finished (its runtime shut down).
    #[error("{0} was cancelled")]
    Cancelled(&'static str),
    /// A snapshot ([`Controller::snapshot`](crate::Controller::snapshot)) was refused.
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
}

/// Why [`Controller::snapshot`](crate::Controller::snapshot) refused to take a snapshot
/// (nothing was written).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SnapshotError {
    /// The target exists and is not an empty directory.
    #[error("snapshot target {0} already exists and is not an empty directory")]
    TargetExists(PathBuf),
    /// The initial sync has not finished: until it has, the database is bulk-loaded in
    /// steps that a copy could cut in two, so no snapshot is taken.
    #[error(
        "the initial sync is still running (indexed height {height:?}); \
         take a snapshot once the index has caught up with its node"
    )]
    InitialSync {
        /// The committed height so far (`None`: nothing indexed yet).
        height: Option<u32>,
    },
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

impl IndexError {
    /// [`IndexError::Panic`] from a panic's payload (as `JoinHandle::join` returns it).
    pub(crate) fn panic(task: &'static str, payload: &(dyn std::any::Any + Send)) -> Self {
        let message = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_default();
        IndexError::Panic { task, message }
    }

    /// An error for a Tokio task that did not finish: it panicked or was cancelled.
    pub(crate) fn join(task: &'static str, e: tokio::task::JoinError) -> Self {
        match e.try_into_panic() {
            Ok(payload) => IndexError::panic(task, &*payload),
            Err(_) => IndexError::Cancelled(task),
        }
    }
}

/// Result alias for index operations.
pub type Result<T, E = IndexError> = std::result::Result<T, E>;
