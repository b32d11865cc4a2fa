"""Everything beside room events, between Hearth, a second Hearth and Synapse, driven by
matrix-nio: typing, read receipts and presence seen across servers; an encrypted DM and an
encrypted group (real Olm and Megolm in nio, through vodozemac) that every device decrypts,
also after a new device logs in on one server; to-device messages; media uploaded on one
server shown (and thumbnailed) on the other; remote profiles, aliases, public room directories
and a space whose children live on another server.

    python tests/federation_interop/synapse_edus.py target/debug/hearth

Needs matrix-synapse and matrix-nio[e2e] in the Python running it (.ci/run pins both).
"""

import asyncio
import logging
import os
import sys
import tempfile
import time

import nio

from servers import TestCa, check, start_hearth, start_synapse

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "clients"))
from nio_e2ee import Device, all_decrypted, new_device, send, settle, until  # noqa: E402

TIMEOUT = 60
ENCRYPTION = {"type": "m.room.encryption", "state_key": "", "content": {"algorithm": "m.megolm.v1.aes-sha2"}}
logging.getLogger("nio").setLevel(logging.ERROR)


async def request(client: nio.AsyncClient, method: str, path: str, body: dict | None = None) -> tuple:
    """A client API call nio has no method for: (status, JSON body or bytes, content type)."""
    headers = {"Authorization": f"Bearer {client.access_token}"}
    async with client.client_session.request(method, f"{client.homeserver}{path}", json=body, headers=headers) as response:
        content_type = response.headers.get("Content-Type", "")
        if content_type.startswith("application/json"):
            return response.status, await response.json(), content_type
        return response.status, await response.read(), content_type


async def wait_sync(client: nio.AsyncClient, what: str, found) -> object:
    """Syncs (an unencrypted client) until `found(response)` returns something."""
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        response = await client.sync(timeout=1000)
        if isinstance(response, nio.SyncResponse):
            result = found(response)
            if result:
                check(True, f"{client.user_id} sees {what}")
                return result
    raise AssertionError(f"{client.user_id}: {what} did not happen within {TIMEOUT} s")


def ephemeral(response: nio.SyncResponse, room_id: str) -> list:
    room = response.rooms.join.get(room_id)
    return room.ephemeral if room else []


async def plain_client(server, name: str) -> nio.AsyncClient:
    client = nio.AsyncClient(server.base, name)
    response = await client.register(name, f"{name} password 1", device_name=f"{name}'s nio")
    check(isinstance(response, nio.RegisterResponse), f"register {name} on {server.name}", response)
    await client.sync(timeout=0)
    return client


async def join_via(client: nio.AsyncClient, room: str, server: str) -> str:
    deadline = time.monotonic() + TIMEOUT
    while True:
        status, body, _ = await request(client, "POST", f"/_matrix/client/v3/join/{room}?via={server}&server_name={server}", {})
        if status == 200:
            return body["room_id"]
        if time.monotonic() > deadline:
            raise AssertionError(f"{client.user_id} could not join {room}: {body}")
        await asyncio.sleep(1)


