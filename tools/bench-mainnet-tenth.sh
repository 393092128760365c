#!/usr/bin/env bash
# The tenth-of-mainnet benchmark: a mainnet-shaped chain of BLOCKS blocks and about TXS
# transactions (testkit's `blockgen`: segwit and taproot, consolidations, batch payouts,
# old spends, scripts with millions of transactions; obfuscated with xor.dat as Core 28+
# writes), synced from its block files by electrumx-server with default settings
# (offline, BLOCKS_DIR; no node can hold a segwit chain here). Prints, as Markdown: the
# generator's figures, the read-and-hash floor (`hashfloor`: read every file, compute every
# txid, check every merkle root, on every core), the sync's total time, throughput per
# slice of 10 million transactions, peak RSS, bytes read from disk, the post-sync
# compaction's time, the database's size with and without undo data, the sampled scripts
# checked against the generator's truth (`truthcheck`), and a projection to mainnet.
#
# Usage: tools/bench-mainnet-tenth.sh [BLOCKS] [TXS]      (default 980000 100000000)
# Env: XOR (16 hex digits, "none" for plain files; default a fixed key), MAINNET_TXS
#      (for the projection; default 1250000000), CHAIN_CACHE (where chains are kept;
#      default ~/.cache/electrumx-rs/block-chains), KEEP_DB=1 (keep the database under
#      ~/.cache/electrumx-rs/bench-dbs/ for tools/bench-queries-at-height.sh),
#      KEEP_CHAIN=0 (delete the chain after the run), DROP_CACHES=1 (drop the page cache
#      before the floor and before the sync, when allowed), SLICE (transactions per
#      throughput slice; default 10000000).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/electrumx-rs/target}"
blocks="${1:-980000}"; txs="${2:-100000000}"
xor="${XOR:-6b1f0c2a9e4d3750}"
mainnet_txs="${MAINNET_TXS:-1250000000}"
cache="${CHAIN_CACHE:-$HOME/.cache/electrumx-rs/block-chains}"
db_keep="$HOME/.cache/electrumx-rs/bench-dbs/tenth-b$blocks-t$txs"

# Disk: ~360 bytes of blocks a transaction (unless cached), the database's peak (~130 B a
# transaction before the compaction), and 2 GB of room.
xor_args=(); [[ "$xor" != none ]] && xor_args=(--xor "$xor")
need_gb=$(( (txs * 130) / 1000000000 + 2 ))
mkdir -p "$cache"
if ! ls -d "$cache"/v2-s1-b"$blocks"-t"$txs"-* >/dev/null 2>&1; then
    need_gb=$(( need_gb + (txs * 360) / 1000000000 ))
fi
free_gb=$(( $(df --output=avail -B1 "$cache" | tail -1) / 1000000000 ))
echo "bench: needs about $need_gb GB of free disk, $free_gb GB free" >&2
if (( free_gb < need_gb )); then
    echo "bench: not enough free disk: $need_gb GB needed, $free_gb GB free" >&2
    exit 1
fi

