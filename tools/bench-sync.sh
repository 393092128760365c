#!/usr/bin/env bash
# Sync benchmark: on one generated regtest chain (cached by its parameters), measures
#   1. the raw fetch floor (download every raw block, nothing else: testkit's `fetchfloor`),
#   2. electrumx-server's initial sync from an empty DB (wall time, peak RSS, DB size,
#      throughput per million transactions),
#   3. ElectrumX 2.0.0 (PyPI e-x[leveldb], default CACHE_MB) syncing the same node from empty
#      (skip with SKIP_ELECTRUMX=1).
# Prints a Markdown table. Usage: tools/bench-sync.sh [BLOCKS] [TXS_PER_BLOCK] [WALLETS]
# REORG_LIMIT, if set, is given to both servers (default: the coin's, 8000 on regtest).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/electrumx-rs/target}"
blocks="${1:-2700}"; txs="${2:-2000}"; wallets="${3:-200000}"
tools/setup.sh
cargo build --release --workspace --bins --locked -q
bin="$CARGO_TARGET_DIR/release"
chain="$("$bin/chaingen" --blocks "$blocks" --txs-per-block "$txs" --wallets "$wallets")"
work="$(mktemp -d /tmp/electrumx-bench.XXXXXX)"
cleanup() { tools/regtest-node.sh stop "$chain/node" >/dev/null 2>&1 || true; rm -rf "$work"; }
trap cleanup EXIT
tools/regtest-node.sh start "$chain/node" >/dev/null
port="$(cat "$chain/node/rpcport")"
cookie="$chain/node/regtest/.cookie"

# Runs a server in the background, waits for its "caught up" line, prints
# "seconds peak_rss_kb", stops it. $1: log file, $2: caught-up pattern, rest: command.
run_until_caught_up() {
    local log="$1" pattern="$2"; shift 2
    local start end pid rss
    start=$(date +%s.%N)
    "$@" >"$log" 2>&1 &
    pid=$!
    until grep -q "$pattern" "$log"; do
        kill -0 "$pid" 2>/dev/null || { echo "server exited early; log tail:" >&2; tail -5 "$log" >&2; return 1; }
        sleep 0.2
    done
    end=$(date +%s.%N)
    rss=$(awk '/VmHWM/ {print $2}' "/proc/$pid/status")
    kill -INT "$pid"; wait "$pid" || true
    echo "$(echo "$end - $start" | bc) $rss"
}

echo "bench: chain $(cat "$chain/complete") in $blocks blocks ($chain)" >&2
read -r nblocks bytes floor_s < <("$bin/fetchfloor" "http://127.0.0.1:$port/" "$cookie")
echo "bench: fetch floor ${floor_s}s for $nblocks blocks, $bytes bytes" >&2

read -r ours_s ours_rss < <(run_until_caught_up "$work/ours.log" "caught up with the node" \
    env DAEMON_URL="http://127.0.0.1:$port/" DAEMON_COOKIE_FILE="$cookie" DB_DIRECTORY="$work/ours-db" \
    COIN=BitcoinSV NET=regtest PROGRESS_INTERVAL=1 ${REORG_LIMIT:+REORG_LIMIT=$REORG_LIMIT} "$bin/electrumx-server")
ours_db=$(du -sb "$work/ours-db" | cut -f1)
echo "bench: electrumx-server ${ours_s}s, peak RSS ${ours_rss} kB, DB $ours_db bytes" >&2

