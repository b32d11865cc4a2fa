"""Turns bench/compare.sh's JSON results into BENCHMARKS.md (on stdout) and SVG charts in
the results directory: latency CDFs of both servers on one chart, messages/s over time.

    python bench/report.py bench/results SYNAPSE_VERSION "sqlite postgres"
"""

import datetime
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

results = Path(sys.argv[1])
synapse_version = sys.argv[2]
backends = sys.argv[3].split()


def read(name):
    path = results / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() and path.stat().st_size else None


def load(server, backend):
    """The main run, with connections from their own fresh-process run and (Hearth) the
    WebSocket-transport run under "ws"."""
    data = read(f"{server}-{backend}")
    if data is None:
        return None
    connections = read(f"{server}-{backend}-connections")
    if connections and connections.get("connections"):
        data["connections"] = connections["connections"]
    data["ws"] = read(f"{server}-{backend}-ws")
    return data


def idle_rss(server, backend):
    path = results / f"{server}-{backend}.idle-rss"
    return int(path.read_text().strip()) if path.exists() else None


def ratio(h, s, higher_is_better):
    if h is None or s is None or h == 0 or s == 0:
        return "–"
    r = h / s
    if abs(r - 1) < 0.005:
        return "1.00× (same)"
    better = (r > 1) if higher_is_better else (r < 1)
    shown = f"{r:.2f}" if r >= 0.1 else f"{r:.2g}"
    return f"{shown}× ({'better' if better else 'worse'})"


def fmt(v, unit=""):
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:,.2f}{unit}" if v < 100 else f"{v:,.0f}{unit}"
    return f"{v:,}{unit}"


def rate_labels(server):
    """The --rates each server ran, in order ("max" = its own throughput), from sizes.env."""
    env = {}
    path = results / "sizes.env"
    if path.exists():
        for line in path.read_text().splitlines():
            if "=" in line:
                key, value = line.split("=", 1)
                env[key] = value
    default = env.get("BENCH_RATES", "100,1000,max")
    value = env.get("SYNAPSE_RATES", default) if server == "synapse" else default
    return value.split(",")


def latency_pairs(h, s):
    """(label, Hearth result, Synapse result) per rate either server ran."""
    by_label = {}
    for server, data in (("hearth", h), ("synapse", s)):
        for label, result in zip(rate_labels(server), (data or {}).get("latency", [])):
            by_label.setdefault(label, [None, None])[0 if server == "hearth" else 1] = result
    order = sorted(by_label, key=lambda l: float("inf") if l == "max" else float(l))
    return [(label, *by_label[label]) for label in order]


def rows_for(h, s, backend):
    rows = []

    def add(name, hv, sv, unit, higher_is_better, note=""):
        rows.append((name, fmt(hv, unit), fmt(sv, unit), ratio(hv, sv, higher_is_better), note))

    add("Idle RSS", idle_rss("hearth", backend), idle_rss("synapse", backend), " KiB", False)
    ht, st = (h or {}).get("throughput"), (s or {}).get("throughput")
    add("Throughput (msg/s)", ht and ht["messages_per_second"], st and st["messages_per_second"], "", True,
        f"{ht['senders'] if ht else '?'} senders; errors {ht and ht['errors']} / {st and st['errors']}")
    for label, hl, sl in latency_pairs(h, s):
        for p in ("p50_ms", "p99_ms"):
            rates = "each server's maximum" if label == "max" else f"{float(label):,.0f} msg/s"
            note = []
            if hl:
                note.append(f"Hearth {hl['achieved_rate']:,.0f} msg/s, {hl['deliveries_seen']}/{hl['deliveries_expected']} delivered")
            if sl:
                note.append(f"Synapse {sl['achieved_rate']:,.0f} msg/s, {sl['deliveries_seen']}/{sl['deliveries_expected']} delivered")
            if not sl:
                note.append("not run on Synapse (capped)")
            add(f"Send → recipient {p[:3]} at {rates}", hl and hl["latency"][p], sl and sl["latency"][p], " ms", False,
                "; ".join(note))
    hf, sf = (h or {}).get("fanout"), (s or {}).get("fanout")
    if hf:
        for p in ("p50_ms", "p99_ms", "max_ms"):
            add(f"{hf['members']}-member fan-out {p[:-3]}", hf["all_members"][p], sf and sf["all_members"][p], " ms", False,
                "" if not sf or sf["members"] == hf["members"] else f"Synapse capped at {sf['members']} members")
    ws = (h or {}).get("ws") or {}
    only = "Hearth only (Synapse has no WebSocket transport)"
    for label, wl in zip(rate_labels("hearth"), ws.get("latency", [])):
        rates = "Hearth's maximum" if label == "max" else f"{float(label):,.0f} msg/s"
        note = f"{only}; {wl['achieved_rate']:,.0f} msg/s, {wl['deliveries_seen']}/{wl['deliveries_expected']} delivered"
        for p in ("p50_ms", "p99_ms"):
            add(f"Send → recipient {p[:3]} at {rates}, WebSocket", wl["latency"][p], None, " ms", False, note)
    wf = ws.get("fanout")
    if wf:
        for p in ("p50_ms", "p99_ms", "max_ms"):
            add(f"{wf['members']}-member fan-out {p[:-3]}, WebSocket", wf["all_members"][p], None, " ms", False, only)
    hc, sc = (h or {}).get("connections"), (s or {}).get("connections")
    if hc:
        add("Idle long-polls held", hc["held"], sc and sc["held"], "", True,
            "" if not sc or sc["requested"] == hc["requested"] else f"Synapse asked for {sc['requested']}")
        add("Bytes per long-poll", hc["bytes_per_connection"], sc and sc["bytes_per_connection"], "", False)
        hw, sw = hc.get("websockets"), (sc or {}).get("websockets")
        if hw:
            note = "Synapse has no WebSocket transport" if not sw else ""
            add("Idle WebSockets held", hw["held"], sw and sw["held"], "", True, note)
            add("Bytes per WebSocket", hw["bytes_per_connection"], sw and sw["bytes_per_connection"], "", False, note)
    hi, si = (h or {}).get("initial_sync"), (s or {}).get("initial_sync")
    if hi:
        note = "" if not si or si["rooms"] == hi["rooms"] else f"Synapse capped at {si['rooms']} rooms"
        add(f"Initial /sync, {hi['rooms']} rooms × {hi['members_per_room']}", hi["sync_seconds"], si and si["sync_seconds"], " s", False, note)
        add("First sliding sync response", hi["sliding_sync_seconds"], si and si["sliding_sync_seconds"], " s", False, note)
        if note:
            # Different sizes: the time per room compares like with like.
            add("Initial /sync per room", hi["sync_seconds"] * 1000 / hi["rooms"],
                si and si["sync_seconds"] * 1000 / si["rooms"], " ms", False, "sync time / rooms")
    hh, sh = (h or {}).get("history"), (s or {}).get("history")
    if hh:
        add(f"/messages through {hh['events']:,} events (events/s)", hh["events_per_second"], sh and sh["events_per_second"], "", True,
            "" if not sh or sh["events"] == hh["events"] else f"Synapse capped at {sh['events']:,}")
    return rows


