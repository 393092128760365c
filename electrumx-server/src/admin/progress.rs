//! The initial-sync progress line drawn on a terminal: a bar, heights, rates and an ETA.

use electrumx_core::SyncProgress;
use std::time::Duration;

/// One line: `[#####-----]  45.1% 123,456/273,000  850 blk/s  4,100 tx/s  ETA 2h 03m`.
/// Rates are averaged since `first` was taken `elapsed` ago; `width` is the bar's length.
pub fn bar_line(
    first: &SyncProgress,
    now: &SyncProgress,
    elapsed: Duration,
    width: usize,
) -> String {
    let height = now.blocks.saturating_sub(1);
    let target = now.daemon_height.max(height);
    let fraction = if target == 0 {
        1.0
    } else {
        height as f64 / target as f64
    };
    let filled = ((fraction * width as f64).round() as usize).min(width);
    let secs = elapsed.as_secs_f64().max(1e-3);
    let bps = now.blocks.saturating_sub(first.blocks) as f64 / secs;
    let tps = now.txs.saturating_sub(first.txs) as f64 / secs;
    let eta = if bps > 0.0 {
        eta_text(((target - height) as f64 / bps) as u64)
    } else {
        "-".to_string()
    };
    format!(
        "[{}{}] {:5.1}% {}/{} {:.0} blk/s {:.0} tx/s cache {} MB ETA {}",
        "#".repeat(filled),
        "-".repeat(width - filled),
        fraction * 100.0,
        crate::admin::local_rpc::grouped(height as u64),
        crate::admin::local_rpc::grouped(target as u64),
        bps,
        tps,
        now.cache_bytes >> 20,
        eta
    )
}

fn eta_text(secs: u64) -> String {
    match secs {
        0..60 => format!("{secs}s"),
        60..3600 => format!("{}m {:02}s", secs / 60, secs % 60),
        _ => format!("{}h {:02}m", secs / 3600, (secs / 60) % 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bar_shows_position_rate_and_eta() {
        let mut first = SyncProgress::default();
        (first.blocks, first.daemon_height) = (1, 1000);
        let mut now = SyncProgress::default();
        (now.blocks, now.txs, now.daemon_height) = (501, 10_000, 1000);
        let line = bar_line(&first, &now, Duration::from_secs(10), 10);
        assert!(
            line.starts_with("[#####-----]  50.0% 500/1,000 50 blk/s 1000 tx/s"),
            "{line}"
        );
        assert!(line.ends_with("ETA 10s"), "{line}");
        assert_eq!(eta_text(7384), "2h 03m");
    }
}
