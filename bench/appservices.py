"""Application services, Hearth beside Synapse in one run: `hearth-bench --scenario appservice`
plays the appservice (its registration is written here and loaded by each server at start),
and measures event → transaction latency (messages one at a time) and the transaction rate
(BENCH_SENDERS [16] users sending as fast as acknowledged for BENCH_SECONDS [20]), and the
catch-up after an outage (BENCH_AS_BACKLOG [5000] messages queued while the appservice answers
503, then delivered from the server's queue).

    python bench/appservices.py target/release/hearth target/release/hearth-bench

Servers, each fresh, on loopback: Hearth on SQLite, Hearth on PostgreSQL (unless
BENCH_POSTGRES is empty; default postgres://postgres@127.0.0.1:5432), Synapse on SQLite and
on PostgreSQL (the Python running this needs matrix-synapse, and psycopg2 for PostgreSQL).
Writes bench/results/appservices.json and prints a table.
"""

import json
import os
import socket
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "federation_interop"))

from servers import TestCa, start_hearth, start_synapse  # noqa: E402

SENDERS = os.environ.get("BENCH_SENDERS", "16")
SECONDS = os.environ.get("BENCH_SECONDS", "20")
MESSAGES = os.environ.get("BENCH_AS_MESSAGES", "200")
BACKLOG = os.environ.get("BENCH_AS_BACKLOG", "5000")
POSTGRES = os.environ.get("BENCH_POSTGRES", "postgres://postgres@127.0.0.1:5432")
RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "appservices.json")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def registration(directory: str, port: int) -> str:
    path = os.path.join(directory, f"bench-as-{port}.yaml")
    with open(path, "w") as out:
        out.write(
            f"""id: bench
url: http://127.0.0.1:{port}
as_token: bench-as-token
hs_token: bench-hs-token
sender_localpart: benchasbot
namespaces:
  users: [{{exclusive: true, regex: '@benchas_.*'}}]
  aliases: []
  rooms: []
rate_limited: false
"""
        )
    return path


def fresh_postgres(name: str) -> str:
    # C collation: Synapse refuses other locales.
    create = f"CREATE DATABASE {name} ENCODING 'UTF8' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0"
    for statement in (f"DROP DATABASE IF EXISTS {name}", create):
        subprocess.run(["psql", f"{POSTGRES}/postgres", "-qc", statement], check=True, stderr=subprocess.DEVNULL)
    return f"{POSTGRES}/{name}"


def synapse_postgres(name: str) -> str:
    fresh_postgres(name)
    return (
        f"database:\n  name: psycopg2\n  args: {{user: postgres, host: 127.0.0.1, database: {name}, "
        "cp_min: 5, cp_max: 10}\n"
    )


def run_bench(bench: str, base: str, port: int) -> dict:
    command = [
        bench, "--base", base, "--scenario", "appservice", "--json", "--prefix", f"asb{port}",
        "--appservice-listen", f"127.0.0.1:{port}", "--appservice-token", "bench-as-token",
        "--appservice-messages", MESSAGES, "--appservice-backlog", BACKLOG, "--senders", SENDERS, "--seconds", SECONDS,
    ]
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return json.loads(output.strip().splitlines()[-1])["appservice"]


def main() -> None:
    hearth, bench = sys.argv[1], sys.argv[2]
    results = {}
    with tempfile.TemporaryDirectory() as directory:
        ca = TestCa(directory)
        runs = [("Hearth, SQLite", "hearth", None), ("Synapse, SQLite", "synapse", None)]
        if POSTGRES:
            runs += [("Hearth, PostgreSQL", "hearth", "pg"), ("Synapse, PostgreSQL", "synapse", "pg")]
        for label, kind, database in runs:
            port = free_port()
            path = registration(directory, port)
            if kind == "hearth":
                url = fresh_postgres("hearth_bench_as") if database else None
                server = start_hearth(
                    hearth, ca, "127.0.0.2", directory, database_url=url, log_level="warn",
                    extra=f'[appservices]\nconfig_files = ["{path}"]\n',
                )
            else:
                extra = f"app_service_config_files: [{path}]\n"
                if database:
                    extra += synapse_postgres("synapse_bench_as")
                server = start_synapse(sys.executable, ca, "127.0.0.3", directory, log_level="WARNING", extra=extra)
            try:
                print(f"=== {label}", flush=True)
                results[label] = run_bench(bench, server.base, port)
            finally:
                server.stop()
            os.makedirs(os.path.dirname(RESULTS), exist_ok=True)
            with open(RESULTS, "w") as out:
                json.dump(results, out, indent=2)
    print(
        "\n| Server | send → appservice p50 / p99 | events/s while sending | transactions/s "
        "| events per transaction | drained after | catch-up events/s (transactions/s) |"
    )
    print("|---|---|---|---|---|---|---|")
    for label, r in results.items():
        latency = r["send_to_appservice"]
        print(
            f"| {label} | {latency['p50_ms']:.1f} / {latency['p99_ms']:.1f} ms | {r['events_per_second']:.0f} "
            f"({r['delivered']}/{r['sent']}) | {r['transactions_per_second']:.1f} | {r['events_per_transaction']:.1f} "
            f"| {r['drain_seconds']:.2f} s | {r['catch_up_events_per_second']:.0f} "
            f"({r['catch_up_transactions_per_second']:.1f}; {r['backlog_delivered']}/{r['backlog']}) |"
        )


if __name__ == "__main__":
    main()
