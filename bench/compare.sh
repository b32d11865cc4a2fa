#!/usr/bin/env bash
# Hearth side by side with Synapse, same scenarios, same sizes, one run; writes
# BENCHMARKS.md and the charts in bench/results/.
#
#   bash bench/compare.sh                 # both backends
#   BACKENDS=sqlite bash bench/compare.sh # one
#
# Sizes come from the environment (defaults in brackets): BENCH_SECONDS [30], BENCH_USERS
# [100], BENCH_RATES [100,1000,max], BENCH_SENDERS [64], BENCH_MEMBERS [500], BENCH_REPEATS
# [20], BENCH_CONNECTIONS [10000], BENCH_ROOMS [1000], BENCH_ROOM_MEMBERS [50], BENCH_HISTORY
# [10000]. SYNAPSE_* of the same names cap Synapse only (it is much slower to set up); the
# report says where a cap applied. Each measurement starts a fresh server on a fresh database:
# connections alone, the other scenarios, and (Hearth) latency and fan-out with recipients on
# the WebSocket transport. RESUME=1 keeps results already in bench/results (an interrupted run
# picks up where it stopped). Needs PostgreSQL on 127.0.0.1:5432 (trust) for the
# postgres backend, Python 3, and network access to PyPI for the pinned Synapse.
set -euo pipefail
cd "$(dirname "$0")/.."

