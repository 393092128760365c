//! A wallet backend in a few lines: embed the indexer, sync it with a node, and print the
//! balance and history of a few scripts every time a block touches them.
//!
//! ```text
//! cargo run --release -p electrumx-examples --example watch_scripts -- \
//!     http://user:pass@127.0.0.1:18443 Bitcoin regtest /tmp/watch-db SCRIPT_HEX [SCRIPT_HEX…]
//! ```

use anyhow::{Context, Result};
use electrumx_core::daemon::{DaemonUrl, RpcDaemon, RpcDaemonConfig};
use electrumx_core::{ChainIndex, CoinParams, Controller, IndexEvent, ScriptHash};
use std::sync::Arc;

#[tokio::main]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [url, coin, net, db, scripts @ ..] = args.as_slice() else {
        anyhow::bail!("usage: watch_scripts DAEMON_URL COIN NET DB_DIR SCRIPT_HEX...");
    };
    let coin = CoinParams::from_names(coin, net).map_err(anyhow::Error::msg)?;
    let urls = DaemonUrl::parse_list(url, coin.rpc_port).map_err(anyhow::Error::msg)?;
    let daemon = Arc::new(RpcDaemon::new(
        RpcDaemonConfig::new(urls),
        Default::default(),
    )?);
    let controller = Controller::builder()
        .coin(coin)
        .db_dir(db)
        .daemon(daemon)
        .build()?;
    let watched: Vec<ScriptHash> = scripts
        .iter()
        .map(|s| const_hex::decode(s).map(|b| ScriptHash::of_script(&b)))
        .collect::<Result<_, _>>()
        .context("scripts are hex")?;
    let mut events = controller.subscribe();
    controller.start()?;
    let height = controller.wait_caught_up().await?;
    println!("caught up at height {height}");
    let index = controller.index();
    for sh in &watched {
        report(&index, sh)?;
    }
    // One listener for the whole loop: a Ctrl-C that arrives while a report is being
    // printed is kept for the next `select!` instead of being lost.
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        tokio::select! {
            _ = &mut ctrl_c => break,
            ev = events.recv() => {
                let (height, touched) = match ev {
                    Ok(IndexEvent::NewTip { height, touched, .. }) => (height, touched),
                    // Kinds of events this example does not watch.
                    Ok(_) => continue,
                    // Fell behind and missed some events: go on with the next one.
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
                };
                println!("new tip {height}");
                for sh in watched.iter().filter(|sh| touched.contains(&sh.hashx())) {
                    report(&index, sh)?;
                }
            }
        }
    }
    controller.stop().await?;
    Ok(())
}

fn report(index: &impl ChainIndex, sh: &ScriptHash) -> Result<()> {
    let balance = index.balance(sh)?;
    let n = index.history_len(sh, usize::MAX)?;
    let last = index.history(sh, n.saturating_sub(3), 3)?;
    println!("{}: balance {balance} sat, {n} transactions", sh.to_hex());
    for h in last {
        println!("    {} at height {}", h.txid, h.height);
    }
    Ok(())
}
