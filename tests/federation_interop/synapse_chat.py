"""Hearth and Synapse federating, driven by matrix-nio: a user on each chats in a room made on
Hearth (invite, join, messages both ways), in a room made on Synapse (joined by alias), and in a
direct chat Synapse's user opens.

    python tests/federation_interop/synapse_chat.py target/debug/hearth

Needs matrix-synapse and matrix-nio in the Python running it (.ci/run pins both).
"""

import asyncio
import os
import sys
import tempfile
import time

import nio

from servers import TestCa, check, start_hearth, start_synapse

TIMEOUT = 60


async def logged_in(server, name: str) -> nio.AsyncClient:
    client = nio.AsyncClient(server.base, name)
    response = await client.register(name, f"{name} password 1", device_name=f"{name}'s nio")
    check(isinstance(response, nio.RegisterResponse), f"register {name} on {server.name}", response)
    first = await client.sync(timeout=0)
    check(isinstance(first, nio.SyncResponse), f"{name} syncs", first)
    return client


async def wait_for(client: nio.AsyncClient, what: str, found) -> object:
    """Syncs until `found(response)` returns something."""
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        response = await client.sync(timeout=1000)
        if isinstance(response, nio.SyncResponse):
            result = found(response)
            if result:
                return result
    raise AssertionError(f"{client.user_id}: {what} did not happen within {TIMEOUT} s")


async def wait_for_text(client: nio.AsyncClient, room_id: str, body: str) -> nio.RoomMessageText:
    def found(response):
        room = response.rooms.join.get(room_id)
        for event in room.timeline.events if room else []:
            if isinstance(event, nio.RoomMessageText) and event.body == body:
                return event
        return None

    event = await wait_for(client, f"{body!r} in {room_id}", found)
    check(True, f"{client.user_id} sees {body!r} from {event.sender}")
    return event


async def wait_for_invite(client: nio.AsyncClient, room_id: str) -> None:
    await wait_for(client, f"an invite to {room_id}", lambda response: room_id in response.rooms.invite)
    check(True, f"{client.user_id} is invited to {room_id}")


async def say(client: nio.AsyncClient, room_id: str, body: str) -> None:
    response = await client.room_send(room_id, "m.room.message", {"msgtype": "m.text", "body": body})
    check(isinstance(response, nio.RoomSendResponse), f"{client.user_id} says {body!r}", response)


async def join(client: nio.AsyncClient, room: str) -> str:
    deadline = time.monotonic() + TIMEOUT
    while True:
        response = await client.join(room)
        if isinstance(response, nio.JoinResponse):
            check(True, f"{client.user_id} joins {room}")
            return response.room_id
        # Synapse may not have the invite processed the instant it shows; retry briefly.
        if time.monotonic() > deadline:
            raise AssertionError(f"{client.user_id} could not join {room}: {response}")
        await asyncio.sleep(1)


async def exercise(hearth, synapse) -> None:
    alice = await logged_in(hearth, "alice")
    bob = await logged_in(synapse, "bob")
    try:
        # A room made on Hearth: bob (on Synapse) is invited, joins, and both talk.
        room = await alice.room_create(name="Hearth room", alias="hearthroom", invite=[bob.user_id])
        check(isinstance(room, nio.RoomCreateResponse), "alice creates a room on Hearth inviting bob", room)
        await wait_for_invite(bob, room.room_id)
        await join(bob, room.room_id)
        await say(alice, room.room_id, "hello from hearth")
        await wait_for_text(bob, room.room_id, "hello from hearth")
        await say(bob, room.room_id, "hello from synapse")
        await wait_for_text(alice, room.room_id, "hello from synapse")

        # A room made on Synapse: alice joins it by alias.
        public = await bob.room_create(name="Synapse room", alias="synroom", preset=nio.RoomPreset.public_chat)
        check(isinstance(public, nio.RoomCreateResponse), "bob creates a public room on Synapse", public)
        joined = await join(alice, f"#synroom:{synapse.name}")
        check(joined == public.room_id, "the alias leads to bob's room", joined)
        await say(bob, public.room_id, "welcome to synapse")
        await wait_for_text(alice, public.room_id, "welcome to synapse")
        await say(alice, public.room_id, "thanks, bob")
        await wait_for_text(bob, public.room_id, "thanks, bob")

        # A direct chat bob opens with alice.
        dm = await bob.room_create(is_direct=True, preset=nio.RoomPreset.trusted_private_chat, invite=[alice.user_id])
        check(isinstance(dm, nio.RoomCreateResponse), "bob opens a DM with alice", dm)
        await wait_for_invite(alice, dm.room_id)
        await join(alice, dm.room_id)
        await say(alice, dm.room_id, "dm from hearth")
        await wait_for_text(bob, dm.room_id, "dm from hearth")
        await say(bob, dm.room_id, "dm from synapse")
        await wait_for_text(alice, dm.room_id, "dm from synapse")
    finally:
        await alice.close()
        await bob.close()


def main() -> None:
    binary = sys.argv[1]
    with tempfile.TemporaryDirectory() as directory:
        ca = TestCa(directory)
        # HEARTH_DATABASE_URL: Hearth on that (fresh) database instead of SQLite.
        hearth = start_hearth(binary, ca, "127.0.0.2", directory, os.environ.get("HEARTH_DATABASE_URL"))
        synapse = None
        try:
            synapse = start_synapse(sys.executable, ca, "127.0.0.5", directory)
            asyncio.run(exercise(hearth, synapse))
        except BaseException:
            for server in (hearth, synapse):
                if server:
                    print(f"--- last lines of {server.log}", file=sys.stderr)
                    with open(server.log) as log:
                        print("".join(log.readlines()[-60:]), file=sys.stderr)
            raise
        finally:
            for server in (hearth, synapse):
                if server:
                    server.stop()


if __name__ == "__main__":
    main()
