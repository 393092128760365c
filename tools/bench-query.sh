#!/usr/bin/env bash
# Query benchmark: electrumx-server and ElectrumX 2.0.0 (padding delay on, and off) serving
# the same generated chain from the same node; testkit's `qbench` measures p50/p99 latency
# and requests/s per query kind at 1, 16 and 256 concurrent sessions. Both servers run with
# cost limits off and MAX_SEND raised so that heavy histories can be answered at all.
# Databases are synced once and cached under ~/.cache/electrumx-rs/bench-dbs/.
#   tools/bench-query.sh [BLOCKS] [TXS_PER_BLOCK] [WALLETS]
# SKIP_OURS=1 / SKIP_ELECTRUMX=1 leave one side out; REQUESTS (default 400) sets requests per
# light/medium measurement.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/electrumx-rs/target}"
blocks="${1:-2000}"; txs="${2:-1000}"; wallets="${3:-200000}"
tools/setup.sh
cargo build --release --workspace --bins --locked -q
bin="$CARGO_TARGET_DIR/release"
chain="$("$bin/chaingen" --blocks "$blocks" --txs-per-block "$txs" --wallets "$wallets")"
key="$(basename "$chain")"
dbs="$HOME/.cache/electrumx-rs/bench-dbs"
mkdir -p "$dbs"
tools/regtest-node.sh start "$chain/node" >/dev/null
node_port="$(cat "$chain/node/rpcport")"
cookie="$chain/node/regtest/.cookie"
pids=()
cleanup() { for p in "${pids[@]}"; do kill -INT "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; tools/regtest-node.sh stop "$chain/node" >/dev/null 2>&1 || true; }
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_for() { until grep -q "$2" "$1"; do sleep 0.5; done; }
# Logs are emptied before each server starts: a backgrounded `> log` truncates only once the
# child runs, and `wait_for` could meanwhile find the line of an earlier run.
: > /tmp/bench-query-ours.log; : > /tmp/bench-query-ex-off.log; : > /tmp/bench-query-ex-on.log

requests="${REQUESTS:-400}"
if [[ -z "${SKIP_OURS:-}" ]]; then
port=$(free_port)
fresh=""; [[ -d "$dbs/ours-$key" ]] || fresh=1
DAEMON_URL="http://127.0.0.1:$node_port/" DAEMON_COOKIE_FILE="$cookie" DB_DIRECTORY="$dbs/ours-$key" \
COIN=BitcoinSV NET=regtest SERVICES="tcp://127.0.0.1:$port" COST_SOFT_LIMIT=0 COST_HARD_LIMIT=0 \
MAX_SEND=1000000000 MAX_SESSIONS=20000 "$bin/electrumx-server" > /tmp/bench-query-ours.log 2>&1 &
pids+=($!)
wait_for /tmp/bench-query-ours.log "listening for clients"
# A fresh database is compacted in the background after the initial sync: measure after it.
[[ -n "$fresh" ]] && wait_for /tmp/bench-query-ours.log "database compacted"
echo "### electrumx-server"
"$bin/qbench" "$port" --requests "$requests"
kill -INT "${pids[-1]}"; wait "${pids[-1]}" || true
fi

[[ -n "${SKIP_ELECTRUMX:-}" ]] && exit 0
venv="$(tools/electrumx-venv.sh)"
for padding in off on; do
    # With the padding delay a small reply waits up to 1 s: fewer requests suffice.
    n="$requests"; [[ $padding == on ]] && n=$(( (requests + 9) / 10 ))
    port=$(free_port)
    mkdir -p "$dbs/ex-$key"
    patch=""
    [[ $padding == off ]] && patch="import electrumx.server.transport as t; t.PaddedRSTransport.WAIT_FOR_BUFFER_GROWTH_SECONDS = 0; "
    DAEMON_URL="http://$(cat "$cookie")@127.0.0.1:$node_port/" DB_DIRECTORY="$dbs/ex-$key" DB_ENGINE=leveldb \
    COIN=BitcoinSV NET=regtest ALLOW_ROOT=1 SERVICES="tcp://127.0.0.1:$port" COST_SOFT_LIMIT=0 COST_HARD_LIMIT=0 \
    MAX_SEND=1000000000 MAX_SESSIONS=20000 PEER_DISCOVERY=off \
    "$venv/bin/python3" -c "${patch}from electrumx.cli.electrumx_server import main; main()" > "/tmp/bench-query-ex-$padding.log" 2>&1 &
    pids+=($!)
    wait_for "/tmp/bench-query-ex-$padding.log" "TCP server listening"
    echo "### ElectrumX 2.0.0, padding delay $padding"
    "$bin/qbench" "$port" --requests "$n" --heavy-requests 4
    kill -INT "${pids[-1]}"; wait "${pids[-1]}" || true
done