ex_s="-"; ex_rss="-"; ex_db="-"
if [[ -z "${SKIP_ELECTRUMX:-}" ]]; then
    venv="$(tools/electrumx-venv.sh)"
    mkdir -p "$work/ex-db"
    read -r ex_s ex_rss < <(run_until_caught_up "$work/ex.log" "caught up to height" \
        env DAEMON_URL="http://$(cat "$cookie")@127.0.0.1:$port/" DB_DIRECTORY="$work/ex-db" DB_ENGINE=leveldb \
        COIN=BitcoinSV NET=regtest ALLOW_ROOT=1 SERVICES= ${REORG_LIMIT:+REORG_LIMIT=$REORG_LIMIT} \
        LOG_FORMAT='%(created).3f %(levelname)s:%(name)s:%(message)s' "$venv/bin/electrumx_server")
    ex_db=$(du -sb "$work/ex-db" | cut -f1)
    echo "bench: ElectrumX ${ex_s}s, peak RSS ${ex_rss} kB, DB $ex_db bytes" >&2
fi

python3 - "$work/ours.log" "$work/ex.log" "$nblocks" "$floor_s" "$ours_s" "$ours_rss" "$ours_db" "$ex_s" "$ex_rss" "$ex_db" <<'PY'
import re, sys, datetime, os
ours_log, ex_log, nblocks, floor_s, ours_s, ours_rss, ours_db, ex_s, ex_rss, ex_db = sys.argv[1:]

def per_million(points):
    # points: (seconds, cumulative txs) -> seconds spent on each full million
    out, last_t, k = [], 0.0, 1
    for t, n in points:
        while n >= k * 1_000_000:
            out.append(t - last_t); last_t = t; k += 1
    return out

pts = []
t0 = None
for line in open(ours_log):
    m = re.match(r'(\S+Z)\s+INFO sync: .*?, (\d+) txs', line)
    if m:
        t = datetime.datetime.fromisoformat(m.group(1).replace('Z', '+00:00')).timestamp()
        pts.append((t, int(m.group(2))))
    m0 = re.match(r'(\S+Z)\s+INFO index opened', line)
    if m0:
        t0 = datetime.datetime.fromisoformat(m0.group(1).replace('Z', '+00:00')).timestamp()
ours_pm = per_million([(t - t0, n) for t, n in pts]) if t0 else []
ex_pm = []
if os.path.exists(ex_log):
    ept, et0 = [], None
    for line in open(ex_log):
        m = re.match(r'([\d.]+) ', line)
        if not m: continue
        t = float(m.group(1)); et0 = et0 or t
        m2 = re.search(r'txs: ([\d,]+)', line)
        if m2: ept.append((t - et0, int(m2.group(1).replace(',', ''))))
    ex_pm = per_million(ept)
mb = lambda x: '-' if x == '-' else f'{int(x)/1e6:,.0f} MB'
rss = lambda x: '-' if x == '-' else f'{int(x)/1024:,.0f} MB'
sec = lambda x: '-' if x == '-' else f'{float(x):.1f} s'
txs = int(open(ours_log).read().split(' txs')[-2].split()[-1].rstrip(',')) if pts else 0
print(f'| | raw fetch floor | electrumx-server | ElectrumX 2.0.0 |')
print(f'|---|---|---|---|')
print(f'| sync time | {sec(floor_s)} | {sec(ours_s)} | {sec(ex_s)} |')
for name, s in (('blocks/s', None), ('tx/s', None)):
    pass
tx_total = pts[-1][1] if pts else 0
fmt = lambda s, n: '-' if s == '-' else f'{n/float(s):,.0f}'
print(f'| blocks/s | {fmt(floor_s, int(nblocks))} | {fmt(ours_s, int(nblocks))} | {fmt(ex_s, int(nblocks))} |')
print(f'| tx/s | {fmt(floor_s, tx_total)} | {fmt(ours_s, tx_total)} | {fmt(ex_s, tx_total)} |')
print(f'| peak RSS | - | {rss(ours_rss)} | {rss(ex_rss)} |')
print(f'| DB size | - | {mb(ours_db)} | {mb(ex_db)} |')
print(f'| seconds per million txs (1st, 2nd, …) | - | {", ".join(f"{x:.1f}" for x in ours_pm)} | {", ".join(f"{x:.1f}" for x in ex_pm)} |')
PY
