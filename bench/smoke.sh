#!/usr/bin/env bash
# Runs the load generator once, at tiny sizes, against a fresh Hearth: it keeps working.
# Not a timed test (no figure is checked), but every scenario must complete without error.
#   bash bench/smoke.sh target/debug/hearth target/debug/hearth-bench
set -euo pipefail
hearth=${1:-target/debug/hearth}
bench=${2:-target/debug/hearth-bench}
data=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
HEARTH_LISTEN="127.0.0.1:$port" HEARTH_DATA_DIR="$data" HEARTH_LOG=warn \
    HEARTH_PUSH_IP_RANGE_ALLOWLIST='["127.0.0.1/32"]' \
    HEARTH_REGISTRATION_SHARED_SECRET=smoke "$hearth" serve --config "$(dirname "$0")/no-rate-limits.toml" &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$data"' EXIT
for _ in $(seq 100); do
    curl -sf "http://127.0.0.1:$port/health" >/dev/null && break
    sleep 0.1
done
"$bench" --base "http://127.0.0.1:$port" --shared-secret smoke --server-pid "$pid" \
    --users 6 --rates 20,max --seconds 2 --senders 4 --members 8 --repeats 3 \
    --connections 50 --rooms 3 --room-members 3 --history 150 --to-device 10 --one-time-keys 50 --claimers 4 \
    --media-mib 2 --media-rounds 2 --media-parallel 2 --push-members 5 --push-messages 3 \
    --parallel 8
# Recipients on Hearth's WebSocket transport.
"$bench" --base "http://127.0.0.1:$port" --shared-secret smoke --server-pid "$pid" --prefix ws \
    --transport websocket --scenario latency --scenario fanout \
    --users 6 --rates 20 --seconds 2 --members 8 --repeats 3 --parallel 8
