#!/usr/bin/env bash
# Initial sync from the node's block files against the same sync over RPC only: on one
# generated regtest chain (testkit's `chaingen`, cached by its parameters), electrumx-server
# syncs from an empty DB twice, with BLOCK_FILES=off and BLOCK_FILES=on (DAEMON_DATADIR
# pointing at the node's datadir), and the time to catch up, the peak RSS and the blocks
# read from files are printed as a Markdown table, with the time to just read and hash
# every block (testkit's fetchfloor over RPC, and from the blk files).
# Usage: tools/bench-block-files.sh [BLOCKS] [TXS_PER_BLOCK] [WALLETS]
# CHAIN_CACHE: where generated chains are kept (default ~/.cache/electrumx-rs/chains).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/electrumx-rs/target}"
blocks="${1:-1500}"; txs="${2:-2000}"; wallets="${3:-100000}"
cargo build --release --workspace --bins --locked -q
bin="$CARGO_TARGET_DIR/release"
chain="$("$bin/chaingen" --blocks "$blocks" --txs-per-block "$txs" --wallets "$wallets" ${CHAIN_CACHE:+--cache "$CHAIN_CACHE"})"
work="$(mktemp -d /tmp/electrumx-bench-files.XXXXXX)"
cleanup() { tools/regtest-node.sh stop "$chain/node" >/dev/null 2>&1 || true; [[ -n "${KEEP_LOGS:-}" ]] && cp "$work"/*.log "$KEEP_LOGS"/; rm -rf "$work"; }
trap cleanup EXIT
tools/regtest-node.sh start "$chain/node" >/dev/null
port="$(cat "$chain/node/rpcport")"
cookie="$chain/node/regtest/.cookie"

# Runs the server until its "caught up" line; prints "seconds peak_rss_kb". $1: log, rest: env.
run() {
    local log="$1"; shift
    local start end pid rss
    : >"$log"
    start=$(date +%s.%N)
    env "$@" DAEMON_URL="http://127.0.0.1:$port/" DAEMON_COOKIE_FILE="$cookie" \
        COIN=BitcoinSV NET=regtest PROGRESS_INTERVAL=1 "$bin/electrumx-server" >"$log" 2>&1 &
    pid=$!
    until grep -q "caught up with the node height=" "$log"; do
        kill -0 "$pid" 2>/dev/null || { echo "server exited early; log tail:" >&2; tail -5 "$log" >&2; return 1; }
        sleep 0.1
    done
    end=$(date +%s.%N)
    rss=$(awk '/VmHWM/ {print $2}' "/proc/$pid/status")
    kill -INT "$pid"; wait "$pid" || true
    echo "$(echo "$end - $start" | bc) $rss"
}

echo "bench: chain $(cat "$chain/complete") in $blocks blocks ($chain)" >&2
read -r nblocks bytes floor_s < <("$bin/fetchfloor" "http://127.0.0.1:$port/" "$cookie")
read -r _ _ files_floor_s < <("$bin/fetchfloor" "http://127.0.0.1:$port/" "$cookie" "$chain/node/regtest/blocks")
read -r rpc_s rpc_rss < <(run "$work/rpc.log" BLOCK_FILES=off DB_DIRECTORY="$work/db-rpc")
rm -rf "$work/db-rpc"
read -r files_s files_rss < <(run "$work/files.log" BLOCK_FILES=on DAEMON_DATADIR="$chain/node" DB_DIRECTORY="$work/db-files")
from_files=$(grep -o 'block files: [0-9]* blocks read' "$work/files.log" | grep -o '[0-9]*' | head -1)
echo "| | blocks | bytes | seconds | blocks/s | MB/s | peak RSS |"
echo "|---|---|---|---|---|---|---|"
row() { echo "| $1 | $nblocks | $bytes | $2 | $(echo "$nblocks / $2" | bc) | $(echo "$bytes / $2 / 1000000" | bc) | $3 |"; }
row "fetch floor over RPC (getblock, no parse)" "$floor_s" "-"
row "fetch floor from the blk files (scan, read, hash check)" "$files_floor_s" "-"
row "sync, BLOCK_FILES=off (RPC)" "$rpc_s" "$((rpc_rss / 1024)) MB"
row "sync, BLOCK_FILES=on ($from_files blocks from files)" "$files_s" "$((files_rss / 1024)) MB"
