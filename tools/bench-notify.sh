#!/usr/bin/env bash
# Notification benchmark: 10,000 sessions each subscribed to headers and 10 scripts
# (100,000 subscriptions) on electrumx-server; reports the server's RSS with them idle, then
# the time from submitting a block to the node until the last header notification arrives.
# Works on copies of the cached chain and database (see bench-query.sh), so caches stay as
# they are.   tools/bench-notify.sh [SESSIONS] [SUBS_PER_SESSION]
# BLOCKNOTIFY=1: the node runs `electrumx-rpc notify` on each block (-blocknotify) instead of
# the server finding the block at its next poll. SERVER_BIN: another electrumx-server binary
# to measure (an earlier build, say).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/electrumx-rs/target}"
sessions="${1:-10000}"; subs="${2:-10}"
ulimit -n 65536 2>/dev/null || true
tools/setup.sh
cargo build --release --workspace --bins --locked -q
bin="$CARGO_TARGET_DIR/release"
chain="$("$bin/chaingen" --blocks 2000 --txs-per-block 1000 --wallets 200000)"
db="$HOME/.cache/electrumx-rs/bench-dbs/ours-$(basename "$chain")"
[[ -d "$db" ]] || { echo "run tools/bench-query.sh first (it builds the database)" >&2; exit 1; }
work="$(mktemp -d /tmp/electrumx-nbench.XXXXXX)"
cp -r "$chain/node" "$work/node"; cp -r "$db" "$work/db"
pid=""
cleanup() { [[ -n "$pid" ]] && kill -INT "$pid" 2>/dev/null; cp "$work/server.log" /tmp/bench-notify-server.log 2>/dev/null || true; tools/regtest-node.sh stop "$work/node" >/dev/null 2>&1 || true; rm -rf "$work"; }
trap cleanup EXIT
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
rpc_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
node_args=(); services="tcp://127.0.0.1:$port"; poll=100
if [[ -n "${BLOCKNOTIFY:-}" ]]; then
    node_args=("-blocknotify=$bin/electrumx-rpc -p $rpc_port notify %s")
    services="$services,rpc://127.0.0.1:$rpc_port"; poll=5000
fi
tools/regtest-node.sh start "$work/node" "${node_args[@]}" >/dev/null
node_port="$(cat "$work/node/rpcport")"
DAEMON_URL="http://127.0.0.1:$node_port/" DAEMON_COOKIE_FILE="$work/node/regtest/.cookie" DB_DIRECTORY="$work/db" \
COIN=BitcoinSV NET=regtest SERVICES="$services" COST_SOFT_LIMIT=0 COST_HARD_LIMIT=0 \
MAX_SESSIONS=$((sessions + 100)) DAEMON_POLL_INTERVAL_BLOCKS=$poll "${SERVER_BIN:-$bin/electrumx-server}" > "$work/server.log" 2>&1 &
pid=$!
until grep -q "listening for clients" "$work/server.log"; do sleep 0.5; done
rss_before=$(awk '/VmRSS/ {print $2}' "/proc/$pid/status")
coproc NB { "$bin/nbench" "$port" "$sessions" "$subs"; }
read -r ready <&"${NB[0]}"
[[ "$ready" == READY ]] || { echo "nbench: $ready" >&2; exit 1; }
sleep 2
rss=$(awk '/VmRSS/ {print $2}' "/proc/$pid/status")
# nbench makes the node mine the block itself and starts its clock as that request leaves
# (a command-line client would add its own start-up, some 20 ms here, to the figure).
echo "generate http://$(cat "$work/node/regtest/.cookie")@127.0.0.1:$node_port/" >&"${NB[1]}"
read -r result <&"${NB[0]}"
echo "sessions: $sessions, subscriptions: $((sessions * subs)); server RSS: $((rss_before / 1024)) MB before, $((rss / 1024)) MB with them"
echo "$result"
