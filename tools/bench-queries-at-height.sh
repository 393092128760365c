#!/usr/bin/env bash
# Queries at mainnet height: serves the index of the tenth-of-mainnet chain (kept by
# `KEEP_DB=1 tools/bench-mainnet-tenth.sh BLOCKS TXS`) offline from its block files and
# runs testkit's `qbench --chain` against it: `cp_height` proofs at the tip, header
# ranges, `headers.subscribe`, merkle proofs and transactions in blocks of 12,000
# transactions, the script with millions of transactions (history: error 10001 at once;
# its balance; subscribing to it), the script with 100,000+ unspent outputs, and light
# and medium scripts; p50/p99 at 1 and 16 sessions. Settings are the defaults but for the
# cost limits (off, so that 16 sessions from one address are measured, not throttled).
# No peer figure: ElectrumX cannot index a chain without a node, and no node here can
# hold this (segwit) chain.
# Usage: tools/bench-queries-at-height.sh [BLOCKS] [TXS] [REQUESTS]   (ONLY=TEXT: the query
# kinds whose name contains TEXT)
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/electrumx-rs/target}"
blocks="${1:-980000}"; txs="${2:-100000000}"; requests="${3:-2000}"
cache="${CHAIN_CACHE:-$HOME/.cache/electrumx-rs/block-chains}"
db="$HOME/.cache/electrumx-rs/bench-dbs/tenth-b$blocks-t$txs"
chain="$(ls -d "$cache"/*s1-b"$blocks"-t"$txs"-* 2>/dev/null | head -1)"
[[ -d "$db" && -d "$chain" ]] || {
    echo "no kept index or chain: run KEEP_DB=1 tools/bench-mainnet-tenth.sh $blocks $txs first" >&2
    exit 1
}
cargo build --release --workspace --bins --locked -q
bin="$CARGO_TARGET_DIR/release"
log="$(mktemp /tmp/electrumx-bench-height.XXXXXX.log)"
env COIN=Bitcoin NET=regtest BLOCKS_DIR="$chain" DB_DIRECTORY="$db" SERVICES=tcp://127.0.0.1:0 \
    PEER_DISCOVERY=off COST_SOFT_LIMIT=0 COST_HARD_LIMIT=0 "$bin/electrumx-server" >"$log" 2>&1 &
pid=$!
trap 'kill -TERM $pid 2>/dev/null; wait $pid 2>/dev/null; rm -f "$log"' EXIT
until grep -q "listening for clients on tcp" "$log"; do
    kill -0 "$pid" 2>/dev/null || { echo "server exited early" >&2; tail -5 "$log" >&2; exit 1; }
    sleep 1
done
port=$(grep -o 'listening for clients on tcp://127.0.0.1:0 (127.0.0.1:[0-9]*' "$log" | grep -o '[0-9]*$')
"$bin/qbench" "$port" --chain "$chain" --concurrency 1,16 --requests "$requests" --heavy-requests 16 ${ONLY:+--only "$ONLY"}
echo
echo "server peak RSS: $(( $(awk '/VmHWM/ {print $2}' "/proc/$pid/status") / 1024 )) MB"
