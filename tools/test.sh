#!/usr/bin/env bash
# The test command: sets up (tools/setup.sh), builds the binaries, runs every test of the
# workspace in the one profile the project uses (release: RocksDB's C++ build is paid once),
# and ends with one summary line over all test binaries.
# CARGO_TARGET_DIR defaults to a directory outside the clone so later runs reuse the build.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/electrumx-rs/target}"
tools/setup.sh
cargo build --release --workspace --bins --examples --locked
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
status=0
cargo test --release --workspace --locked "$@" 2>&1 | tee "$log" || status=$?
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
exit "$status"
