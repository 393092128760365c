#!/usr/bin/env bash
# The main job, on regtest: starts a node, generates a chain (cached), and runs
# electrumx-server against it, serving Electrum clients on 127.0.0.1:50001, until Ctrl-C. Everything lives under a temporary directory
# that is removed at exit.
#
#   tools/demo.sh [BLOCKS] [TXS_PER_BLOCK]
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/electrumx-rs/target}"
blocks="${1:-300}"
txs="${2:-50}"
tools/setup.sh
cargo build --release --workspace --bins --locked -q
bin="$CARGO_TARGET_DIR/release"

echo "demo: generating (or reusing) a chain of $blocks blocks, ~$txs txs each" >&2
chain="$("$bin/chaingen" --blocks "$blocks" --txs-per-block "$txs" --wallets 2000)"
work="$(mktemp -d /tmp/electrumx-demo.XXXXXX)"
cp -r "$chain/node" "$work/node"
cleanup() { tools/regtest-node.sh stop "$work/node" || true; rm -rf "$work"; }
trap cleanup EXIT
url="$(tools/regtest-node.sh start "$work/node")"
port="$(cat "$work/node/rpcport")"
echo "demo: node on 127.0.0.1:$port; starting electrumx-server (Ctrl-C to stop)" >&2
echo "demo: Electrum clients on 127.0.0.1:50001; admin: $bin/electrumx-rpc -p 8000 getinfo; metrics: curl 127.0.0.1:4224/metrics" >&2
cat >&2 <<MSG

  The index is in $work/db. To mine another block while it runs:
      tools/regtest-node.sh cli $work/node generate 1
  Once the index has caught up, Electrum wallets connect to tcp://127.0.0.1:50001:
      electrum --regtest --oneserver --server 127.0.0.1:50001:t

MSG
DAEMON_URL="http://127.0.0.1:$port/" \
DAEMON_COOKIE_FILE="$work/node/regtest/.cookie" \
DB_DIRECTORY="$work/db" COIN=BitcoinSV NET=regtest \
DAEMON_POLL_INTERVAL_BLOCKS=1000 SERVICES=tcp://127.0.0.1:50001,rpc://127.0.0.1:8000,metrics://127.0.0.1:4224 \
    "$bin/electrumx-server" || true
