"""matrix-nio against a running Hearth: rooms. A DM and a group are created, another user is
invited and joins, messages are exchanged, one is edited, one answered in a thread, one
reacted to, one redacted, and 200 messages are paged back through.

    python tests/clients/nio_rooms.py target/debug/hearth
"""

import asyncio
import sys

import nio

from harness import check, running_hearth


async def logged_in(base: str, name: str) -> nio.AsyncClient:
    client = nio.AsyncClient(base, name)
    response = await client.register(name, f"{name} password 1", device_name=f"{name}'s nio")
    check(isinstance(response, nio.RegisterResponse), f"register {name}", response)
    return client


async def text(client: nio.AsyncClient, room_id: str, body: str, **extra) -> str:
    content = {"msgtype": "m.text", "body": body, **extra}
    response = await client.room_send(room_id, "m.room.message", content)
    if not isinstance(response, nio.RoomSendResponse):
        raise AssertionError(f"send {body!r}: {response}")
    return response.event_id


async def exercise(base: str) -> None:
    alice = await logged_in(base, "alice")
    bob = await logged_in(base, "bob")
    try:
        dm = await alice.room_create(is_direct=True, preset=nio.RoomPreset.trusted_private_chat, invite=["@bob:localhost"])
        check(isinstance(dm, nio.RoomCreateResponse), "create a DM inviting bob", dm)
        group = await alice.room_create(name="Book club", topic="Chapter 3", preset=nio.RoomPreset.private_chat)
        check(isinstance(group, nio.RoomCreateResponse), "create a group", group)

        invite = await alice.room_invite(group.room_id, "@bob:localhost")
        check(isinstance(invite, nio.RoomInviteResponse), "invite bob to the group", invite)
        for room_id in (dm.room_id, group.room_id):
            joined = await bob.join(room_id)
            check(isinstance(joined, nio.JoinResponse) and joined.room_id == room_id, "bob joins", joined)
        members = await alice.joined_members(group.room_id)
        check(sorted(m.user_id for m in members.members) == ["@alice:localhost", "@bob:localhost"], "both in the group", members)

        hello = await text(alice, dm.room_id, "hello bob")
        reply = await text(bob, dm.room_id, "hi alice")
        edit = await text(
            alice,
            dm.room_id,
            "* hello, bob!",
            **{"m.new_content": {"msgtype": "m.text", "body": "hello, bob!"}, "m.relates_to": {"rel_type": "m.replace", "event_id": hello}},
        )
        thread = await text(bob, group.room_id, "which chapter?")
        in_thread = await text(
            alice, group.room_id, "chapter 3", **{"m.relates_to": {"rel_type": "m.thread", "event_id": thread, "is_falling_back": True, "m.in_reply_to": {"event_id": thread}}}
        )
        reaction = await alice.room_send(dm.room_id, "m.reaction", {"m.relates_to": {"rel_type": "m.annotation", "event_id": reply, "key": "👍"}})
        check(isinstance(reaction, nio.RoomSendResponse), "react to bob's message", reaction)
        redacted = await bob.room_redact(dm.room_id, reply, reason="typo")
        check(isinstance(redacted, nio.RoomRedactResponse), "bob redacts his message", redacted)

        event = await alice.room_get_event(dm.room_id, reply)
        check(isinstance(event, nio.RoomGetEventResponse), "read the redacted event", event)
        check(event.event.source["content"] == {}, "redacted content is gone", event.event.source)
        edited = await bob.room_get_event(dm.room_id, edit)
        check(edited.event.source["content"]["m.relates_to"]["rel_type"] == "m.replace", "the edit relates to the original", edited.event.source)
        threaded = await bob.room_get_event(group.room_id, in_thread)
        check(threaded.event.source["content"]["m.relates_to"]["event_id"] == thread, "thread reply points at its root", threaded.event.source)
        stranger = await logged_in(base, "mallory")
        denied = await stranger.room_get_event(dm.room_id, hello)
        check(isinstance(denied, nio.RoomGetEventError), "outsiders cannot read the DM", denied)
        await stranger.close()

        sent = [await text(alice if i % 2 else bob, group.room_id, f"message {i}") for i in range(200)]
        seen: list[str] = []
        token = None
        while True:
            page = await bob.room_messages(group.room_id, start=token, limit=37)
            check(isinstance(page, nio.RoomMessagesResponse), "page back", page) if token is None else None
            seen.extend(e.event_id for e in page.chunk if isinstance(e, nio.RoomMessageText) and e.body.startswith("message "))
            if not page.end or not page.chunk:
                break
            token = page.end
        check(seen == list(reversed(sent)), "200 messages paged back in exact reverse order", len(seen))
    finally:
        await alice.close()
        await bob.close()


def main() -> None:
    with running_hearth(sys.argv[1]) as base:
        asyncio.run(exercise(base))


if __name__ == "__main__":
    main()
