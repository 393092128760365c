//! `truthcheck`: compares a server's answers for the sampled scripts of a `blockgen` chain
//! with the generator's truth (`truth.json`): balances, history lengths (error 10001 over
//! the limit), unspent output counts. Exits non-zero on any mismatch.
//!
//! Usage: `truthcheck PORT CHAIN_DIR [MAX_HISTORY]` (MAX_HISTORY: the server's limit,
//! default 81,817: ElectrumX's rule for the default MAX_SEND).

use anyhow::{Context, Result, bail};
use electrumx_testkit::blockgen::{check_truth, read_truth};
use std::path::Path;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let port: u16 = args
        .get(1)
        .context("usage: truthcheck PORT CHAIN_DIR")?
        .parse()?;
    let dir = args.get(2).context("usage: truthcheck PORT CHAIN_DIR")?;
    let max_history = args.get(3).map_or(Ok(81_817), |v| v.parse())?;
    let truth = read_truth(Path::new(dir))?;
    let r = check_truth(port, &truth, max_history)?;
    println!(
        "{} scripts: {} histories compared, {} refused as too large (10001), {} UTXO lists compared, {} refused as too large, {} mismatches",
        r.scripts,
        r.histories_compared,
        r.histories_too_large,
        r.utxo_lists_compared,
        r.utxo_lists_refused,
        r.mismatches.len()
    );
    for m in r.mismatches.iter().take(20) {
        println!("mismatch: {m}");
    }
    if !r.mismatches.is_empty() {
        bail!("{} mismatches", r.mismatches.len());
    }
    Ok(())
}
