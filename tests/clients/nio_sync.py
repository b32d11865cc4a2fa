"""matrix-nio against a running Hearth: the sync loop. Two users share a room and each runs
nio's own `sync_forever` loop with callbacks. Bob's loop receives alice's message (the
send-to-callback latency is printed), her typing notice and her presence change; alice's loop
receives bob's read receipt and Hearth's `io.hearth.delivered` receipt for her message. Then bob
stops syncing, alice sends 30 messages, and bob's next sync (timeline limit 5) is limited; the
gap is filled with /messages and every message must appear exactly once, in order.

    python tests/clients/nio_sync.py target/debug/hearth
"""

import asyncio
import sys
import time
from typing import Callable

import nio

from harness import check, running_hearth

WAIT_SECONDS = 10


class Inbox:
    """What a client's callbacks saw, with a way to wait until something matching arrives."""

    def __init__(self, client: nio.AsyncClient) -> None:
        self.client = client
        self.items: list[tuple[float, object]] = []
        self.changed = asyncio.Condition()
        self.loop: asyncio.Task | None = None
        self.sync_errors: list[nio.SyncError] = []
        client.add_event_callback(self.on_room_event, nio.RoomMessageText)
        client.add_ephemeral_callback(self.on_room_event, (nio.TypingNoticeEvent, nio.ReceiptEvent))
        client.add_presence_callback(self.on_presence, nio.PresenceEvent)
        client.add_response_callback(self.on_sync_error, nio.SyncError)

    async def add(self, item: object) -> None:
        async with self.changed:
            self.items.append((time.perf_counter(), item))
            self.changed.notify_all()

    async def on_room_event(self, room: nio.MatrixRoom, event: object) -> None:
        await self.add(event)

    async def on_presence(self, event: nio.PresenceEvent) -> None:
        await self.add(event)

    async def on_sync_error(self, response: nio.SyncError) -> None:
        self.sync_errors.append(response)
        await self.add(response)

    def start(self) -> None:
        """Runs nio's sync loop, long-polling, from the client's current `next_batch`."""
        self.loop = asyncio.create_task(self.client.sync_forever(timeout=30000))

    async def stop(self) -> None:
        if self.loop is None:
            return
        self.loop.cancel()
        try:
            await self.loop
        except asyncio.CancelledError:
            pass
        self.loop = None

    async def wait(self, what: str, match: Callable[[object], bool]) -> tuple[float, object]:
        """The first item seen (already or within WAIT_SECONDS) that `match`es."""

        def found():
            if self.sync_errors:
                raise AssertionError(f"{what}: sync failed: {self.sync_errors[0]}")
            if self.loop is not None and self.loop.done():
                raise AssertionError(f"{what}: sync loop ended: {self.loop.exception()!r}")
            return next((item for item in self.items if match(item[1])), None)

        async def until_found():
            async with self.changed:
                while (item := found()) is None:
                    # Wake now and then to notice a sync loop that died without a callback.
                    try:
                        await asyncio.wait_for(self.changed.wait(), 1)
                    except asyncio.TimeoutError:
                        pass
                return item

        try:
            return await asyncio.wait_for(until_found(), WAIT_SECONDS)
        except asyncio.TimeoutError:
            seen = [type(item).__name__ for _, item in self.items[-10:]]
            raise AssertionError(f"{what}: nothing within {WAIT_SECONDS} s (last seen: {seen})") from None


async def logged_in(base: str, name: str) -> nio.AsyncClient:
    client = nio.AsyncClient(base, name)
    response = await client.register(name, f"{name} password 1", device_name=f"{name}'s nio")
    check(isinstance(response, nio.RegisterResponse), f"register {name}", response)
    return client


async def text(client: nio.AsyncClient, room_id: str, body: str) -> str:
    response = await client.room_send(room_id, "m.room.message", {"msgtype": "m.text", "body": body})
    if not isinstance(response, nio.RoomSendResponse):
        raise AssertionError(f"send {body!r}: {response}")
    return response.event_id


async def first_sync(client: nio.AsyncClient) -> None:
    response = await asyncio.wait_for(client.sync(timeout=0), WAIT_SECONDS)
    check(isinstance(response, nio.SyncResponse), f"{client.user_id} initial sync", response)


