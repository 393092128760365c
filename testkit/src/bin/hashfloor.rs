//! `hashfloor`: the read-and-hash floor of a sync from block files. Reads every
//! `blk*.dat` file of a directory (removing `xor.dat`'s obfuscation), and parses every block
//! in it, which computes every txid and checks every merkle root, on as many threads as
//! there are cores (files shared out in turn), and does nothing else. Prints
//! `blocks txs bytes seconds`.
//!
//! Usage: `hashfloor BLOCKS_DIR`

use anyhow::{Context, Result};
use electrumx_core::parse::ParsedBlock;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;

fn main() -> Result<()> {
    let dir = PathBuf::from(
        std::env::args()
            .nth(1)
            .context("usage: hashfloor BLOCKS_DIR")?,
    );
    let key: [u8; 8] = match std::fs::read(dir.join("xor.dat")) {
        Ok(k) => k.as_slice().try_into().context("xor.dat: 8 bytes")?,
        Err(_) => [0; 8],
    };
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("blk") && n.ends_with(".dat"))
        })
        .collect();
    files.sort();
    let started = Instant::now();
    let next = AtomicUsize::new(0);
    let (blocks, txs, bytes) = (AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0));
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    std::thread::scope(|s| -> Result<()> {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| -> Result<()> {
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(path) = files.get(i) else {
                            return Ok(());
                        };
                        let mut data = std::fs::read(path)?;
                        bytes.fetch_add(data.len() as u64, Ordering::Relaxed);
                        if key != [0; 8] {
                            for (i, b) in data.iter_mut().enumerate() {
                                *b ^= key[i % 8];
                            }
                        }
                        let mut pos = 0;
                        while pos + 8 <= data.len() && data[pos..pos + 4] != [0; 4] {
                            let len =
                                u32::from_le_bytes(data[pos + 4..pos + 8].try_into()?) as usize;
                            let raw = data
                                .get(pos + 8..pos + 8 + len)
                                .context("cut-off block")?
                                .to_vec();
                            let block = ParsedBlock::parse(raw)?;
                            blocks.fetch_add(1, Ordering::Relaxed);
                            txs.fetch_add(block.txs.len() as u64, Ordering::Relaxed);
                            pos += 8 + len;
                        }
                    }
                })
            })
            .collect();
        workers
            .into_iter()
            .try_for_each(|w| w.join().expect("hashfloor worker panicked"))
    })?;
    println!(
        "{} {} {} {:.2}",
        blocks.into_inner(),
        txs.into_inner(),
        bytes.into_inner(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