def charts(h, s, backend):
    made = []
    for label, hl, sl in latency_pairs(h, s):
        title = "each server's maximum rate" if label == "max" else f"{float(label):,.0f} msg/s"
        fig, ax = plt.subplots(figsize=(7, 4))
        ws = dict(zip(rate_labels("hearth"), ((h or {}).get("ws") or {}).get("latency", [])))
        for name, data in (("Hearth", hl), ("Hearth, WebSocket", ws.get(label)), ("Synapse", sl)):
            if not data or not data.get("samples"):
                continue
            xs = sorted(v * 1000 for v in data["samples"])
            ys = [(i + 1) / len(xs) for i in range(len(xs))]
            ax.plot(xs, ys, label=f"{name} at {data['achieved_rate']:,.0f} msg/s (p99 {data['latency']['p99_ms']:,.1f} ms)")
        ax.set_xscale("log")
        ax.set_xlabel("send → recipient's /sync or WebSocket frame (ms, log scale)")
        ax.set_ylabel("fraction of deliveries")
        ax.set_title(f"Latency CDF at {title} ({backend})")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
        name = f"latency-cdf-{backend}-{label}.svg"
        fig.tight_layout()
        fig.savefig(results / name)
        plt.close(fig)
        made.append((f"Latency CDF at {title}", name))
    ht, st = (h or {}).get("throughput"), (s or {}).get("throughput")
    if ht:
        fig, ax = plt.subplots(figsize=(7, 4))
        for name, data in (("Hearth", ht), ("Synapse", st)):
            if data:
                ax.plot(range(1, len(data["per_second"]) + 1), data["per_second"], label=name)
        ax.set_xlabel("second")
        ax.set_ylabel("messages acknowledged per second")
        ax.set_title(f"Throughput over time ({backend})")
        ax.grid(True, alpha=0.3)
        ax.legend()
        name = f"throughput-{backend}.svg"
        fig.tight_layout()
        fig.savefig(results / name)
        plt.close(fig)
        made.append(("Messages per second over time", name))
    return made


def version(cmd):
    try:
        return subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip().splitlines()[0]
    except Exception:  # noqa: BLE001
        return "?"


out = []
out.append("# Benchmarks: Hearth and Synapse side by side\n")
out.append(f"Run on {datetime.date.today().isoformat()} by `bash bench/compare.sh` on one machine: "
           f"{os.cpu_count()} cores, {platform.machine()}, Linux {platform.release()}. "
           f"Hearth {version(['git', 'describe', '--always', '--dirty'])} (release build); "
           f"Synapse {synapse_version} from PyPI; {version(['psql', '--version'])}. Both servers ran on loopback "
           "with rate limits off, one after the other, driven by `hearth-bench` (the client-server API only). "
           "Ratios are Hearth / Synapse; \"better\" marks the direction that is better for users.\n")
sizes = (results / "sizes.env")
if sizes.exists() and sizes.read_text().strip():
    out.append("Sizes set for this run (`SYNAPSE_*` cap Synapse only):\n\n```\n" + sizes.read_text().strip() + "\n```\n")
notes = Path(__file__).resolve().parent / "targets.md"
if notes.exists():
    out.append(notes.read_text())
for backend in backends:
    h, s = load("hearth", backend), load("synapse", backend)
    out.append(f"\n## {backend.capitalize()}\n")
    out.append("| Figure | Hearth | Synapse | Hearth/Synapse | Notes |\n|---|---|---|---|---|")
    for row in rows_for(h, s, backend):
        out.append("| " + " | ".join(str(c) for c in row) + " |")
    for title, name in charts(h, s, backend):
        out.append(f"\n**{title} ({backend})**\n\n![{title}](bench/results/{name})")
print("\n".join(out))
