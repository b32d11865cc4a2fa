"""Benchmark: how long a message takes to reach a recipient's open connection on an idle
server. Numbers, not pass/fail.

Two users share a room. The recipient holds an open `/sync` long-poll (and, separately, a
WebSocket); the sender sends one message at a time. For each message we time from the moment
the send response arrives (the sender's "sent" tick) to the moment the recipient's long-poll
returns with it, and the same for the WebSocket push. Also the full round trip from the send
request leaving. 200 messages each, one at a time, on an otherwise idle server.

    cargo build --release
    python bench/sync_latency.py target/release/hearth
"""

import asyncio
import json
import os
import sys
import time
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))
from rooms_500 import SECRET, percentile, register  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "clients"))
from harness import running_hearth  # noqa: E402

ROUNDS = int(os.environ.get("BENCH_ROUNDS", "200"))


def summary(name: str, values: list) -> str:
    ms = [v * 1000 for v in values]
    return (
        f"{name:<44} p50 {percentile(ms, 0.5):6.2f} ms  p95 {percentile(ms, 0.95):6.2f} ms  "
        f"p99 {percentile(ms, 0.99):6.2f} ms  max {max(ms):6.2f} ms"
    )


async def bench(base: str) -> None:
    async with aiohttp.ClientSession() as http:
        alice = await register(http, base, "alice")
        bob = await register(http, base, "bob")
        auth = lambda token: {"Authorization": f"Bearer {token}"}  # noqa: E731
        async with http.post(f"{base}/_matrix/client/v3/createRoom", json={"preset": "public_chat"}, headers=auth(alice)) as r:
            room = (await r.json())["room_id"]
        async with http.post(f"{base}/_matrix/client/v3/rooms/{room}/join", json={}, headers=auth(bob)) as r:
            assert r.status == 200
        async with http.get(f"{base}/_matrix/client/v3/sync", headers=auth(bob)) as r:
            since = (await r.json())["next_batch"]

        async def send(i: int, prefix: str) -> tuple[float, float]:
            started = time.perf_counter()
            url = f"{base}/_matrix/client/v3/rooms/{room}/send/m.room.message/{prefix}{i}"
            async with http.put(url, json={"msgtype": "m.text", "body": f"{prefix}{i}"}, headers=auth(alice)) as r:
                assert r.status == 200, await r.text()
            return started, time.perf_counter()

        # /sync long-poll.
        after_response, round_trip = [], []
        for i in range(ROUNDS):
            url = f"{base}/_matrix/client/v3/sync?since={since}&timeout=30000"
            poll = asyncio.create_task(http.get(url, headers=auth(bob)))
            await asyncio.sleep(0.005)  # let the long-poll reach the server and wait
            started, acknowledged = await send(i, "sync")
            response = await poll
            body = await response.json()
            received = time.perf_counter()
            since = body["next_batch"]
            assert room in body["rooms"]["join"], body
            after_response.append(max(0.0, received - acknowledged))
            round_trip.append(received - started)

        # WebSocket push.
        ws_after, ws_round_trip = [], []
        url = base.replace("http", "ws") + f"/_matrix/client/unstable/io.hearth.websocket/stream?since={since}"
        async with http.ws_connect(url, protocols=("m.json",), headers=auth(bob)) as socket:
            for i in range(ROUNDS):
                started, acknowledged = await send(i, "ws")
                while True:
                    frame = json.loads((await socket.receive()).data)
                    events = frame.get("rooms", {}).get("join", {}).get(room, {}).get("timeline", {}).get("events", [])
                    if any(e.get("content", {}).get("body") == f"ws{i}" for e in events):
                        break
                received = time.perf_counter()
                ws_after.append(max(0.0, received - acknowledged))
                ws_round_trip.append(received - started)

    print(f"{ROUNDS} messages each, one at a time, idle server")
    print(summary("/sync: send response -> recipient's sync", after_response))
    print(summary("/sync: send request -> recipient's sync", round_trip))
    print(summary("WebSocket: send response -> push", ws_after))
    print(summary("WebSocket: send request -> push", ws_round_trip))


def main() -> None:
    os.environ["HEARTH_REGISTRATION_SHARED_SECRET"] = SECRET
    with running_hearth(sys.argv[1]) as base:
        asyncio.run(bench(base))


if __name__ == "__main__":
    main()
