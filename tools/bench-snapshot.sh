#!/usr/bin/env bash
# Replica seeding benchmark: the initial sync of a generated chain (testkit's `chaingen`)
# against seeding a second server from a snapshot of the first: `electrumx-rpc snapshot`
# (same filesystem: hard links), a real copy of the snapshot (`cp -r`, what a transfer to
# another host amounts to, minus the network), and the replica's start until it serves.
#   tools/bench-snapshot.sh [BLOCKS] [TXS_PER_BLOCK] [WALLETS]
# WORK (default: a new directory under /tmp) holds the databases and is removed at the end
# (KEEP=1 keeps it); CHAIN_CACHE sets chaingen's cache (default ~/.cache/electrumx-rs/chains).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/electrumx-rs/target}"
blocks="${1:-600}"; txs="${2:-1000}"; wallets="${3:-50000}"
tools/setup.sh >/dev/null
cargo build --release --workspace --bins --locked -q
bin="$CARGO_TARGET_DIR/release"
cache_arg=(); [[ -n "${CHAIN_CACHE:-}" ]] && cache_arg=(--cache "$CHAIN_CACHE")
chain="$("$bin/chaingen" --blocks "$blocks" --txs-per-block "$txs" --wallets "$wallets" "${cache_arg[@]}")"
work="${WORK:-$(mktemp -d /tmp/bench-snapshot.XXXXXX)}"
mkdir -p "$work"
tools/regtest-node.sh start "$chain/node" >/dev/null
node_port="$(cat "$chain/node/rpcport")"
cookie="$chain/node/regtest/.cookie"
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill -INT "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    tools/regtest-node.sh stop "$chain/node" >/dev/null 2>&1 || true
    [[ -n "${KEEP:-}" ]] || rm -rf "$work"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_for() { until grep -q "$2" "$1"; do sleep 0.1; done; }
now() { date +%s.%N; }
secs() { python3 -c "print(f'{$2 - $1:.2f}')"; }

# Starts a server on DB directory $1 with LocalRPC on port $2, logging to $3.
serve() {
    : > "$3"
    DAEMON_URL="http://127.0.0.1:$node_port/" DAEMON_COOKIE_FILE="$cookie" DB_DIRECTORY="$1" \
    COIN=BitcoinSV NET=regtest SERVICES="tcp://127.0.0.1:$(free_port),rpc://127.0.0.1:$2" \
    PEER_DISCOVERY=off "$bin/electrumx-server" > "$3" 2>&1 &
    pids+=($!)
}

rpc1=$(free_port)
t0=$(now)
serve "$work/db" "$rpc1" "$work/first.log"
wait_for "$work/first.log" "listening for clients"
t1=$(now)
wait_for "$work/first.log" "database compacted"
t2=$(now)
txcount=$("$bin/electrumx-rpc" -p "$rpc1" --json getinfo | python3 -c 'import json,sys; print(json.load(sys.stdin)["sync"]["txs"])')

t3=$(now)
"$bin/electrumx-rpc" -p "$rpc1" snapshot "$work/snap" > "$work/snap.json"
t4=$(now)
cp -r "$work/snap" "$work/replica"
sync
t5=$(now)
rpc2=$(free_port)
serve "$work/replica" "$rpc2" "$work/replica.log"
wait_for "$work/replica.log" "listening for clients"
t6=$(now)
height=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["height"])' "$work/snap.json")
other=""
if [[ -n "${OTHER_FS:-}" ]]; then
    t7=$(now)
    "$bin/electrumx-rpc" -p "$rpc1" snapshot "$OTHER_FS/bench-snapshot-$$" > /dev/null
    other=$(secs "$t7" "$(now)")
    rm -rf "$OTHER_FS/bench-snapshot-$$"
fi
run=$("$bin/electrumx-rpc" -p "$rpc2" --json sync | python3 -c 'import json,sys; print(json.load(sys.stdin)["blocks this run"])')

echo "chain: $blocks blocks x $txs txs ($txcount txs indexed, snapshot at height $height), $(nproc) cores"
echo "database: $(du -sm "$work/db" | cut -f1) MB; snapshot (a real copy): $(du -sm "$work/replica" | cut -f1) MB"
echo "initial sync until serving:         $(secs "$t0" "$t1") s"
echo "  + compaction after it:            $(secs "$t1" "$t2") s"
echo "snapshot (electrumx-rpc snapshot):  $(secs "$t3" "$t4") s"
[[ -n "$other" ]] && echo "snapshot onto another filesystem:   $other s"
echo "copy (cp -r, then sync):            $(secs "$t4" "$t5") s"
echo "replica start until serving:        $(secs "$t5" "$t6") s  (blocks indexed: $run)"
echo "seeding a replica in all:           $(secs "$t3" "$t6") s"
