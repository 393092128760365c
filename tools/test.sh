#!/usr/bin/env bash
# The test command: sets up (tools/setup.sh), builds the binaries, runs every test of the
# workspace in the one profile the project uses (release: RocksDB's C++ build is paid once).
# CARGO_TARGET_DIR defaults to a directory outside the clone so later runs reuse the build.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/electrumx-rs/target}"
tools/setup.sh
cargo build --release --workspace --bins --locked
cargo test --release --workspace --locked "$@"
