#!/bin/sh
# Reproduces the README load-test figures. Bounded: seven runs of 10 s against loopback.
# Durable and async audit, closed loop; durable with batch verification off; durable with
# valid reads only, batch verification on and off; then open loop at half the durable
# peak, durable and async. BIN=DIR takes the binaries from DIR instead of target/debug,
# to compare two builds.
set -eu
BIN="${BIN:-$(cd "$(dirname "$0")/.." && pwd)/target/debug}"
run_server() { # $1 durability, $2 dir, $3 max_verify_batch (default 64)
    rm -rf "$2"; mkdir -p "$2"
    cat > "$2/tv.toml" <<T
listen = "127.0.0.1:18750"
data_dir = "$2/data"
[lifecycle]
min_lifetime = "1s"
[audit]
durability = "$1"
[auth]
max_verify_batch = ${3:-64}
T
    TEMPVAULT_LOG=warn $BIN/tempvault serve --config "$2/tv.toml" > "$2/server.out" 2> "$2/server.err" &
    echo $! > "$2/pid"
    for i in $(seq 50); do grep -q listening "$2/server.out" 2>/dev/null && break; sleep 0.2; done
    sleep 1.2
}
stop_server() { kill "$(cat "$1/pid")"; sleep 0.5; }

run_server sync /tmp/lt/sync
$BIN/tempvault-loadtest --server http://127.0.0.1:18750 --data-dir /tmp/lt/sync/data --machines 16 --duration 10s --concurrency 32 --mix 80,5,5,5,5 --bound-seconds 3 --report /tmp/lt/sync.json > /tmp/lt/sync.txt 2>/tmp/lt/sync.progress || true
curl -s http://127.0.0.1:18750/metrics | grep '^tempvault_signature_batch_size_' > /tmp/lt/sync.batches
stop_server /tmp/lt/sync

run_server async /tmp/lt/async
$BIN/tempvault-loadtest --server http://127.0.0.1:18750 --data-dir /tmp/lt/async/data --machines 16 --duration 10s --concurrency 32 --mix 80,5,5,5,5 --bound-seconds 0 --report /tmp/lt/async.json > /tmp/lt/async.txt 2>/tmp/lt/async.progress || true
stop_server /tmp/lt/async

run_server sync /tmp/lt/nobatch 1
$BIN/tempvault-loadtest --server http://127.0.0.1:18750 --data-dir /tmp/lt/nobatch/data --machines 16 --duration 10s --concurrency 32 --mix 80,5,5,5,5 --bound-seconds 3 --report /tmp/lt/nobatch.json > /tmp/lt/nobatch.txt 2>/tmp/lt/nobatch.progress || true
curl -s http://127.0.0.1:18750/metrics | grep '^tempvault_signature_batch_size_' > /tmp/lt/nobatch.batches
stop_server /tmp/lt/nobatch

# Valid reads only, durable audit, batch verification on and then off: with forgeries in
# the mix a third of the batches hold a bad signature and fall back to single checks.
for b in 64 1; do
    run_server sync /tmp/lt/valid-$b "$b"
    $BIN/tempvault-loadtest --server http://127.0.0.1:18750 --data-dir /tmp/lt/valid-$b/data --machines 16 --duration 10s --concurrency 32 --mix 100,0,0,0,0 --bound-seconds 3 --report /tmp/lt/valid-$b.json > /tmp/lt/valid-$b.txt 2>/tmp/lt/valid-$b.progress || true
    curl -s http://127.0.0.1:18750/metrics | grep '^tempvault_signature_batch_size_' > /tmp/lt/valid-$b.batches
    stop_server /tmp/lt/valid-$b
done

peak=$(python3 -c "import json;print(int(json.load(open('/tmp/lt/sync.json'))['throughput_rps']/2))")
run_server sync /tmp/lt/open
$BIN/tempvault-loadtest --server http://127.0.0.1:18750 --data-dir /tmp/lt/open/data --machines 16 --duration 10s --rate $peak --concurrency 32 --mix 100,0,0,0,0 --bound-seconds 0 --report /tmp/lt/open.json > /tmp/lt/open.txt 2>/tmp/lt/open.progress || true
stop_server /tmp/lt/open

# The same open loop with async audit: how much of the tail is the synced write.
run_server async /tmp/lt/open-async
$BIN/tempvault-loadtest --server http://127.0.0.1:18750 --data-dir /tmp/lt/open-async/data --machines 16 --duration 10s --rate $peak --concurrency 32 --mix 100,0,0,0,0 --bound-seconds 0 --report /tmp/lt/open-async.json > /tmp/lt/open-async.txt 2>/tmp/lt/open-async.progress || true
stop_server /tmp/lt/open-async