async def exercise(base: str) -> None:
    alice = await logged_in(base, "alice")
    bob = await logged_in(base, "bob")
    alice_inbox = Inbox(alice)
    bob_inbox = Inbox(bob)
    try:
        created = await alice.room_create(name="Sync test", preset=nio.RoomPreset.private_chat, invite=["@bob:localhost"])
        check(isinstance(created, nio.RoomCreateResponse), "alice creates a room inviting bob", created)
        room_id = created.room_id
        joined = await bob.join(room_id)
        check(isinstance(joined, nio.JoinResponse), "bob joins", joined)

        # Initial syncs outside the loops, so the callbacks only see what happens from here on.
        await first_sync(alice)
        await first_sync(bob)
        check(room_id in bob.rooms and room_id in alice.rooms, "both see the room after the initial sync")
        alice_inbox.start()
        bob_inbox.start()
        # Let both loops settle into their long-polls (they first sync once with timeout 0).
        await asyncio.sleep(0.5)

        # 1. A message reaches bob's sync loop.
        before_send = time.perf_counter()
        hello = await text(alice, room_id, "hello from alice")
        after_send = time.perf_counter()
        received_at, message = await bob_inbox.wait(
            "bob's loop receives the message", lambda e: isinstance(e, nio.RoomMessageText) and e.event_id == hello
        )
        check(message.body == "hello from alice" and message.sender == "@alice:localhost", "bob's callback gets alice's text", message)
        print(
            f"# send->receive latency: {(received_at - after_send) * 1000:.1f} ms after the send response "
            f"({(received_at - before_send) * 1000:.1f} ms after the send request started)"
        )

        # Hearth extra: alice is shown that her message was delivered to bob. nio keeps unknown
        # receipt types in ReceiptEvent.receipts (it only skips them for room.read_receipts).
        _, delivered = await alice_inbox.wait(
            "alice sees an io.hearth.delivered receipt",
            lambda e: isinstance(e, nio.ReceiptEvent)
            and any(r.receipt_type == "io.hearth.delivered" and r.user_id == "@bob:localhost" for r in e.receipts),
        )
        receipt = next(r for r in delivered.receipts if r.receipt_type == "io.hearth.delivered")
        check(receipt.event_id == hello and receipt.timestamp > 0, "delivered receipt names bob and alice's message", delivered)

        # 2. Typing.
        typing = await alice.room_typing(room_id, True, timeout=20000)
        check(isinstance(typing, nio.RoomTypingResponse), "alice starts typing", typing)
        await bob_inbox.wait(
            "bob's loop gets a typing notice listing alice",
            lambda e: isinstance(e, nio.TypingNoticeEvent) and "@alice:localhost" in e.users,
        )
        check(True, "bob's ephemeral callback gets a typing notice listing alice")
        check(bob.rooms[room_id].typing_users == ["@alice:localhost"], "nio's room state shows alice typing", bob.rooms[room_id].typing_users)
        seen_so_far = len(bob_inbox.items)
        stopped = await alice.room_typing(room_id, False)
        check(isinstance(stopped, nio.RoomTypingResponse), "alice stops typing", stopped)
        await bob_inbox.wait(
            "bob's loop sees alice stop typing",
            lambda e: isinstance(e, nio.TypingNoticeEvent) and "@alice:localhost" not in e.users and any(e is item for _, item in bob_inbox.items[seen_so_far:]),
        )
        check(True, "bob's ephemeral callback sees alice stop typing")

        # 3. A read receipt.
        marked = await bob.room_read_markers(room_id, fully_read_event=hello, read_event=hello)
        check(isinstance(marked, nio.RoomReadMarkersResponse), "bob sets his read markers", marked)
        _, read = await alice_inbox.wait(
            "alice's loop gets bob's read receipt",
            lambda e: isinstance(e, nio.ReceiptEvent) and any(r.receipt_type == "m.read" and r.user_id == "@bob:localhost" for r in e.receipts),
        )
        receipt = next(r for r in read.receipts if r.receipt_type == "m.read" and r.user_id == "@bob:localhost")
        check(receipt.event_id == hello and receipt.timestamp > 0, "bob's m.read receipt is on alice's message", read)
        check(
            all(not (r.user_id == "@bob:localhost" and r.receipt_type == "m.fully_read") for _, e in alice_inbox.items if isinstance(e, nio.ReceiptEvent) for r in e.receipts),
            "bob's fully-read marker stays private",
        )
        room_receipt = alice.rooms[room_id].read_receipts.get("@bob:localhost")
        check(room_receipt is not None and room_receipt.event_id == hello, "nio's room state records bob's read receipt", room_receipt)

        # 4. Presence.
        presence = await alice.set_presence("unavailable", "lunch")
        check(isinstance(presence, nio.PresenceSetResponse), "alice sets herself unavailable", presence)
        _, away = await bob_inbox.wait(
            "bob's loop gets alice's presence",
            lambda e: isinstance(e, nio.PresenceEvent) and e.user_id == "@alice:localhost" and e.presence == "unavailable",
        )
        check(away.status_msg == "lunch", "bob's presence callback: alice unavailable, 'lunch'", away)
        member = bob.rooms[room_id].users.get("@alice:localhost")
        check(member is not None and member.presence == "unavailable" and member.status_msg == "lunch", "nio's room member shows alice's presence")

        for name, inbox in (("alice", alice_inbox), ("bob", bob_inbox)):
            ids = [e.event_id for _, e in inbox.items if isinstance(e, nio.RoomMessageText)]
            check(len(ids) == len(set(ids)), f"{name}'s sync loop delivered no message twice", ids)

        # 5. A gap: bob stops syncing, alice sends 30 messages, bob syncs with a small timeline.
        marker = await text(alice, room_id, "before the gap")
        await bob_inbox.wait("bob receives the message before the gap", lambda e: isinstance(e, nio.RoomMessageText) and e.event_id == marker)
        await bob_inbox.stop()
        token = bob.next_batch
        bodies = [f"gap message {i}" for i in range(30)]
        sent = [await text(alice, room_id, body) for body in bodies]
        gap_sync = await asyncio.wait_for(bob.sync(timeout=0, since=token, sync_filter={"room": {"timeline": {"limit": 5}}}), WAIT_SECONDS)
        check(isinstance(gap_sync, nio.SyncResponse), "bob syncs once with a timeline limit of 5", gap_sync)
        timeline = gap_sync.rooms.join[room_id].timeline
        check(timeline.limited is True, "the timeline is limited", timeline.limited)
        check(len(timeline.events) == 5, "exactly 5 timeline events", [type(e).__name__ for e in timeline.events])
        check(bool(timeline.prev_batch), "the timeline has a prev_batch", timeline.prev_batch)
        synced = [(e.event_id, e.body) for e in timeline.events if isinstance(e, nio.RoomMessageText)]
        check(synced == list(zip(sent, bodies))[-len(synced):] and len(synced) == len(timeline.events), "the timeline holds the latest messages", synced)

        paged: list[tuple[str, str]] = []
        start = timeline.prev_batch
        reached_marker = False
        for _ in range(20):
            page = await asyncio.wait_for(bob.room_messages(room_id, start=start, limit=7), WAIT_SECONDS)
            if not isinstance(page, nio.RoomMessagesResponse):
                raise AssertionError(f"page back from {start}: {page}")
            for event in page.chunk:
                if isinstance(event, nio.RoomMessageText):
                    if event.event_id == marker:
                        reached_marker = True
                        break
                    paged.append((event.event_id, event.body))
            if reached_marker or not page.end or not page.chunk:
                break
            start = page.end
        check(reached_marker, "pagination reached the message before the gap")
        combined = list(reversed(paged)) + synced
        combined_bodies = [body for _, body in combined]
        duplicates = sorted({body for body in combined_bodies if combined_bodies.count(body) > 1})
        missing = [body for body in bodies if body not in combined_bodies]
        check(not duplicates, "no message both synced and paged, or paged twice", duplicates)
        check(not missing, "no message missing from sync + pagination", missing)
        check(combined == list(zip(sent, bodies)), "sync + pagination give all 30 exactly once, in order", combined_bodies)
    finally:
        await alice_inbox.stop()
        await bob_inbox.stop()
        await alice.close()
        await bob.close()


def main() -> None:
    with running_hearth(sys.argv[1]) as base:
        asyncio.run(exercise(base))


if __name__ == "__main__":
    main()
