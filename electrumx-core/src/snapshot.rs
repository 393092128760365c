//! Consistent snapshots of the index ([`crate::Controller::snapshot`]): a RocksDB checkpoint
//! taken between two commits, and a small metadata file describing it.
//!
//! A snapshot directory is a database directory: a server (or a [`crate::Controller`])
//! started with it as its `DB_DIRECTORY` checks its format and genesis, and resumes from
//! its height. Nothing in it is tied to the host it was taken on: RocksDB's lock file and
//! info logs are not part of a checkpoint (they are created anew at open), and its
//! `OPTIONS` file is informative (the options are set by the code at each open).

use crate::coin::CoinParams;
use crate::error::{IndexError, Result, SnapshotError};
use crate::hash::BlockHash;
use crate::store::Store;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// What a snapshot holds, as recorded in its metadata file.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct SnapshotInfo {
    /// The snapshot's directory.
    pub dir: PathBuf,
    /// Height of the tip it holds.
    pub height: u32,
    /// Hash of that tip.
    pub tip_hash: BlockHash,
    /// Transactions indexed up to that tip.
    pub tx_count: u64,
    /// Database format version ([`crate::Controller`]s of another format refuse to open it).
    pub db_version: u32,
    /// Genesis hash of the chain indexed.
    pub genesis: BlockHash,
    /// Coin name (`COIN`, ElectrumX's spelling).
    pub coin: String,
    /// Network name (`NET`).
    pub network: String,
    /// When it was taken, in seconds since the Unix epoch.
    pub created_unix: u64,
    /// The version of `electrumx-core` that took it.
    pub software_version: String,
    /// Bytes in the snapshot directory (hard-linked files count in full).
    pub bytes: u64,
    /// How long taking it took.
    pub duration: Duration,
}

/// The metadata file's layout.
#[derive(Serialize, Deserialize)]
struct MetadataFile {
    height: u32,
    tip_hash: String,
    tx_count: u64,
    db_version: u32,
    genesis: String,
    coin: String,
    network: String,
    created: String,
    created_unix: u64,
    software: String,
    bytes: u64,
    seconds: f64,
}

impl SnapshotInfo {
    /// Name of the metadata file written into a snapshot directory (JSON, see
    /// [`SnapshotInfo::to_json`]). It stays in a database directory seeded from the
    /// snapshot, where nothing reads it but [`SnapshotInfo::read`].
    pub const FILE_NAME: &str = "electrumx-snapshot.json";

    /// The metadata as the JSON object written to [`SnapshotInfo::FILE_NAME`]: `height`, `tip_hash`,
    /// `tx_count`, `db_version`, `genesis`, `coin`, `network`, `created` (UTC, RFC 3339),
    /// `created_unix`, `software`, `bytes`, `seconds`.
    pub fn to_json(&self) -> String {
        let file = MetadataFile {
            height: self.height,
            tip_hash: self.tip_hash.to_display_hex(),
            tx_count: self.tx_count,
            db_version: self.db_version,
            genesis: self.genesis.to_display_hex(),
            coin: self.coin.clone(),
            network: self.network.clone(),
            created: rfc3339(self.created_unix),
            created_unix: self.created_unix,
            software: format!("electrumx-rs {}", self.software_version),
            bytes: self.bytes,
            seconds: (self.duration.as_secs_f64() * 1000.0).round() / 1000.0,
        };
        serde_json::to_string_pretty(&file).expect("metadata serializes")
    }

    /// Reads the metadata file of the snapshot in `dir` (or of a database directory seeded
    /// from one).
    pub fn read(dir: impl AsRef<Path>) -> Result<SnapshotInfo> {
        let dir = dir.as_ref();
        let bytes = std::fs::read(dir.join(Self::FILE_NAME))?;
        let bad = |what: &str| IndexError::Corrupt(format!("snapshot metadata: {what}"));
        let f: MetadataFile = serde_json::from_slice(&bytes).map_err(|e| bad(&e.to_string()))?;
        Ok(SnapshotInfo {
            dir: dir.into(),
            height: f.height,
            tip_hash: BlockHash::from_display_hex(&f.tip_hash).ok_or_else(|| bad("tip_hash"))?,
            tx_count: f.tx_count,
            db_version: f.db_version,
            genesis: BlockHash::from_display_hex(&f.genesis).ok_or_else(|| bad("genesis"))?,
            coin: f.coin,
            network: f.network,
            created_unix: f.created_unix,
            software_version: f
                .software
                .strip_prefix("electrumx-rs ")
                .unwrap_or(&f.software)
                .to_string(),
            bytes: f.bytes,
            duration: Duration::from_secs_f64(f.seconds.max(0.0)),
        })
    }
}

