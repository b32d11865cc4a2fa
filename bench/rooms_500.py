"""Benchmark: a 500-member room. Numbers, not pass/fail.

Starts the given `hearth` binary (use a release build) on SQLite or, with
HEARTH_DATABASE_URL, PostgreSQL; registers 500 users through the shared-secret admin API;
creates a public room and has the 499 others join it concurrently; then 1,000 messages are
sent by 50 members, 32 at a time, and /messages pages are read back.

    cargo build --release
    python bench/rooms_500.py target/release/hearth
"""

import asyncio
import hashlib
import hmac
import os
import statistics
import sys
import time
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "clients"))
from harness import running_hearth  # noqa: E402

SECRET = "bench secret"
MEMBERS = int(os.environ.get("BENCH_MEMBERS", "500"))
MESSAGES = int(os.environ.get("BENCH_MESSAGES", "1000"))
SENDERS = 50
CONCURRENCY = 32


async def register(session: aiohttp.ClientSession, base: str, name: str) -> str:
    async with session.get(f"{base}/_synapse/admin/v1/register") as response:
        nonce = (await response.json())["nonce"]
    mac = hmac.new(SECRET.encode(), digestmod=hashlib.sha1)
    for part in (nonce, name, "bench password"):
        mac.update(part.encode())
        mac.update(b"\x00")
    mac.update(b"notadmin")
    body = {"nonce": nonce, "username": name, "password": "bench password", "admin": False, "mac": mac.hexdigest()}
    async with session.post(f"{base}/_synapse/admin/v1/register", json=body) as response:
        data = await response.json()
        assert response.status == 200, data
        return data["access_token"]


async def bounded(limit: int, jobs):
    semaphore = asyncio.Semaphore(limit)

    async def run(job):
        async with semaphore:
            return await job

    return await asyncio.gather(*(run(job) for job in jobs))


def percentile(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * p))]


async def bench(base: str) -> None:
    v3 = f"{base}/_matrix/client/v3"
    async with aiohttp.ClientSession() as session:
        started = time.perf_counter()
        tokens = await bounded(16, [register(session, base, f"user{i}") for i in range(MEMBERS)])
        print(f"register {MEMBERS} users (argon2id each): {time.perf_counter() - started:.1f} s")

        auth = lambda token: {"Authorization": f"Bearer {token}"}  # noqa: E731
        started = time.perf_counter()
        async with session.post(f"{v3}/createRoom", json={"preset": "public_chat", "name": "Bench"}, headers=auth(tokens[0])) as response:
            room = (await response.json())["room_id"]
        created = time.perf_counter() - started

        async def join(token):
            async with session.post(f"{v3}/rooms/{room}/join", json={}, headers=auth(token)) as response:
                assert response.status == 200, await response.text()

        started = time.perf_counter()
        await bounded(CONCURRENCY, [join(token) for token in tokens[1:]])
        joined = time.perf_counter() - started
        print(f"createRoom: {created * 1000:.0f} ms; {MEMBERS - 1} joins: {joined:.2f} s ({(MEMBERS - 1) / joined:.0f} joins/s)")

        latencies = []

        async def send(i):
            token = tokens[i % SENDERS]
            t0 = time.perf_counter()
            url = f"{v3}/rooms/{room}/send/m.room.message/b{i}"
            async with session.put(url, json={"msgtype": "m.text", "body": f"message {i}"}, headers=auth(token)) as response:
                assert response.status == 200, await response.text()
            latencies.append(time.perf_counter() - t0)

        started = time.perf_counter()
        await bounded(CONCURRENCY, [send(i) for i in range(MESSAGES)])
        elapsed = time.perf_counter() - started
        print(
            f"send {MESSAGES} messages into the {MEMBERS}-member room, {CONCURRENCY} in flight: {elapsed:.2f} s "
            f"({MESSAGES / elapsed:.0f} msg/s), latency p50 {statistics.median(latencies) * 1000:.1f} ms, "
            f"p99 {percentile(latencies, 0.99) * 1000:.1f} ms"
        )

        page_times = []
        token = None
        for _ in range(10):
            t0 = time.perf_counter()
            query = f"dir=b&limit=100" + (f"&from={token}" if token else "")
            async with session.get(f"{v3}/rooms/{room}/messages?{query}", headers=auth(tokens[1])) as response:
                page = await response.json()
            page_times.append(time.perf_counter() - t0)
            token = page.get("end")
        print(f"/messages, 100 events per page: median {statistics.median(page_times) * 1000:.1f} ms")


def main() -> None:
    os.environ["HEARTH_REGISTRATION_SHARED_SECRET"] = SECRET
    with running_hearth(sys.argv[1]) as base:
        asyncio.run(bench(base))


if __name__ == "__main__":
    main()