SYNAPSE_VERSION=${SYNAPSE_VERSION:-1.163.2}
BACKENDS=${BACKENDS:-sqlite postgres}
POSTGRES=${HEARTH_TEST_POSTGRES:-postgres://postgres@127.0.0.1:5432}
results=bench/results
mkdir -p "$results"
ulimit -n 1048576 2>/dev/null || ulimit -n 65536 2>/dev/null || true
echo "open-file limit for both servers and the load generator: $(ulimit -n)"
# Tens of thousands of loopback connections per run: more ephemeral ports, and reuse of those
# in TIME_WAIT (best effort; needs root, and changes only this machine's network namespace).
sysctl -qw net.ipv4.ip_local_port_range="15000 65000" net.ipv4.tcp_tw_reuse=1 2>/dev/null || true

venv=target/synapse-venv
installed=$("$venv/bin/python" -c "import importlib.metadata as m, psycopg2; print(m.version('matrix-synapse'))" 2>/dev/null || true)
if [ "$installed" != "$SYNAPSE_VERSION" ]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "matrix-synapse==$SYNAPSE_VERSION" psycopg2-binary
fi
report_venv=target/ci-venv
[ -x "$report_venv/bin/python" ] || python3 -m venv "$report_venv"
"$report_venv/bin/pip" install --quiet --disable-pip-version-check matplotlib

cargo build --release --package hearth --package hearth-bench

size() { local name=$1 default=$2 server=$3; local var="BENCH_$name" cap="SYNAPSE_$name"
    if [ "$server" = synapse ] && [ -n "${!cap:-}" ]; then echo "${!cap}"; else echo "${!var:-$default}"; fi; }
bench_args() {
    local server=$1
    echo --users "$(size USERS 100 "$server")" --rates "$(size RATES 100,1000,max "$server")" \
        --seconds "$(size SECONDS 30 "$server")" --senders "$(size SENDERS 64 "$server")" \
        --members "$(size MEMBERS 500 "$server")" --repeats "$(size REPEATS 20 "$server")" \
        --connections "$(size CONNECTIONS 10000 "$server")" --rooms "$(size ROOMS 1000 "$server")" \
        --room-members "$(size ROOM_MEMBERS 50 "$server")" --history "$(size HISTORY 10000 "$server")"
}

wait_healthy() {
    for _ in $(seq 600); do
        curl -sf "$1" >/dev/null && return 0
        sleep 0.1
    done
    echo "server at $1 did not come up" >&2
    return 1
}

# Waits (up to two minutes) for the previous run's sockets to close, so the next server's
# run does not start short of ports.
settle() {
    for _ in $(seq 120); do
        [ "$(ss -tan | grep -vc LISTEN)" -lt 2000 ] && return 0
        sleep 1
    done
}

fresh_pg() { psql "$POSTGRES/postgres" -qc "DROP DATABASE IF EXISTS $1" -c "CREATE DATABASE $1 ENCODING 'UTF8' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0" >/dev/null; }

# start_hearth BACKEND: a fresh Hearth on a fresh database; sets pid, dir and port.
start_hearth() {
    local backend=$1
    port=18480
    dir=$(mktemp -d)
    cat > "$dir/hearth.toml" <<TOML
listen = "127.0.0.1:$port"
data_dir = "$dir"
log = "warn"
[registration]
shared_secret = "bench"
TOML
    cat bench/no-rate-limits.toml >> "$dir/hearth.toml"
    if [ "$backend" = postgres ]; then
        fresh_pg hearth_bench
        printf '[database]\nurl = "%s/hearth_bench"\n' "$POSTGRES" >> "$dir/hearth.toml"
    fi
    target/release/hearth serve --config "$dir/hearth.toml" &
    pid=$!
    wait_healthy "http://127.0.0.1:$port/health"
    sleep 1
    grep VmRSS "/proc/$pid/status" | awk '{print $2}' > "$results/hearth-$backend.idle-rss"
}

# start_synapse BACKEND: the same for Synapse.
start_synapse() {
    local backend=$1
    port=18490
    dir=$(mktemp -d)
    "$venv/bin/python" -m synapse.app.homeserver --server-name localhost --config-path "$dir/homeserver.yaml" \
        --data-directory "$dir" --generate-config --report-stats=no >/dev/null
    # The generated logging config writes into the working directory: keep it in the run's.
    sed -i "s|filename: .*|filename: $dir/homeserver.log|" "$dir/localhost.log.config"
    "$venv/bin/python" - "$dir/homeserver.yaml" "$backend" "$POSTGRES" "$port" <<'PY'
import sys, yaml
path, backend, postgres, port = sys.argv[1:]
config = yaml.safe_load(open(path))
config["listeners"] = [{"port": int(port), "bind_addresses": ["127.0.0.1"], "type": "http", "tls": False,
                        "x_forwarded": False, "resources": [{"names": ["client"], "compress": False}]}]
config["registration_shared_secret"] = "bench"
config["suppress_key_server_warning"] = True
config["trusted_key_servers"] = []
big = {"per_second": 1000000, "burst_count": 1000000}
for key in ["rc_message", "rc_registration", "rc_login", "rc_joins", "rc_joins_per_room", "rc_invites",
            "rc_admin_redaction", "rc_3pid_validation", "rc_presence", "rc_delayed_event_mgmt",
            "rc_registration_token_validity", "rc_room_creation", "rc_reports", "rc_media_create"]:
    config[key] = big
config["rc_login"] = {"address": big, "account": big, "failed_attempts": big}
config["rc_joins"] = {"local": big, "remote": big}
config["rc_invites"] = {"per_room": big, "per_user": big, "per_issuer": big}
config["experimental_features"] = {"msc3575_enabled": True}
if backend == "postgres":
    config["database"] = {"name": "psycopg2", "args": {"user": "postgres", "host": "127.0.0.1", "database": "synapse_bench",
                                                        "cp_min": 5, "cp_max": 10}}
open(path, "w").write(yaml.safe_dump(config))
PY
    [ "$backend" = postgres ] && fresh_pg synapse_bench
    "$venv/bin/python" -m synapse.app.homeserver --config-path "$dir/homeserver.yaml" > "$dir/synapse.out" 2>&1 &
    pid=$!
    wait_healthy "http://127.0.0.1:$port/health"
    sleep 2
    grep VmRSS "/proc/$pid/status" | awk '{print $2}' > "$results/synapse-$backend.idle-rss"
}

stop_server() {
    kill "$pid"
    wait "$pid" || true
    rm -rf "$dir"
}

# measure SERVER BACKEND OUT [hearth-bench arguments]: one fresh server, one load-generator
# run, its JSON in $results/OUT.json.
measure() {
    local server=$1 backend=$2 out=$3
    shift 3
    if [ -n "${RESUME:-}" ] && [ -s "$results/$out.json" ]; then
        echo "kept $results/$out.json (RESUME)"
        return
    fi
    settle
    "start_$server" "$backend"
    target/release/hearth-bench --base "http://127.0.0.1:$port" --shared-secret bench --server-pid "$pid" \
        --prefix bench "$@" --json > "$results/$out.json" ||
        { stop_server; echo "the load generator failed" >&2; exit 1; }
    stop_server
}

# Connections are measured on a fresh process of their own: the memory earlier scenarios leave
# behind (and the allocator keeps) would otherwise absorb the connections' growth.
scenarios=(--scenario throughput --scenario latency --scenario fanout --scenario initial-sync --scenario history)
for backend in $BACKENDS; do
    echo "=== Hearth on $backend"
    # shellcheck disable=SC2046
    measure hearth "$backend" "hearth-$backend-connections" --scenario connections $(bench_args hearth)
    # shellcheck disable=SC2046
    measure hearth "$backend" "hearth-$backend" "${scenarios[@]}" $(bench_args hearth)
    echo "=== Hearth on $backend, recipients on the WebSocket transport"
    # shellcheck disable=SC2046
    measure hearth "$backend" "hearth-$backend-ws" --transport websocket --scenario latency --scenario fanout \
        $(bench_args hearth)
    echo "=== Synapse $SYNAPSE_VERSION on $backend"
    # shellcheck disable=SC2046
    measure synapse "$backend" "synapse-$backend-connections" --scenario connections $(bench_args synapse)
    # shellcheck disable=SC2046
    measure synapse "$backend" "synapse-$backend" "${scenarios[@]}" $(bench_args synapse)
done

env | grep -E '^(BENCH|SYNAPSE)_' > "$results/sizes.env" || true
"$report_venv/bin/python" bench/report.py "$results" "$SYNAPSE_VERSION" "$BACKENDS" > BENCHMARKS.md
echo "wrote BENCHMARKS.md"
