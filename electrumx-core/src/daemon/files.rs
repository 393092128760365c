//! A block source that reads blocks from disk instead of a node: either a directory of
//! `HHHHHHH-<hash>.bin` files (one raw block each, as in the project's test data) or
//! Bitcoin Core's `blk*.dat` files (magic + length framing). The best chain is rebuilt by
//! following previous-block hashes from the genesis block, so `blk*.dat` files with blocks
//! out of order or stale blocks work too. Useful for indexing offline and for tests.

use super::{Daemon, DaemonResult};
use crate::error::DaemonError;
use crate::hash::{BlockHash, Hash32};
use crate::parse::{HEADER_LEN, prev_hash_of};
use async_trait::async_trait;
use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

#[derive(Clone)]
struct Location {
    file: usize,
    offset: u64,
    len: u32,
}

/// Reads blocks from files (see the module docs).
pub struct BlockFileDaemon {
    dir: PathBuf,
    files: Vec<PathBuf>,
    chain: Vec<BlockHash>,
    locations: HashMap<BlockHash, Location>,
}

impl BlockFileDaemon {
    /// Scans `dir` and builds the best chain starting at `genesis`.
    pub fn open(dir: &Path, genesis: BlockHash) -> Result<Self, DaemonError> {
        let io = |e: std::io::Error| DaemonError::config_from(dir.display().to_string(), e);
        let mut names: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(io)?
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.is_file())
            .collect();
        names.sort();
        let mut files = Vec::new();
        let mut locations = HashMap::new();
        let mut children: HashMap<BlockHash, Vec<BlockHash>> = HashMap::new();
        for path in names {
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("")
                .to_string();
            let file_index = files.len();
            if name.ends_with(".bin") {
                let len = std::fs::metadata(&path).map_err(io)?.len();
                let header = read_at(&path, 0, HEADER_LEN)?;
                let header: [u8; HEADER_LEN] = header.try_into().expect("80 bytes");
                add_block(
                    &mut children,
                    &mut locations,
                    &header,
                    Location {
                        file: file_index,
                        offset: 0,
                        len: len as u32,
                    },
                );
                files.push(path);
            } else if name.starts_with("blk") && name.ends_with(".dat") {
                // Read only the framing and the header of each block, skipping its body.
                let file = std::fs::File::open(&path).map_err(io)?;
                let size = file.metadata().map_err(io)?.len();
                let mut r = std::io::BufReader::new(file);
                let mut pos = 0u64;
                let mut frame = [0u8; 8 + HEADER_LEN];
                while pos + frame.len() as u64 <= size {
                    r.read_exact(&mut frame).map_err(io)?;
                    if frame[..4] == [0, 0, 0, 0] {
                        break; // preallocated tail of the file
                    }
                    let len = u32::from_le_bytes(frame[4..8].try_into().expect("4 bytes")) as u64;
                    let start = pos + 8;
                    if len < HEADER_LEN as u64 || start + len > size {
                        break;
                    }
                    let header: [u8; HEADER_LEN] = frame[8..].try_into().expect("80 bytes");
                    add_block(
                        &mut children,
                        &mut locations,
                        &header,
                        Location {
                            file: file_index,
                            offset: start,
                            len: len as u32,
                        },
                    );
                    pos = start + len;
                    r.seek(SeekFrom::Start(pos)).map_err(io)?;
                }
                files.push(path);
            }
        }
        if !locations.contains_key(&genesis) {
            return Err(DaemonError::config(format!(
                "{}: no genesis block {genesis}",
                dir.display()
            )));
        }
        let chain = longest_chain(genesis, &children);
        Ok(BlockFileDaemon {
            dir: dir.into(),
            files,
            chain,
            locations,
        })
    }
}

/// Records a block found on disk: its location, and its place under its parent.
fn add_block(
    children: &mut HashMap<BlockHash, Vec<BlockHash>>,
    locations: &mut HashMap<BlockHash, Location>,
    header: &[u8; HEADER_LEN],
    location: Location,
) {
    let hash = Hash32::sha256d(header);
    children.entry(prev_hash_of(header)).or_default().push(hash);
    locations.insert(hash, location);
}

/// The longest chain from `genesis` through the `children` links (iterative depth search).
fn longest_chain(
    genesis: BlockHash,
    children: &HashMap<BlockHash, Vec<BlockHash>>,
) -> Vec<BlockHash> {
    let mut depth: HashMap<BlockHash, (u32, Option<BlockHash>)> = HashMap::new();
    depth.insert(genesis, (0, None));
    let mut stack = vec![genesis];
    let mut best = (0u32, genesis);
    while let Some(h) = stack.pop() {
        let d = depth[&h].0;
        for c in children.get(&h).into_iter().flatten() {
            if c != &h && !depth.contains_key(c) {
                depth.insert(*c, (d + 1, Some(h)));
                if d + 1 > best.0 {
                    best = (d + 1, *c);
                }
                stack.push(*c);
            }
        }
    }
    let mut chain = vec![best.1];
    while let Some((_, Some(parent))) = depth.get(chain.last().expect("non-empty")) {
        chain.push(*parent);
    }
    chain.reverse();
    chain
}

fn read_at(path: &Path, offset: u64, len: usize) -> Result<Vec<u8>, DaemonError> {
    let io = |e: std::io::Error| DaemonError::unavailable_from(path.display().to_string(), e);
    let mut f = std::fs::File::open(path).map_err(io)?;
    f.seek(SeekFrom::Start(offset)).map_err(io)?;
    let mut buf = vec![0u8; len];
    f.read_exact(&mut buf).map_err(io)?;
    Ok(buf)
}

#[async_trait]
impl Daemon for BlockFileDaemon {
    async fn height(&self) -> DaemonResult<u32> {
        Ok(self.chain.len() as u32 - 1)
    }

    async fn block_hashes(&self, first: u32, count: u32) -> DaemonResult<Vec<BlockHash>> {
        (first..first.saturating_add(count))
            .map(|h| {
                self.chain
                    .get(h as usize)
                    .copied()
                    .ok_or_else(|| DaemonError::Rpc {
                        code: -8,
                        message: "Block height out of range".into(),
                    })
            })
            .collect()
    }

    async fn raw_blocks(&self, hashes: &[BlockHash]) -> DaemonResult<Vec<Vec<u8>>> {
        hashes
            .iter()
            .map(|h| {
                let loc = self.locations.get(h).ok_or_else(|| DaemonError::Rpc {
                    code: -5,
                    message: "Block not found".into(),
                })?;
                read_at(&self.files[loc.file], loc.offset, loc.len as usize)
            })
            .collect()
    }

    fn describe(&self) -> String {
        format!("block files in {}", self.dir.display())
    }
}
