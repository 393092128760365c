#!/usr/bin/env bash
# Chaos benchmark: a well-behaved session's latency and the server's memory and descriptors
# while hostile clients attack, electrumx-server and ElectrumX 2.0.0 side by side on the same
# regtest node and generated chain. For each attack (the ones of tests/chaos.rs), each server
# is started afresh on its database, testkit's `chaosbench` runs the probe and the attack for
# SECONDS_PER_ATTACK (default 20), and the server is stopped; the two servers alternate.
#   tools/bench-chaos.sh [BLOCKS] [TXS_PER_BLOCK] [WALLETS]      (default 500 50 2000)
# ATTACKS="baseline flood ..." picks attacks; SKIP_OURS=1 / SKIP_ELECTRUMX=1 leave a side out.
#
# Both servers run with their defaults (MAX_SESSIONS 1000, MAX_RECV 1,000,000, cost limits
# 1000/10000, SESSION_TIMEOUT 600 s), on TCP and WebSocket, except:
# - ours: SESSIONS_PER_IP_EXEMPT= (empty), so MAX_SESSIONS_PER_IP (20) applies to loopback
#   clients too (by default loopback is exempt); the attackers come from 127.0.0.11 and up;
# - ElectrumX: its padding delay off (PaddedRSTransport.WAIT_FOR_BUFFER_GROWTH_SECONDS = 0,
#   as in bench-query.sh; with it a light reply on TCP waits up to 1 s). ElectrumX has no
#   per-address connection limit; MAX_SESSIONS is its only cap (it closes its listening
#   sockets at the limit, reopening them at 95 %).
# Logs: /tmp/bench-chaos/{ours,ex}-ATTACK.log; the table is also written to
# /tmp/bench-chaos/table.md.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/electrumx-rs/target}"
blocks="${1:-500}"; txs="${2:-50}"; wallets="${3:-2000}"
seconds="${SECONDS_PER_ATTACK:-20}"
attacks="${ATTACKS:-baseline slow-readers flood batch big-lines ws-huge slowloris ws-silent}"
tools/setup.sh
cargo build --release --workspace --bins --locked -q
bin="$CARGO_TARGET_DIR/release"
chain="$("$bin/chaingen" --blocks "$blocks" --txs-per-block "$txs" --wallets "$wallets")"
logs=/tmp/bench-chaos
mkdir -p "$logs"
work="$(mktemp -d "${TMPDIR:-/tmp}/bench-chaos-db.XXXXXX")"
tools/regtest-node.sh start "$chain/node" >/dev/null
node_port="$(cat "$chain/node/rpcport")"
cookie="$chain/node/regtest/.cookie"
server_pid=""
stop_server() {
    [[ -n "$server_pid" ]] || return 0
    kill -INT "$server_pid" 2>/dev/null || true
    for _ in $(seq 1 300); do kill -0 "$server_pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
    server_pid=""
}
cleanup() {
    stop_server
    tools/regtest-node.sh stop "$chain/node" >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
# Waits for a line in a log while the server runs (at most 300 s).
wait_for() {
    for _ in $(seq 1 600); do
        grep -q "$2" "$1" && return 0
        kill -0 "$server_pid" 2>/dev/null || { echo "server exited; see $1" >&2; tail -5 "$1" >&2; return 1; }
        sleep 0.5
    done
    echo "timed out waiting for '$2' in $1" >&2; return 1
}
venv=""; [[ -z "${SKIP_ELECTRUMX:-}" ]] && venv="$(tools/electrumx-venv.sh)"
mkdir -p "$work/ours" "$work/ex"

start_ours() {
    local log="$1" fresh=""
    [[ -e "$work/ours/synced" ]] || fresh=1
    : > "$log"
    DAEMON_URL="http://127.0.0.1:$node_port/" DAEMON_COOKIE_FILE="$cookie" DB_DIRECTORY="$work/ours" \
    COIN=BitcoinSV NET=regtest SERVICES="tcp://127.0.0.1:$tcp,ws://127.0.0.1:$ws" \
    SESSIONS_PER_IP_EXEMPT= "$bin/electrumx-server" > "$log" 2>&1 &
    server_pid=$!
    wait_for "$log" "listening for clients"
    # A fresh database is compacted in the background after the initial sync: start after it.
    if [[ -n "$fresh" ]]; then wait_for "$log" "database compacted"; touch "$work/ours/synced"; fi
}
start_ex() {
    local log="$1"
    : > "$log"
    DAEMON_URL="http://$(cat "$cookie")@127.0.0.1:$node_port/" DB_DIRECTORY="$work/ex" DB_ENGINE=leveldb \
    COIN=BitcoinSV NET=regtest ALLOW_ROOT=1 SERVICES="tcp://127.0.0.1:$tcp,ws://127.0.0.1:$ws" \
    PEER_DISCOVERY=off \
    "$venv/bin/python3" -c "import electrumx.server.transport as t; t.PaddedRSTransport.WAIT_FOR_BUFFER_GROWTH_SECONDS = 0; from electrumx.cli.electrumx_server import main; main()" \
        > "$log" 2>&1 &
    server_pid=$!
    wait_for "$log" "TCP server listening"
    wait_for "$log" "WS server listening"
    # Serving starts once the mempool is synced with the database.
    wait_for "$log" "synced in"
}

# Sync both databases first (the start that syncs is not measured: its memory is the sync's).
tcp=$(free_port); ws=$(free_port)
[[ -z "${SKIP_OURS:-}" ]] && { start_ours "$logs/ours-sync.log"; stop_server; }
[[ -z "${SKIP_ELECTRUMX:-}" ]] && { start_ex "$logs/ex-sync.log"; stop_server; }

rows="$logs/table.md"
{
echo "| attack | server | probe p50 / p99 / max ms | probe errors | fresh connections answered | RSS MB start → peak | fds start / peak / end / 3 s after | what the attack did |"
echo "|---|---|---|---|---|---|---|---|"
} | tee "$rows"
for attack in $attacks; do
    for side in ours ex; do
        [[ $side == ours && -n "${SKIP_OURS:-}" ]] && continue
        [[ $side == ex && -n "${SKIP_ELECTRUMX:-}" ]] && continue
        tcp=$(free_port); ws=$(free_port)
        log="$logs/$side-$attack.log"
        if [[ $side == ours ]]; then start_ours "$log"; label=electrumx-server; else start_ex "$log"; label="ElectrumX 2.0.0"; fi
        "$bin/chaosbench" --tcp "$tcp" --ws "$ws" --pid "$server_pid" --attack "$attack" \
            --seconds "$seconds" --label "$label" --blocks "$blocks" | tee -a "$rows"
        stop_server
    done
done
