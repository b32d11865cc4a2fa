"""Hearth and Synapse federating, driven by matrix-nio: a user on each chats in a room made on
Hearth (invite, join, messages both ways), in a room made on Synapse (joined by alias), and in a
direct chat Synapse's user opens; a late joiner on each side pages back through the history
made on the other (backfill), knocks and restricted joins go both ways, and a room upgraded on
one server is followed from the other; then a group with users on three servers (two Hearths and
Synapse) goes through power changes, edits, reactions, a thread reply, a redaction, a leave, a
kick and a ban, each seen on the other servers.

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


async def say(client: nio.AsyncClient, room_id: str, body: str, **extra) -> str:
    response = await client.room_send(room_id, "m.room.message", {"msgtype": "m.text", "body": body, **extra})
    check(isinstance(response, nio.RoomSendResponse), f"{client.user_id} says {body!r}", response)
    return response.event_id


async def wait_for_event(client: nio.AsyncClient, room_id: str, what: str, matches) -> dict:
    """Syncs until an event in the room's timeline (as raw JSON) satisfies `matches`."""

    def found(response):
        room = response.rooms.join.get(room_id)
        for event in room.timeline.events if room else []:
            if matches(event.source):
                return event.source
        return None

    event = await wait_for(client, what, found)
    check(True, f"{client.user_id} sees {what}")
    return event


async def wait_for_left(client: nio.AsyncClient, room_id: str, what: str) -> None:
    await wait_for(client, what, lambda response: room_id in response.rooms.leave)
    check(True, f"{client.user_id}: {what}")


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


async def exercise(hearth, synapse, third=None) -> None:
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
        await history_and_memberships(alice, bob)
        if third is not None:
            await group_of_three(alice, bob, third, synapse)
    finally:
        await alice.close()
        await bob.close()


async def page_back(client: nio.AsyncClient, room_id: str) -> list:
    """Every message of the room, newest first, paging /messages back 5 at a time."""
    bodies, token = [], None
    for _ in range(100):
        response = await client.room_messages(room_id, start=token, limit=5)
        check(isinstance(response, nio.RoomMessagesResponse), f"{client.user_id} pages back", response)
        bodies += [event.body for event in response.chunk if isinstance(event, nio.RoomMessageText)]
        if not response.end or not response.chunk:
            return bodies
        token = response.end
    raise AssertionError("pagination did not end")


async def post(client: nio.AsyncClient, path: str, body: dict) -> tuple:
    """A client API POST nio has no call for (or none that takes `via`): (status, body)."""
    headers = {"Authorization": f"Bearer {client.access_token}"}
    async with client.client_session.post(f"{client.homeserver}{path}", json=body, headers=headers) as response:
        return response.status, await response.json()


async def upgrade(client: nio.AsyncClient, room_id: str, version: str) -> str:
    """POST /upgrade, as Element does it (nio's room_upgrade does it by hand instead)."""
    status, body = await post(client, f"/_matrix/client/v3/rooms/{room_id}/upgrade", {"new_version": version})
    check(status == 200, f"{client.user_id} upgrades {room_id} to version {version}", body)
    return body["replacement_room"]


def server_of(user_id: str) -> str:
    return user_id.split(":", 1)[1]


async def join_via(client: nio.AsyncClient, room_id: str, server: str) -> int:
    """Joins by room ID through `server`, as clients do from a link (Synapse no longer guesses
    the server from the room ID). Returns the status."""
    status, body = await post(client, f"/_matrix/client/v3/join/{room_id}?via={server}&server_name={server}", {})
    return status


async def knock_via(client: nio.AsyncClient, room_id: str, server: str) -> None:
    status, body = await post(client, f"/_matrix/client/v3/knock/{room_id}?via={server}&server_name={server}", {"reason": "may I?"})
    check(status == 200, f"{client.user_id} knocks on {room_id}", body)


