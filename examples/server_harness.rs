//! A test harness: run the Electrum server in-process against a regtest node, talk to it
//! with a third-party client (the `electrum-client` crate), and shut it down. The shape of
//! an integration test of a wallet against a real server, without a separate process.
//!
//! ```text
//! cargo run --release -p electrumx-examples --example server_harness -- \
//!     http://user:pass@127.0.0.1:18443 BitcoinSV regtest /tmp/harness-db SCRIPT_HEX
//! ```

use anyhow::{Context, Result};
use electrum_client::{Client, ElectrumApi};
use electrumx_core::daemon::{DaemonUrl, RpcDaemon, RpcDaemonConfig};
use electrumx_core::{CoinParams, Controller, Mempool};
use electrumx_server::services::Protocol;
use electrumx_server::state::ServerState;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [url, coin, net, db, script] = args.as_slice() else {
        anyhow::bail!("usage: server_harness DAEMON_URL COIN NET DB_DIR SCRIPT_HEX");
    };
    let coin = CoinParams::from_names(coin, net).map_err(anyhow::Error::msg)?;
    let urls = DaemonUrl::parse_list(url, coin.rpc_port).map_err(anyhow::Error::msg)?;
    let stop = CancellationToken::new();
    let daemon = Arc::new(RpcDaemon::new(RpcDaemonConfig::new(urls), stop.clone())?);

    // The indexer, then the server state on top of it.
    let controller = Arc::new(
        Controller::builder()
            .coin(coin.clone())
            .db_dir(db)
            .daemon(daemon.clone())
            .build()?,
    );
    controller.start()?;
    let index = controller.index();
    let mempool = Arc::new(Mempool::new(
        daemon.clone(),
        Arc::new(index.clone()),
        coin.clone(),
    ));
    let state = Arc::new(ServerState::new(coin, index, mempool, daemon));

    // A socket bound here, on any free port: clients may connect at once and are served
    // when the index has caught up.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    let server = {
        let (controller, stop) = (controller.clone(), stop.clone());
        tokio::spawn(async move {
            electrumx_server::server::run_with_listeners(
                state,
                &controller,
                vec![(Protocol::Tcp, listener)],
                None,
                Duration::from_millis(200),
                stop,
            )
            .await
        })
    };
    let height = controller.wait_caught_up().await?;
    println!("index caught up at height {height}; serving on 127.0.0.1:{port}");

    // A wallet's view, through a client that knows nothing of this code base.
    let script = const_hex::decode(script).context("SCRIPT_HEX is hex")?;
    let answers = tokio::task::spawn_blocking(move || -> Result<(usize, u64, usize)> {
        let client = connect(port)?;
        let tip = client.block_headers_subscribe()?;
        let script = electrum_client::bitcoin::Script::from_bytes(&script);
        let balance = client.script_get_balance(script)?;
        let history = client.script_get_history(script)?;
        Ok((tip.height, balance.confirmed, history.len()))
    })
    .await??;
    println!("client: tip height {}", answers.0);
    println!(
        "client: balance {} sat, {} transactions",
        answers.1, answers.2
    );

    stop.cancel();
    server.await??;
    controller.stop().await?;
    println!("stopped");
    Ok(())
}

/// Connects, retrying while the listener comes up (it opens right after catch-up).
fn connect(port: u16) -> Result<Client> {
    let url = format!("tcp://127.0.0.1:{port}");
    for _ in 0..50 {
        if let Ok(c) = Client::new(&url) {
            return Ok(c);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(Client::new(&url)?)
}
