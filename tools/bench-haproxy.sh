#!/usr/bin/env bash
# Through HAProxy against direct: light-query p50/p99 and requests/s (testkit's `qbench`,
# light kinds only) at 1, 16 and 256 sessions, against one electrumx-server directly and
# through HAProxy (TCP mode, leastconn, /health checks, send-proxy-v2) in front of it, on
# the same generated chain and node as tools/bench-query.sh.
#   tools/bench-haproxy.sh [BLOCKS] [TXS_PER_BLOCK] [WALLETS]
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/electrumx-rs/target}"
blocks="${1:-300}"; txs="${2:-100}"; wallets="${3:-5000}"
tools/setup.sh
cargo build --release --workspace --bins --locked -q
bin="$CARGO_TARGET_DIR/release"
chain="$("$bin/chaingen" --blocks "$blocks" --txs-per-block "$txs" --wallets "$wallets")"
tools/regtest-node.sh start "$chain/node" >/dev/null
node_port="$(cat "$chain/node/rpcport")"
cookie="$chain/node/regtest/.cookie"
work="$(mktemp -d)"
pids=()
cleanup() { for p in "${pids[@]}"; do kill -INT "$p" 2>/dev/null || true; done; [[ -n "${hap:-}" ]] && kill -TERM "$hap" 2>/dev/null; wait 2>/dev/null || true; tools/regtest-node.sh stop "$chain/node" >/dev/null 2>&1 || true; rm -rf "$work"; }
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_for() { until grep -q "$2" "$1"; do sleep 0.5; done; }
port=$(free_port); metrics=$(free_port); front=$(free_port)
DAEMON_URL="http://127.0.0.1:$node_port/" DAEMON_COOKIE_FILE="$cookie" DB_DIRECTORY="$work/db" \
COIN=BitcoinSV NET=regtest SERVICES="tcp://127.0.0.1:$port,metrics://127.0.0.1:$metrics" \
TRUSTED_PROXIES=127.0.0.1 COST_SOFT_LIMIT=0 COST_HARD_LIMIT=0 MAX_SEND=1000000000 MAX_SESSIONS=20000 \
SHUTDOWN_GRACE=0 "$bin/electrumx-server" > "$work/server.log" 2>&1 &
pids+=($!)
wait_for "$work/server.log" "listening for clients"
wait_for "$work/server.log" "database compacted"
cat > "$work/haproxy.cfg" <<CFG
global
    maxconn 8000
defaults
    mode tcp
    timeout connect 5s
    timeout client 15m
    timeout server 15m
frontend electrum
    bind 127.0.0.1:$front
    default_backend electrumx
backend electrumx
    balance leastconn
    option httpchk GET /health
    http-check expect status 200
    default-server inter 2s fall 2 rise 2 send-proxy-v2
    server a 127.0.0.1:$port check port $metrics
CFG
haproxy -db -f "$work/haproxy.cfg" > "$work/haproxy.log" 2>&1 &
hap=$!  # SIGTERM: HAProxy stops at once (SIGINT would wait for its connections)
sleep 3
echo "### direct"
"$bin/qbench" "$port" --only light --requests "${REQUESTS:-400}"
echo "### through HAProxy 2.6 (send-proxy-v2)"
"$bin/qbench" "$front" --only light --requests "${REQUESTS:-400}"
