//! `fetchfloor`: the raw fetch floor of a sync. Downloads every raw block of a node's chain
//! with the same batched, concurrent requests the prefetcher makes, and does nothing else.
//! Prints `blocks bytes seconds`. With a node's `blocks/` directory as third argument, the
//! blocks are read from its files instead (`HybridDaemon`: the file phase's floor, with the
//! hash check and the file scan, without parsing).
//!
//! Usage: `fetchfloor URL COOKIE_FILE [BLOCKS_DIR]`

use anyhow::{Context, Result};
use electrumx_core::daemon::{Daemon, DaemonUrl, HybridDaemon, RpcDaemon, RpcDaemonConfig};
use futures_util::StreamExt;
use std::sync::Arc;
use std::time::Instant;

#[tokio::main]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let url = args.get(1).context("usage: fetchfloor URL COOKIE_FILE")?;
    let mut cfg =
        RpcDaemonConfig::new(DaemonUrl::parse_list(url, 18332).map_err(anyhow::Error::msg)?);
    cfg.cookie_file = args.get(2).map(Into::into);
    let rpc = Arc::new(RpcDaemon::new(cfg, Default::default())?);
    let genesis = rpc.block_hashes(0, 1).await?[0];
    let started = Instant::now();
    let (daemon, files): (Arc<dyn Daemon>, _) = match args.get(3) {
        Some(dir) => {
            let d = Arc::new(HybridDaemon::new(rpc, dir.as_ref(), genesis)?.with_near_tip(0));
            (d.clone(), Some(d))
        }
        None => (rpc, None),
    };
    let tip = daemon.height().await?;
    let ranges: Vec<(u32, u32)> = (0..=tip)
        .step_by(100)
        .map(|h| (h, 100.min(tip - h + 1)))
        .collect();
    let daemon = daemon.as_ref();
    let mut stream = futures_util::stream::iter(ranges)
        .map(|(first, count)| async move {
            let hashes = daemon.block_hashes(first, count).await?;
            let blocks = daemon.raw_blocks(&hashes).await?;
            anyhow::Ok(blocks.iter().map(Vec::len).sum::<usize>())
        })
        .buffered(2);
    let mut bytes = 0usize;
    while let Some(n) = stream.next().await {
        bytes += n?;
    }
    if let Some(f) = files {
        eprintln!("fetchfloor: {:?}", f.file_stats());
    }
    println!(
        "{} {} {:.2}",
        tip + 1,
        bytes,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