async def ephemeral_data(alice: nio.AsyncClient, bob: nio.AsyncClient, hearth, synapse) -> None:
    """Typing, receipts and presence, both ways between Hearth (alice) and Synapse (bob)."""
    room = await alice.room_create(name="Chatter", preset=nio.RoomPreset.public_chat, alias="chatter")
    check(isinstance(room, nio.RoomCreateResponse), "alice makes a room on Hearth", room)
    room_id = room.room_id
    await join_via(bob, room_id, hearth.name)
    await wait_sync(alice, "bob join", lambda r: room_id in alice.rooms and bob.user_id in alice.rooms[room_id].users)

    for (typist, watcher) in ((alice, bob), (bob, alice)):
        typed = await typist.room_typing(room_id, typing_state=True, timeout=30000)
        check(isinstance(typed, nio.RoomTypingResponse), f"{typist.user_id} starts typing", typed)
        await wait_sync(watcher, f"{typist.user_id} typing", lambda r: any(isinstance(e, nio.TypingNoticeEvent) and typist.user_id in e.users for e in ephemeral(r, room_id)))
        await typist.room_typing(room_id, typing_state=False)
        await wait_sync(watcher, f"{typist.user_id} stop typing", lambda r: any(isinstance(e, nio.TypingNoticeEvent) and typist.user_id not in e.users for e in ephemeral(r, room_id)))

    for (reader, writer) in ((bob, alice), (alice, bob)):
        sent = await writer.room_send(room_id, "m.room.message", {"msgtype": "m.text", "body": f"read me, {reader.user_id}"})
        check(isinstance(sent, nio.RoomSendResponse), f"{writer.user_id} sends a message", sent)
        await wait_sync(reader, "the message", lambda r: any(getattr(e, "event_id", None) == sent.event_id for e in r.rooms.join.get(room_id).timeline.events) if room_id in r.rooms.join else None)
        marked = await reader.update_receipt_marker(room_id, sent.event_id)
        check(isinstance(marked, nio.UpdateReceiptMarkerResponse), f"{reader.user_id} sends a read receipt", marked)
        await wait_sync(writer, f"{reader.user_id}'s read receipt", lambda r: any(isinstance(e, nio.ReceiptEvent) and any(x.user_id == reader.user_id and x.event_id == sent.event_id and x.receipt_type == "m.read" for x in e.receipts) for e in ephemeral(r, room_id)))

    for (who, other) in ((bob, alice), (alice, bob)):
        status = f"busy on {who.user_id.split(':', 1)[1]}"
        set_status = await who.set_presence("online", status)
        check(isinstance(set_status, nio.PresenceSetResponse), f"{who.user_id} sets a status", set_status)
        await wait_sync(other, f"{who.user_id}'s presence", lambda r: any(e.user_id == who.user_id and e.status_msg == status for e in r.presence_events))
        got = await other.get_presence(who.user_id)
        check(isinstance(got, nio.PresenceGetResponse) and got.status_msg == status, f"{other.user_id} reads {who.user_id}'s presence", got)


async def encryption(hearth, synapse, hearth2, stores: str) -> None:
    """An encrypted DM (Hearth–Synapse) and group (all three servers), decrypted on every device,
    also by a device that logs in later on Hearth."""
    devices: list[Device] = []
    try:
        alice1 = await new_device(hearth.base, f"{stores}/a1", "alice on hearth", "ealice", "alice e2ee password", True)
        bob = await new_device(synapse.base, f"{stores}/b", "bob on synapse", "ebob", "bob e2ee password", True)
        carol = await new_device(hearth2.base, f"{stores}/c", "carol on hearth 2", "ecarol", "carol e2ee password", True)
        devices += [alice1, bob, carol]
        alice_id, bob_id, carol_id = (d.client.user_id for d in (alice1, bob, carol))
        await settle(devices, rounds=1)
        dm = await alice1.client.room_create(is_direct=True, invite=[bob_id], preset=nio.RoomPreset.trusted_private_chat, initial_state=[ENCRYPTION])
        check(isinstance(dm, nio.RoomCreateResponse), "alice (Hearth) opens an encrypted DM with bob (Synapse)", dm)
        group = await bob.client.room_create(name="Encrypted three", invite=[alice_id, carol_id], preset=nio.RoomPreset.private_chat, initial_state=[ENCRYPTION])
        check(isinstance(group, nio.RoomCreateResponse), "bob (Synapse) makes an encrypted group", group)
        await until(devices, "the invites arrive", lambda: dm.room_id in bob.client.invited_rooms and group.room_id in alice1.client.invited_rooms and group.room_id in carol.client.invited_rooms)
        for device, room_id in ((bob, dm.room_id), (alice1, group.room_id), (carol, group.room_id)):
            joined = await device.client.join(room_id)
            check(isinstance(joined, nio.JoinResponse), f"{device.label} joins {room_id}", joined)

        def ready(device: Device, room_id: str, count: int) -> bool:
            room = device.client.rooms.get(room_id)
            return room is not None and room.encrypted and room.joined_count == count

        await until(devices, "every device sees the rooms encrypted and joined", lambda: ready(alice1, dm.room_id, 2) and ready(bob, dm.room_id, 2) and all(ready(d, group.room_id, 3) for d in devices))
        await settle(devices)
        sent: list = []
        await send(alice1, dm.room_id, "dm from hearth", sent)
        await send(bob, dm.room_id, "dm from synapse", sent)
        dm_phase1 = list(sent)
        for device in devices:
            await send(device, group.room_id, f"group: {device.label}", sent)
        group_phase1 = sent[len(dm_phase1):]
        await all_decrypted(
            devices,
            {"alice on hearth": dm_phase1 + group_phase1, "bob on synapse": dm_phase1 + group_phase1, "carol on hearth 2": group_phase1},
            "phase 1 across three servers",
        )

        # Alice logs in a second device on Hearth: Synapse and the other Hearth learn of it.
        bob.changed_users.clear()
        carol.changed_users.clear()
        alice2 = await new_device(hearth.base, f"{stores}/a2", "alice's second device", alice_id, "alice e2ee password", False)
        devices.append(alice2)
        await until(devices, "Synapse tells bob alice's devices changed", lambda: alice_id in bob.changed_users)
        await until(devices, "the second Hearth tells carol alice's devices changed", lambda: alice_id in carol.changed_users)
        await settle(devices)
        for device in (bob, carol):
            seen = sorted(d.id for d in device.client.device_store.active_user_devices(alice_id))
            check(seen == sorted([alice1.device_id, alice2.device_id]), f"{device.label} knows both of alice's devices", seen)
        before = len(sent)
        await send(bob, dm.room_id, "dm to both of alice's devices", sent)
        for device in devices:
            await send(device, group.room_id, f"group again: {device.label}", sent)
        phase2 = sent[before:]
        group_phase2 = [s for s in phase2 if s[1].startswith("group")]
        await all_decrypted(
            devices,
            {
                "alice on hearth": phase2,
                "bob on synapse": phase2,
                "carol on hearth 2": group_phase2,
                "alice's second device": phase2,
            },
            "phase 2, with alice's new device",
        )

        # A plain to-device message from Synapse to one of alice's devices on Hearth.
        for device in devices:
            device.to_device.clear()
        message = nio.ToDeviceMessage("org.example.interop", alice_id, alice2.device_id, {"ping": "from synapse"})
        sent_to_device = await bob.client.to_device(message)
        check(isinstance(sent_to_device, nio.ToDeviceResponse), "bob sends alice's second device a to-device message", sent_to_device)

        def received(device: Device) -> list:
            return [e for e in device.to_device if getattr(e, "type", None) == "org.example.interop"]

        await until(devices, "alice's second device gets it", lambda: bool(received(alice2)))
        await settle(devices)
        check(len(received(alice2)) == 1 and not received(alice1), "once, and only there", [received(d) for d in devices])
    finally:
        for device in devices:
            await device.client.close()