async def history_and_memberships(alice: nio.AsyncClient, bob: nio.AsyncClient) -> None:
    """Late joiners read history from the other server; knocks and restricted joins both ways;
    a room upgraded on one server is followed from the other."""
    for (host, guest, label) in ((bob, alice, "synapse"), (alice, bob, "hearth")):
        # History: the guest joins after ten messages and pages back through all of them.
        room = await host.room_create(name=f"Old {label} room", preset=nio.RoomPreset.public_chat, room_version="11")
        check(isinstance(room, nio.RoomCreateResponse), f"a public room on {label}", room)
        sent = [f"{label} history {i}" for i in range(10)]
        for body in sent:
            await say(host, room.room_id, body)
        check(await join_via(guest, room.room_id, server_of(host.user_id)) == 200, f"{guest.user_id} joins late")
        await say(host, room.room_id, f"{label} welcome")
        await wait_for_text(guest, room.room_id, f"{label} welcome")
        bodies = await page_back(guest, room.room_id)
        check(bodies == [f"{label} welcome"] + sent[::-1], f"{guest.user_id} reads the history made on {label}", bodies)

        # Knock: the guest knocks, the host lets them in.
        room = await host.room_create(name=f"Knock {label}", room_version="11", initial_state=[{"type": "m.room.join_rules", "state_key": "", "content": {"join_rule": "knock"}}])
        check(isinstance(room, nio.RoomCreateResponse), f"a knock room on {label}", room)
        await knock_via(guest, room.room_id, server_of(host.user_id))
        await wait_for_event(host, room.room_id, "the knock", lambda e: e.get("type") == "m.room.member" and e.get("state_key") == guest.user_id and e["content"].get("membership") == "knock")
        invited = await host.room_invite(room.room_id, guest.user_id)
        check(isinstance(invited, nio.RoomInviteResponse), "the knock is answered with an invite", invited)
        await wait_for_invite(guest, room.room_id)
        await join(guest, room.room_id)
        await say(guest, room.room_id, f"let in on {label}")
        await wait_for_text(host, room.room_id, f"let in on {label}")

        # Restricted: members of the lobby may join the inner room; the host's server vouches.
        lobby = await host.room_create(name=f"Lobby {label}", preset=nio.RoomPreset.public_chat, room_version="10")
        check(isinstance(lobby, nio.RoomCreateResponse), f"a lobby on {label}", lobby)
        inner = await host.room_create(name=f"Inner {label}", room_version="10", initial_state=[{"type": "m.room.join_rules", "state_key": "", "content": {"join_rule": "restricted", "allow": [{"type": "m.room_membership", "room_id": lobby.room_id}]}}])
        check(isinstance(inner, nio.RoomCreateResponse), f"a restricted room on {label}", inner)
        refused = await join_via(guest, inner.room_id, server_of(host.user_id))
        check(refused == 403, f"{guest.user_id} is not let in before joining the lobby", refused)
        check(await join_via(guest, lobby.room_id, server_of(host.user_id)) == 200, f"{guest.user_id} joins the lobby")
        check(await join_via(guest, inner.room_id, server_of(host.user_id)) == 200, f"{guest.user_id} joins the restricted room")
        member = await wait_for_event(host, inner.room_id, "the restricted join", lambda e: e.get("type") == "m.room.member" and e.get("state_key") == guest.user_id and e["content"].get("membership") == "join")
        check(member["content"].get("join_authorised_via_users_server") == host.user_id, f"{label} vouched for the join", member)

        # Upgrade: the host upgrades the room, the guest follows the tombstone.
        await upgrade(host, inner.room_id, "11")
        tombstone = await wait_for_event(guest, inner.room_id, "the tombstone", lambda e: e.get("type") == "m.room.tombstone")
        replacement = tombstone["content"]["replacement_room"]
        check(await join_via(guest, replacement, server_of(tombstone["sender"])) == 200, f"{guest.user_id} follows the tombstone")
        await say(guest, replacement, f"followed on {label}")
        await wait_for_text(host, replacement, f"followed on {label}")