/// Takes a snapshot of `store` into `dir` (see [`crate::Controller::snapshot`]).
pub(crate) fn take(store: &Store, coin: &CoinParams, dir: &Path) -> Result<SnapshotInfo> {
    let started = Instant::now();
    store.snapshot_allowed()?;
    prepare_target(dir)?;
    let (meta, tip_hash) = match store.checkpoint(dir) {
        Ok(r) => r,
        Err(e) => {
            // A checkpoint that failed part way (a full disk) leaves nothing half-written
            // behind that a later start could take for a database.
            if !matches!(e, IndexError::Snapshot(_)) && dir.exists() {
                let _ = std::fs::remove_dir_all(dir);
            }
            return Err(e);
        }
    };
    let mut info = SnapshotInfo {
        dir: dir.into(),
        height: meta.block_count - 1,
        tip_hash,
        tx_count: meta.tx_count,
        db_version: meta.db_version,
        genesis: coin.genesis_hash,
        coin: coin.coin.name().into(),
        network: coin.network.name().into(),
        created_unix: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        software_version: env!("CARGO_PKG_VERSION").into(),
        bytes: dir_size(dir),
        duration: Duration::ZERO,
    };
    info.duration = started.elapsed();
    let tmp = dir.join(format!("{}.tmp", SnapshotInfo::FILE_NAME));
    std::fs::write(&tmp, info.to_json())?;
    std::fs::rename(&tmp, dir.join(SnapshotInfo::FILE_NAME))?;
    tracing::info!(
        dir = %dir.display(),
        height = info.height,
        tip = %info.tip_hash,
        mb = info.bytes >> 20,
        secs = format!("{:.2}", info.duration.as_secs_f64()),
        "snapshot taken"
    );
    Ok(info)
}

/// Checks that `dir` does not exist or is an empty directory (removed then: RocksDB creates
/// the checkpoint's directory itself), and creates its parent.
fn prepare_target(dir: &Path) -> Result<()> {
    match std::fs::symlink_metadata(dir) {
        Ok(m) if m.is_dir() => {
            if std::fs::read_dir(dir)?.next().is_some() {
                return Err(SnapshotError::TargetExists(dir.into()).into());
            }
            std::fs::remove_dir(dir)?;
        }
        Ok(_) => return Err(SnapshotError::TargetExists(dir.into()).into()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e.into()),
    }
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)?;
    }
    Ok(())
}

fn dir_size(p: &Path) -> u64 {
    std::fs::read_dir(p)
        .map(|rd| {
            rd.flatten()
                .map(|e| match e.metadata() {
                    Ok(m) if m.is_dir() => dir_size(&e.path()),
                    Ok(m) => m.len(),
                    Err(_) => 0,
                })
                .sum()
        })
        .unwrap_or(0)
}

/// `secs` since the epoch as `YYYY-MM-DDTHH:MM:SSZ`.
fn rfc3339(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_735_689_599), "2024-12-31T23:59:59Z");
    }

    #[test]
    fn target_must_be_absent_or_empty() {
        let d = tempfile::tempdir().unwrap();
        let empty = d.path().join("empty");
        std::fs::create_dir(&empty).unwrap();
        prepare_target(&empty).unwrap();
        assert!(
            !empty.exists(),
            "an empty target is left for RocksDB to create"
        );
        prepare_target(&d.path().join("a/b/c")).unwrap();
        assert!(d.path().join("a/b").is_dir());
        std::fs::write(d.path().join("a/b/file"), b"x").unwrap();
        for taken in [d.path().join("a/b"), d.path().join("a/b/file")] {
            match prepare_target(&taken) {
                Err(IndexError::Snapshot(SnapshotError::TargetExists(p))) => assert_eq!(p, taken),
                other => panic!("{other:?}"),
            }
        }
    }
}
