#!/bin/sh
# Soak: one server, signed reads at a fixed rate for SECONDS in rounds of at most 60 s
# (pre-signed requests must stay inside the skew window), with replays and forgeries
# mixed in. Passes when every round's verdicts pass (every valid read allowed, every
# replay and forgery denied, audit events equal to requests) and the server's resident
# set at the end is within 10 % of what it was after the first full minute, plus the
# 32 MiB the store's write buffers may fill before their first flush; from eight rounds up,
# also within 5 % of the highest resident set of the first half (it has levelled off).
#   loadtest/soak.sh            2 minutes at 300 req/s: the short run of the test command
#   loadtest/soak.sh 600 500    ten minutes at 500 req/s
# Loopback only; bounded by SECONDS and the tool's own limits. Needs the debug build
# (`cargo build --workspace --all-targets`, which the test command makes).
set -eu
SECONDS_TOTAL="${1:-120}"
RATE="${2:-300}"
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
BIN="$ROOT/target/debug"
DIR="$(mktemp -d)"
PORT=$((20000 + $$ % 20000))
cleanup() { [ -f "$DIR/pid" ] && kill "$(cat "$DIR/pid")" 2>/dev/null; [ -n "${KEEP:-}" ] || rm -rf "$DIR"; }
trap cleanup EXIT INT TERM

cat > "$DIR/tv.toml" <<T
listen = "127.0.0.1:$PORT"
data_dir = "$DIR/data"
[lifecycle]
min_lifetime = "1s"
T
TEMPVAULT_LOG=warn "$BIN/tempvault" serve --config "$DIR/tv.toml" >"$DIR/server.out" 2>"$DIR/server.err" &
echo $! >"$DIR/pid"
i=0
until grep -q listening "$DIR/server.out" 2>/dev/null; do
    i=$((i + 1)); [ "$i" -gt 100 ] && { cat "$DIR/server.err"; exit 1; }; sleep 0.1
done
sleep 1.2
rss() { awk '/^VmRSS:/ { print $2 }' "/proc/$(cat "$DIR/pid")/status"; }
# RocksDB's own share of the resident set, in KiB: "memtables block-cache".
store_kib() { curl -s "http://127.0.0.1:$PORT/metrics" | awk '
    /^tempvault_store_memory_bytes\{part="memtables"\}/ { m = $2 }
    /^tempvault_store_memory_bytes\{part="block_cache"\}/ { b = $2 }
    END { printf "%d %d", m / 1024, b / 1024 }'; }

left=$SECONDS_TOTAL; round=0; elapsed=0; baseline=""; rounds_rss=""
echo "soak: ${SECONDS_TOTAL}s at ${RATE} req/s, mix 90 valid / 5 replay / 5 forged"
while [ "$left" -gt 0 ]; do
    round=$((round + 1))
    this=$(( left < 60 ? left : 60 ))
    if ! "$BIN/tempvault-loadtest" --server "http://127.0.0.1:$PORT" --data-dir "$DIR/data" \
        --machines 4 --duration "${this}s" --rate "$RATE" --concurrency 8 \
        --mix 90,5,5,0,0 --bound-seconds 0 --report "$DIR/round$round.json" \
        >"$DIR/round$round.txt" 2>"$DIR/round$round.err"; then
        cat "$DIR/round$round.txt" "$DIR/round$round.err"
        echo "soak: round $round failed its verdicts"; exit 1
    fi
    left=$((left - this)); elapsed=$((elapsed + this))
    now_rss=$(rss)
    [ -z "$baseline" ] && [ "$elapsed" -ge 60 ] && baseline=$now_rss
    rounds_rss="$rounds_rss $now_rss"
    set -- $(store_kib)
    printf '  round %d: %ss, %s, RSS %s KiB (memtables %s KiB, block cache %s KiB)\n' \
        "$round" "$this" "$(grep -E '^throughput' "$DIR/round$round.txt" | sed 's/  */ /g')" \
        "$now_rss" "$1" "$2"
done
slow=$(curl -s "http://127.0.0.1:$PORT/metrics" | awk '
    /^tempvault_audit_flush_duration_seconds_bucket\{le="1"\}/ { under = $2 }
    /^tempvault_audit_flush_duration_seconds_count/ { all = $2 }
    END { print all - under }')
echo "soak: audit flushes (write + fsync) that took over 1 s: $slow"
if grep -q panicked "$DIR/server.err"; then cat "$DIR/server.err"; echo "soak: server panicked"; exit 1; fi
final=$(rss)
if [ -n "$baseline" ]; then
    limit=$((baseline + baseline / 10 + 32768))
    echo "soak: RSS after the first minute $baseline KiB, at the end $final KiB (limit $limit)"
    [ "$final" -le "$limit" ] || { echo "soak: memory grew more than 10 %"; exit 1; }
else
    echo "soak: shorter than a minute; RSS at the end $final KiB (flatness is judged from 2 minutes up)"
fi
if [ "$round" -ge 8 ]; then
    # A long run must also have levelled off: the end within 5 % of the highest resident
    # set of the first half. (At 300/s the write buffers take three to four minutes to
    # fill and flush for the first time, so shorter runs are still climbing to their level.)
    early=$(echo "$rounds_rss" | awk -v n=$((round / 2)) '{ m = 0; for (i = 1; i <= n; i++) if ($i > m) m = $i; print m }')
    ceiling=$((early + early / 20))
    echo "soak: highest RSS in the first half $early KiB, at the end $final KiB (limit $ceiling)"
    [ "$final" -le "$ceiling" ] || { echo "soak: memory still growing in the second half"; exit 1; }
fi
echo "soak: passed"
