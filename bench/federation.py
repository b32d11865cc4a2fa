"""Federation benchmark: send on one server, the recipient's /sync on another. Starts two
Hearths and two Synapses (pinned, TLS federation on loopback, as tests/federation_interop
does) and runs `hearth-bench --scenario federation` for Hearth→Hearth, Hearth→Synapse,
Synapse→Hearth and Synapse→Synapse, with the same sizes, in one run.

    python bench/federation.py target/release/hearth target/release/hearth-bench

Needs matrix-synapse in the Python running it (bench/compare.sh's venv, or
target/synapse-venv from .ci/run). Sizes: BENCH_SECONDS [20], BENCH_PAIRS [20],
BENCH_FEDERATION_RATE [100]. Writes bench/results/federation.json and prints a table.
"""

import json
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "federation_interop"))

from servers import TestCa, start_hearth, start_synapse  # noqa: E402


def run(bench: str, sender, receiver, label: str, seconds: str, pairs: str, rate: str) -> dict:
    command = [
        bench, "--base", sender.base, "--remote-base", receiver.base, "--scenario", "federation",
        "--seconds", seconds, "--pairs", pairs, "--federation-rate", rate, "--prefix", label.replace("→", "-"),
        "--parallel", "16", "--json",
    ]
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    result = json.loads(output)["federation"]
    result["label"] = label
    return result


def main() -> None:
    hearth_binary, bench = sys.argv[1], sys.argv[2]
    seconds = os.environ.get("BENCH_SECONDS", "20")
    pairs = os.environ.get("BENCH_PAIRS", "20")
    rate = os.environ.get("BENCH_FEDERATION_RATE", "100")
    results = []
    with tempfile.TemporaryDirectory() as directory:
        ca = TestCa(directory)
        servers = []
        try:
            hearth_a = start_hearth(hearth_binary, ca, "127.0.0.2", directory, log_level="warn")
            hearth_b = start_hearth(hearth_binary, ca, "127.0.0.3", directory, log_level="warn")
            synapse_a = start_synapse(sys.executable, ca, "127.0.0.5", directory, log_level="WARNING")
            synapse_b = start_synapse(sys.executable, ca, "127.0.0.6", directory, log_level="WARNING")
            servers = [hearth_a, hearth_b, synapse_a, synapse_b]
            for sender, receiver, label in [
                (hearth_a, hearth_b, "Hearth→Hearth"),
                (hearth_a, synapse_a, "Hearth→Synapse"),
                (synapse_a, hearth_a, "Synapse→Hearth"),
                (synapse_a, synapse_b, "Synapse→Synapse"),
            ]:
                result = run(bench, sender, receiver, label, seconds, pairs, rate)
                results.append(result)
                latency = result["latency"]
                print(
                    f"{label:16} {result['achieved_rate']:6.1f} msg/s: p50 {latency['p50_ms']:7.1f} ms  "
                    f"p99 {latency['p99_ms']:7.1f} ms  ({result['delivered']}/{result['messages']} delivered); "
                    f"max {result['max_delivered_per_second']:7.1f} delivered/s",
                    flush=True,
                )
        finally:
            for server in servers:
                server.stop()
    os.makedirs("bench/results", exist_ok=True)
    with open("bench/results/federation.json", "w") as out:
        json.dump(
            {"seconds": int(seconds), "pairs": int(pairs), "rate": float(rate),
             "results": [{k: v for k, v in r.items() if k != "samples"} for r in results]},
            out,
            indent=2,
        )


if __name__ == "__main__":
    main()