def png() -> bytes:
    """A small PNG (8x8, red), written by hand: no imaging library needed."""
    import struct
    import zlib

    raw = b"".join(b"\x00" + b"\xff\x00\x00" * 64 for _ in range(64))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", 64, 64, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


async def media_profiles_directories(alice: nio.AsyncClient, bob: nio.AsyncClient, hearth, synapse) -> None:
    picture = png()
    for (uploader, viewer) in ((bob, alice), (alice, bob)):
        uploaded, _ = await uploader.upload(lambda *_: picture, content_type="image/png", filename="red.png", filesize=len(picture))
        check(isinstance(uploaded, nio.UploadResponse), f"{uploader.user_id} uploads an image", uploaded)
        path = uploaded.content_uri.removeprefix("mxc://")
        deadline = time.monotonic() + TIMEOUT
        while True:
            status, body, content_type = await request(viewer, "GET", f"/_matrix/client/v1/media/download/{path}")
            if status == 200 or time.monotonic() > deadline:
                break
            await asyncio.sleep(1)
        check(status == 200 and body == picture, f"{viewer.user_id} downloads it through their server", (status, content_type))
        status, body, content_type = await request(viewer, "GET", f"/_matrix/client/v1/media/thumbnail/{path}?width=32&height=32&method=scale")
        check(status == 200 and content_type.startswith("image/") and len(body) > 0, f"{viewer.user_id} gets a thumbnail of it", (status, content_type))

    for (who, asker) in ((bob, alice), (alice, bob)):
        name = f"{who.user_id.split(':')[0][1:]} the tester"
        await who.set_displayname(name)
        profile = await asker.get_profile(who.user_id)
        check(isinstance(profile, nio.ProfileGetResponse) and profile.displayname == name, f"{asker.user_id} reads {who.user_id}'s profile", profile)

    for (owner, reader, server) in ((bob, alice, synapse), (alice, bob, hearth)):
        label = server.name.replace(".", "").replace(":", "")
        room = await owner.room_create(name=f"Listed {label}", alias=f"listed{label}", preset=nio.RoomPreset.public_chat, visibility=nio.RoomVisibility.public, topic="come in")
        check(isinstance(room, nio.RoomCreateResponse), f"{owner.user_id} makes a room", room)
        status, body, _ = await request(owner, "PUT", f"/_matrix/client/v3/directory/list/room/{room.room_id}", {"visibility": "public"})
        check(status == 200, f"{owner.user_id} publishes it in the directory", body)
        resolved = await reader.room_resolve_alias(f"#listed{label}:{server.name}")
        check(isinstance(resolved, nio.RoomResolveAliasResponse) and resolved.room_id == room.room_id, f"{reader.user_id} resolves the alias", resolved)
        # Synapse caches its directory for a while: ask until the new room shows.
        deadline = time.monotonic() + TIMEOUT
        while True:
            status, body, _ = await request(reader, "GET", f"/_matrix/client/v3/publicRooms?server={server.name}")
            if (status == 200 and any(r["room_id"] == room.room_id for r in body.get("chunk", []))) or time.monotonic() > deadline:
                break
            await asyncio.sleep(1)
        check(status == 200 and any(r["room_id"] == room.room_id and r.get("topic") == "come in" for r in body.get("chunk", [])), f"{reader.user_id} lists {server.name}'s directory", body)
        status, body, _ = await request(reader, "POST", f"/_matrix/client/v3/publicRooms?server={server.name}", {"filter": {"generic_search_term": f"Listed {label}"}})
        check(status == 200 and [r["room_id"] for r in body.get("chunk", [])] == [room.room_id], f"{reader.user_id} searches {server.name}'s directory", body)

    # A space on each server, with a child only its own server is in; the other side joins
    # the space and lists the child through the hierarchy.
    for (owner, reader, server) in ((bob, alice, synapse), (alice, bob, hearth)):
        space = await owner.room_create(name="A space", preset=nio.RoomPreset.public_chat, space=True)
        check(isinstance(space, nio.RoomCreateResponse), f"{owner.user_id} makes a space", space)
        child = await owner.room_create(name="Space child", preset=nio.RoomPreset.public_chat)
        put = await owner.room_put_state(space.room_id, "m.space.child", {"via": [server.name]}, state_key=child.room_id)
        check(isinstance(put, nio.RoomPutStateResponse), "the space names its child", put)
        await join_via(reader, space.room_id, server.name)
        deadline = time.monotonic() + TIMEOUT
        while True:
            status, body, _ = await request(reader, "GET", f"/_matrix/client/v1/rooms/{space.room_id}/hierarchy")
            names = [r.get("name") for r in body.get("rooms", [])] if status == 200 else []
            if names == ["A space", "Space child"] or time.monotonic() > deadline:
                break
            await asyncio.sleep(1)
        check(names == ["A space", "Space child"], f"{reader.user_id} lists the space made on {server.name} with its child", body)