async def group_of_three(alice: nio.AsyncClient, bob: nio.AsyncClient, third, synapse) -> None:
    """A room on Hearth with users of two Hearths and of Synapse."""
    carol = await logged_in(third, "carol")
    try:
        group = await alice.room_create(name="Three servers", alias="three", preset=nio.RoomPreset.public_chat)
        check(isinstance(group, nio.RoomCreateResponse), "alice creates a group", group)
        room_id = group.room_id
        # Room IDs of version 12 name no server: the others join by alias.
        alias = f"#three:{alice.user_id.split(':', 1)[1]}"
        check(await join(bob, alias) == room_id, "bob (Synapse) joins the group by alias")
        check(await join(carol, alias) == room_id, "carol (the second Hearth) joins the group by alias")
        first = await say(carol, room_id, "hello from the second hearth")
        await wait_for_text(alice, room_id, "hello from the second hearth")
        await wait_for_text(bob, room_id, "hello from the second hearth")

        # Power: bob (Synapse) gets moderator and sets the topic; everyone sees it.
        levels = await alice.room_get_state_event(room_id, "m.room.power_levels")
        content = dict(levels.content)
        content.setdefault("users", {})[bob.user_id] = 50
        put = await alice.room_put_state(room_id, "m.room.power_levels", content)
        check(isinstance(put, nio.RoomPutStateResponse), "alice makes bob a moderator", put)
        await wait_for_event(bob, room_id, "bob's new power level", lambda e: e.get("type") == "m.room.power_levels" and e["content"].get("users", {}).get(bob.user_id) == 50)
        put = await bob.room_put_state(room_id, "m.room.topic", {"topic": "set on synapse"})
        check(isinstance(put, nio.RoomPutStateResponse), "bob sets the topic", put)
        for client in (alice, carol):
            await wait_for_event(client, room_id, "the topic bob set", lambda e: e.get("type") == "m.room.topic" and e["content"].get("topic") == "set on synapse")

        # Edit, reaction, thread reply, redaction.
        original = await say(bob, room_id, "typo")
        await say(bob, room_id, "* fixed", **{"m.new_content": {"msgtype": "m.text", "body": "fixed"}, "m.relates_to": {"rel_type": "m.replace", "event_id": original}})
        await wait_for_event(carol, room_id, "bob's edit", lambda e: e.get("content", {}).get("m.relates_to", {}).get("rel_type") == "m.replace")
        react = await alice.room_send(room_id, "m.reaction", {"m.relates_to": {"rel_type": "m.annotation", "event_id": first, "key": "👍"}})
        check(isinstance(react, nio.RoomSendResponse), "alice reacts to carol's message", react)
        await wait_for_event(carol, room_id, "alice's reaction", lambda e: e.get("type") == "m.reaction")
        await wait_for_event(bob, room_id, "alice's reaction", lambda e: e.get("type") == "m.reaction")
        await say(bob, room_id, "in a thread", **{"m.relates_to": {"rel_type": "m.thread", "event_id": first}})
        await wait_for_event(carol, room_id, "bob's thread reply", lambda e: e.get("content", {}).get("m.relates_to", {}).get("rel_type") == "m.thread")
        redact = await bob.room_redact(room_id, original, reason="oops")
        check(isinstance(redact, nio.RoomRedactResponse), "bob redacts his message", redact)
        await wait_for_event(alice, room_id, "bob's redaction", lambda e: e.get("type") == "m.room.redaction")
        await wait_for_event(carol, room_id, "bob's redaction", lambda e: e.get("type") == "m.room.redaction")

        # Leave, kick, ban.
        left = await carol.room_leave(room_id)
        check(isinstance(left, nio.RoomLeaveResponse), "carol leaves", left)
        await wait_for_event(bob, room_id, "carol leaving", lambda e: e.get("type") == "m.room.member" and e.get("state_key") == carol.user_id and e["content"].get("membership") == "leave")
        kicked = await alice.room_kick(room_id, bob.user_id, reason="bye")
        check(isinstance(kicked, nio.RoomKickResponse), "alice kicks bob", kicked)
        await wait_for_left(bob, room_id, "bob sees he was kicked")
        banned = await alice.room_ban(room_id, carol.user_id, reason="no")
        check(isinstance(banned, nio.RoomBanResponse), "alice bans carol", banned)
        again = await carol.join(room_id)
        check(not isinstance(again, nio.JoinResponse), "carol cannot come back", again)
    finally:
        await carol.close()


def main() -> None:
    binary = sys.argv[1]
    with tempfile.TemporaryDirectory() as directory:
        ca = TestCa(directory)
        # HEARTH_DATABASE_URL: Hearth on that (fresh) database instead of SQLite.
        hearth = start_hearth(binary, ca, "127.0.0.2", directory, os.environ.get("HEARTH_DATABASE_URL"))
        synapse = third = None
        try:
            third = start_hearth(binary, ca, "127.0.0.3", directory)
            synapse = start_synapse(sys.executable, ca, "127.0.0.5", directory)
            asyncio.run(exercise(hearth, synapse, third))
        except BaseException:
            for server in (hearth, third, synapse):
                if server:
                    print(f"--- last lines of {server.log}", file=sys.stderr)
                    with open(server.log) as log:
                        print("".join(log.readlines()[-60:]), file=sys.stderr)
            raise
        finally:
            for server in (hearth, third, synapse):
                if server:
                    server.stop()


if __name__ == "__main__":
    main()
