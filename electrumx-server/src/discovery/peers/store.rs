//! Known peers kept across restarts (not in ElectrumX, which starts from its seed list
//! every time): `peers.json` in `DB_DIRECTORY`, a JSON list of [`Peer::serialize`]
//! records, written atomically (temporary file, fsync, rename).

use super::peer::Peer;
use serde_json::Value;
use std::io::Write;
use std::path::Path;

/// File name inside `DB_DIRECTORY`.
pub const FILE_NAME: &str = "peers.json";
/// Largest file read back.
const MAX_BYTES: u64 = 16 << 20;

/// Reads the saved peers; a missing file is an empty list, a damaged one is logged and
/// ignored.
pub fn load(path: &Path) -> Vec<Peer> {
    let text = match std::fs::metadata(path) {
        Err(_) => return Vec::new(),
        Ok(m) if m.len() > MAX_BYTES => {
            tracing::warn!("{} is over {MAX_BYTES} bytes; ignored", path.display());
            return Vec::new();
        }
        Ok(_) => match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!("cannot read {}: {e}", path.display());
                return Vec::new();
            }
        },
    };
    match serde_json::from_str::<Value>(&text) {
        Ok(Value::Array(items)) => items.iter().filter_map(Peer::deserialize).collect(),
        _ => {
            tracing::warn!("{} is not a list of peers; ignored", path.display());
            Vec::new()
        }
    }
}

/// Writes `peers` to `path` atomically.
pub fn save(path: &Path, peers: &[Peer]) -> std::io::Result<()> {
    let list: Vec<Value> = peers.iter().map(Peer::serialize).collect();
    let text = serde_json::to_string_pretty(&list)?;
    let tmp = path.with_extension("json.tmp");
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent()
        && let Ok(d) = std::fs::File::open(dir)
    {
        let _ = d.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_damage() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        assert!(load(&path).is_empty());
        let mut p = Peer::from_real_name("a.example.com v1.4 s t", "RPC", 50001, 50002);
        p.last_good = 1234.5;
        p.try_count = 2;
        p.ip_addr = Some("1.2.3.4".parse().unwrap());
        save(&path, std::slice::from_ref(&p)).unwrap();
        let back = load(&path);
        assert_eq!(back.len(), 1);
        assert_eq!(back[0].host, p.host);
        assert_eq!(back[0].features, p.features);
        assert_eq!((back[0].last_good, back[0].try_count), (1234.5, 2));
        assert_eq!(back[0].ip_addr, p.ip_addr);
        std::fs::write(&path, "{").unwrap();
        assert!(load(&path).is_empty());
    }
}