async def exercise(hearth, synapse, hearth2, stores: str) -> None:
    alice = await plain_client(hearth, "alice")
    bob = await plain_client(synapse, "bob")
    try:
        await ephemeral_data(alice, bob, hearth, synapse)
        await media_profiles_directories(alice, bob, hearth, synapse)
    finally:
        await alice.close()
        await bob.close()
    await encryption(hearth, synapse, hearth2, stores)


def main() -> None:
    binary = sys.argv[1]
    with tempfile.TemporaryDirectory() as directory:
        ca = TestCa(directory)
        hearth = start_hearth(binary, ca, "127.0.0.2", directory, os.environ.get("HEARTH_DATABASE_URL"))
        synapse = hearth2 = None
        try:
            hearth2 = start_hearth(binary, ca, "127.0.0.3", directory)
            synapse = start_synapse(sys.executable, ca, "127.0.0.5", directory)
            os.makedirs(os.path.join(directory, "stores"))
            asyncio.run(exercise(hearth, synapse, hearth2, os.path.join(directory, "stores")))
        except BaseException:
            for server in (hearth, hearth2, synapse):
                if server:
                    print(f"--- last lines of {server.log}", file=sys.stderr)
                    with open(server.log) as log:
                        print("".join(log.readlines()[-60:]), file=sys.stderr)
            raise
        finally:
            for server in (hearth, hearth2, synapse):
                if server:
                    server.stop()


if __name__ == "__main__":
    main()
