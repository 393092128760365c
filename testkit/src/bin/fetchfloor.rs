//! `fetchfloor`: the raw fetch floor of a sync. Downloads every raw block of a node's chain
//! with the same batched, concurrent requests the prefetcher makes, and does nothing else.
//! Prints `blocks bytes seconds`.
//!
//! Usage: `fetchfloor URL COOKIE_FILE`

use anyhow::{Context, Result};
use electrumx_core::daemon::{Daemon, DaemonUrl, RpcDaemon, RpcDaemonConfig};
use futures_util::StreamExt;
use std::time::Instant;

#[tokio::main]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let url = args.get(1).context("usage: fetchfloor URL COOKIE_FILE")?;
    let mut cfg =
        RpcDaemonConfig::new(DaemonUrl::parse_list(url, 18332).map_err(anyhow::Error::msg)?);
    cfg.cookie_file = args.get(2).map(Into::into);
    let daemon = RpcDaemon::new(cfg, Default::default())?;
    let tip = daemon.height().await?;
    let started = Instant::now();
    let ranges: Vec<(u32, u32)> = (0..=tip)
        .step_by(100)
        .map(|h| (h, 100.min(tip - h + 1)))
        .collect();
    let daemon = &daemon;
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
    println!(
        "{} {} {:.2}",
        tip + 1,
        bytes,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