cargo build --release --workspace --bins --locked -q
bin="$CARGO_TARGET_DIR/release"
work="$(mktemp -d /tmp/electrumx-bench-tenth.XXXXXX)"
pid=""
cleanup() {
    [[ -n "$pid" ]] && kill -TERM "$pid" 2>/dev/null || true
    [[ -n "${KEEP_LOGS:-}" ]] && cp "$work"/*.log "$KEEP_LOGS"/ 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT
drop_caches() {
    [[ "${DROP_CACHES:-1}" == 1 ]] || return 0
    sync; echo 3 >/proc/sys/vm/drop_caches 2>/dev/null || echo "bench: cannot drop the page cache" >&2
}

gen_start=$(date +%s.%N)
chain="$("$bin/blockgen" --blocks "$blocks" --txs "$txs" --big-blocks 20 --reused 10000000 \
    --sample-one-in 65536 "${xor_args[@]}" --cache "$cache")"
gen_s=$(echo "$(date +%s.%N) - $gen_start" | bc)
echo "bench: chain in $chain ($(du -sh "$chain" | cut -f1))" >&2

drop_caches
read -r f_blocks f_txs f_bytes floor_s < <("$bin/hashfloor" "$chain")
echo "bench: floor $floor_s s for $f_blocks blocks, $f_txs txs, $f_bytes bytes" >&2

# The sync, with default settings: until caught up, then until the post-sync compaction.
drop_caches
db="$work/db"
log="$work/sync.log"
start=$(date +%s.%N)
env COIN=Bitcoin NET=regtest BLOCKS_DIR="$chain" DB_DIRECTORY="$db" \
    SERVICES=tcp://127.0.0.1:0 PEER_DISCOVERY=off "$bin/electrumx-server" >"$log" 2>&1 &
pid=$!
sync_rss_kb=0
until grep -q "caught up with the node height=" "$log"; do
    kill -0 "$pid" 2>/dev/null || { echo "server exited early; log tail:" >&2; tail -5 "$log" >&2; exit 1; }
    sleep 1
done
sync_s=$(echo "$(date +%s.%N) - $start" | bc)
sync_rss_kb=$(awk '/VmHWM/ {print $2}' "/proc/$pid/status")
sync_read=$(awk '/^read_bytes/ {print $2}' "/proc/$pid/io")
until grep -q "database compacted after the initial sync" "$log"; do
    kill -0 "$pid" 2>/dev/null || { echo "server exited during the compaction" >&2; exit 1; }
    sleep 1
done
compact_s=$(grep -o 'database compacted after the initial sync secs="[0-9.]*"' "$log" | grep -o '[0-9.]*' | tail -1)
all_rss_kb=$(awk '/VmHWM/ {print $2}' "/proc/$pid/status")
all_read=$(awk '/^read_bytes/ {print $2}' "/proc/$pid/io")
kill -INT "$pid"; wait "$pid" || true; pid=""
db_bytes=$(du -sb "$db" | cut -f1)
"$bin/dbstats" "$db" Bitcoin regtest >"$work/dbstats.txt"
undo_bytes=$(awk -F'|' '$2 ~ /^ undo / {gsub(/ /, "", $3); print $3}' "$work/dbstats.txt")

# The sampled scripts against the generator's truth (cost limits off: the check asks
# for histories of up to 80,000 entries back to back).
env COIN=Bitcoin NET=regtest BLOCKS_DIR="$chain" DB_DIRECTORY="$db" COST_SOFT_LIMIT=0 \
    COST_HARD_LIMIT=0 SERVICES=tcp://127.0.0.1:0 PEER_DISCOVERY=off "$bin/electrumx-server" \
    >"$work/check.log" 2>&1 &
pid=$!
until grep -q "listening for clients on tcp" "$work/check.log"; do
    kill -0 "$pid" 2>/dev/null || { echo "server exited early" >&2; tail -5 "$work/check.log" >&2; exit 1; }
    sleep 1
done
port=$(grep -o 'listening for clients on tcp://127.0.0.1:0 (127.0.0.1:[0-9]*' "$work/check.log" | grep -o '[0-9]*$')
truth="$("$bin/truthcheck" "$port" "$chain" 2>&1 || true)"
kill -INT "$pid"; wait "$pid" || true; pid=""
if [[ "${KEEP_DB:-}" == 1 ]]; then
    rm -rf "$db_keep"; mkdir -p "$(dirname "$db_keep")"; mv "$db" "$db_keep"
    echo "bench: database kept in $db_keep" >&2
fi

python3 - "$log" "$chain/summary.json" <<EOF
import json, re, sys, datetime
log, summary = sys.argv[1], json.load(open(sys.argv[2]))
ts = lambda line: datetime.datetime.fromisoformat(line.split('Z')[0]).timestamp()
lines = open(log).read().splitlines()
t_start = ts(lines[0])
t_open = next(ts(l) for l in lines if 'index opened; syncing' in l)
pts = [(0.0, 0)]  # (seconds since the index opened, txs indexed)
for line in lines:
    m = re.match(r'(\S+)Z .*sync: height (\d+)/\d+ .* (\d+) txs,', line)
    if m:
        pts.append((ts(line) - t_open, int(m.group(3))))
def time_at(n):
    for (ta, na), (tb, nb) in zip(pts, pts[1:]):
        if na <= n <= nb:
            return ta + (tb - ta) * (n - na) / max(nb - na, 1)
    return None
slices = []
total = pts[-1][1] if pts else 0
step = int("${SLICE:-10000000}")
b = 0
while b + step <= total:
    ta, tb = time_at(b), time_at(b + step)
    if ta is None or tb is None: break
    slices.append((b, tb - ta))
    b += step
txs, blocks = summary["txs"], summary["blocks"]
sync_s, floor_s, compact_s = float("$sync_s"), float("$floor_s"), float("$compact_s" or 0)
db, undo = int("$db_bytes"), int("${undo_bytes:-0}")
print(f"| figure | value |")
print(f"|---|---|")
print(f"| chain | {blocks:,} blocks, {txs:,} txs, {summary['inputs']:,} inputs, {summary['outputs']:,} outputs, {summary['unspent']:,} unspent at the tip, {summary['segwit_txs']:,} segwit txs, {summary['old_spends']:,} spends of coins over a year old, largest block {summary['largest_block_txs']:,} txs |")
print(f"| block files | {summary['block_bytes']/1e9:.2f} GB in {summary['files']} files (xor: $xor) |")
print(f"| generation (\`blockgen\`, cached after the first run) | {summary['seconds']:.0f} s, {txs/summary['seconds']:,.0f} tx/s |")
print(f"| read-and-hash floor (\`hashfloor\`, 2 threads, cold page cache) | {floor_s:.1f} s, {txs/floor_s:,.0f} tx/s |")
print(f"| scanning the block files' frames before the sync (\`BlockFileDaemon::open\`) | {t_open - t_start:.1f} s |")
print(f"| sync until caught up | {sync_s:.0f} s ({sync_s/60:.1f} min), {txs/sync_s:,.0f} tx/s, {sync_s/floor_s:.1f}× the floor |")
for i, (b, s) in enumerate(slices):
    print(f"| slice {i+1}: txs {b/1e6:.0f}M–{(b+step)/1e6:.0f}M | {s:.0f} s, {step/s:,.0f} tx/s |")
if len(slices) >= 2:
    print(f"| last slice / first slice throughput | {slices[0][1]/slices[-1][1]:.2f} |")
print(f"| post-sync compaction | {compact_s:.0f} s |")
print(f"| peak RSS: sync / with the compaction | {int('$sync_rss_kb')//1024:,} MB / {int('$all_rss_kb')//1024:,} MB (CACHE_MB 1,200) |")
print(f"| bytes read from disk: sync / with the compaction | {int('$sync_read')/1e9:.1f} GB / {int('$all_read')/1e9:.1f} GB |")
print(f"| database after the compaction | {db/1e9:.2f} GB, {db/txs:.1f} B/tx; without undo data ({undo/1e6:.0f} MB): {(db-undo)/txs:.1f} B/tx |")
# Projection: seconds per transaction grow linearly with the chain (fitted on the slices:
# s(n) = a + b n), integrated to mainnet's count; blocks cost what they cost here (mainnet
# has as many); the compaction scales with the database.
if len(slices) >= 2:
    xs = [b + step / 2 for b, _ in slices]; ys = [s / step for _, s in slices]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    bb = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)
    bb = max(bb, 0.0); a = my - bb * mx
    N = $mainnet_txs
    fit_here = a * total + bb * total ** 2 / 2
    rest = sync_s - fit_here  # start-up and what the fit leaves out, kept as measured
    proj = a * N + bb * N ** 2 / 2 + max(rest, 0)
    flat = sync_s + (N - txs) * ys[-1]
    print(f"| projected mainnet sync ({N/1e9:.2f}B txs): seconds per tx fitted as a + b·n (a = {a*1e6:.2f} µs, b = {bb*1e15:.3f} µs per billion txs), integrated | {proj/3600:.1f} h (at the last slice's rate throughout: {flat/3600:.1f} h), + compaction {compact_s*N/txs/3600:.1f} h in the background |")
    print(f"| projected mainnet database | {db*N/txs/1e9:.0f} GB ({(db-undo)/txs:.1f} B/tx) |")
EOF
echo
echo "truth: $truth"
