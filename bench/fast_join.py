"""Fast joins (partial state, MSC3706): a Synapse room of BENCH_MEMBERS [2000] members, made by
this script, joined from Hearth and from a second Synapse. For each joiner: how long until the
joiner can send (the join, then a first message, accepted), and until the full state is here
(its /joined_members lists every member). Joiners, each a fresh server:

- Hearth, with partial state (its default);
- Hearth without partial state (`federation.partial_state_joins = false`), for reference;
- Synapse, with partial state (its default);
- Synapse without partial state (its federation client patched to ask for the whole state:
  Synapse has no setting for it).

    python bench/fast_join.py target/release/hearth

Needs matrix-synapse (and aiohttp, which it brings) in the Python running it. Writes
bench/results/fast_join.json and prints a table.
"""

import asyncio
import json
import os
import sys
import tempfile
import time

import aiohttp

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "federation_interop"))

from servers import TestCa, start_hearth, start_synapse  # noqa: E402

MEMBERS = int(os.environ.get("BENCH_MEMBERS", "2000"))
# Registration hashes passwords: cheap hashing makes 2,000 accounts quick to set up.
SYNAPSE_EXTRA = "bcrypt_rounds: 4\nrc_joins_per_room: {per_second: 1000, burst_count: 1000}"
FULL_JOIN_PATCH = (
    "import sys, synapse.federation.federation_client as fc\n"
    "original = fc.FederationClient.send_join\n"
    "async def send_join(self, destinations, pdu, room_version, partial_state=True):\n"
    "    return await original(self, destinations, pdu, room_version, partial_state=False)\n"
    "fc.FederationClient.send_join = send_join\n"
    "from synapse.app.homeserver import main\n"
    "sys.argv[0] = 'synapse'\n"
    "main()\n"
)


class Client:
    def __init__(self, session: aiohttp.ClientSession, base: str, token: str | None = None) -> None:
        self.session, self.base, self.token = session, base, token

    async def call(self, method: str, path: str, body: dict | None = None) -> tuple[int, dict]:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        async with self.session.request(method, f"{self.base}{path}", json=body, headers=headers) as response:
            return response.status, await response.json(content_type=None)

    async def register(self, name: str) -> "Client":
        body = {"username": name, "password": f"{name} password", "auth": {"type": "m.login.dummy"}, "inhibit_login": False}
        status, answer = await self.call("POST", "/_matrix/client/v3/register", body)
        if status != 200:
            raise AssertionError(f"register {name}: {answer}")
        return Client(self.session, self.base, answer["access_token"])


async def populate(session: aiohttp.ClientSession, resident) -> tuple[str, str]:
    """The resident Synapse's room of MEMBERS members (and its owner): (room ID, alias)."""
    anon = Client(session, resident.base)
    owner = await anon.register("owner")
    status, room = await owner.call(
        "POST", "/_matrix/client/v3/createRoom", {"preset": "public_chat", "room_alias_name": "big", "name": "Big room"}
    )
    assert status == 200, room
    room_id = room["room_id"]
    queue: asyncio.Queue = asyncio.Queue()
    for index in range(MEMBERS):
        queue.put_nowait(index)
    started = time.monotonic()

    async def worker() -> None:
        while not queue.empty():
            index = queue.get_nowait()
            member = await anon.register(f"member{index}")
            for _ in range(20):
                status, answer = await member.call("POST", f"/_matrix/client/v3/join/{room_id}", {})
                if status == 200:
                    break
                await asyncio.sleep(0.5)
            else:
                raise AssertionError(f"member{index} could not join: {answer}")
            if index % 250 == 0:
                print(f"  {index} members in {time.monotonic() - started:.0f} s", flush=True)

    await asyncio.gather(*(worker() for _ in range(8)))
    print(f"made a room of {MEMBERS} members in {time.monotonic() - started:.0f} s", flush=True)
    return room_id, f"#big:{resident.name}"


async def measure(session: aiohttp.ClientSession, joiner, label: str, room_id: str, alias: str) -> dict:
    user = await Client(session, joiner.base).register("joiner")
    started = time.monotonic()
    status, answer = await user.call("POST", f"/_matrix/client/v3/join/{alias.replace('#', '%23')}", {})
    assert status == 200, (label, answer)
    joined = time.monotonic() - started
    status, answer = await user.call(
        "PUT", f"/_matrix/client/v3/rooms/{room_id}/send/m.room.message/first", {"msgtype": "m.text", "body": "hello"}
    )
    assert status == 200, (label, answer)
    can_send = time.monotonic() - started
    expected = MEMBERS + 2
    count = 0
    while time.monotonic() - started < 600:
        status, answer = await user.call("GET", f"/_matrix/client/v3/rooms/{room_id}/joined_members")
        count = len(answer.get("joined", {})) if status == 200 else 0
        if count >= expected:
            break
        await asyncio.sleep(0.2)
    full = time.monotonic() - started
    result = {"label": label, "join_s": round(joined, 3), "can_send_s": round(can_send, 3), "full_state_s": round(full, 3), "members_seen": count}
    print(f"{label:34} joined {joined:7.2f} s   can send {can_send:7.2f} s   full state {full:7.2f} s   ({count} members)", flush=True)
    return result


async def run(resident, joiners) -> list:
    timeout = aiohttp.ClientTimeout(total=900)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        room_id, alias = await populate(session, resident)
        return [await measure(session, joiner, label, room_id, alias) for label, joiner in joiners]


def main() -> None:
    hearth_binary = sys.argv[1]
    with tempfile.TemporaryDirectory() as directory:
        ca = TestCa(directory)
        servers = []
        try:
            resident = start_synapse(sys.executable, ca, "127.0.0.5", directory, log_level="WARNING", extra=SYNAPSE_EXTRA)
            servers.append(resident)
            hearth = start_hearth(hearth_binary, ca, "127.0.0.2", directory, log_level="warn")
            servers.append(hearth)
            hearth_full = start_hearth(
                hearth_binary, ca, "127.0.0.3", directory, log_level="warn", federation_extra="partial_state_joins = false"
            )
            servers.append(hearth_full)
            synapse = start_synapse(sys.executable, ca, "127.0.0.6", directory, log_level="WARNING", extra=SYNAPSE_EXTRA)
            servers.append(synapse)
            synapse_full = start_synapse(
                sys.executable, ca, "127.0.0.7", directory, log_level="WARNING", extra=SYNAPSE_EXTRA,
                launcher=[sys.executable, "-c", FULL_JOIN_PATCH],
            )
            servers.append(synapse_full)
            results = asyncio.run(
                run(
                    resident,
                    [
                        ("Hearth, partial state", hearth),
                        ("Hearth, full state", hearth_full),
                        ("Synapse, partial state", synapse),
                        ("Synapse, full state", synapse_full),
                    ],
                )
            )
        finally:
            for server in servers:
                server.stop()
    os.makedirs("bench/results", exist_ok=True)
    with open("bench/results/fast_join.json", "w") as out:
        json.dump({"members": MEMBERS, "results": results}, out, indent=2)


if __name__ == "__main__":
    main()
