"""matrix-nio with end-to-end encryption (its `e2e` extra: vodozemac) against a running Hearth.

Three devices: alice's first device, bob's, and later alice's second. Each client has its own
crypto store. Alice opens an encrypted DM with bob (created with m.room.encryption and
is_direct) and a group room that she encrypts afterwards with an m.room.encryption state event.
Everyone exchanges Megolm-encrypted messages in both rooms, which takes the whole key machinery
of the server: keys upload (with one-time key counts), keys query, keys claim, to-device
messages (the room keys, Olm-encrypted), device_lists.changed and the one-time key counts in
/sync. Each device must decrypt every message sent after it logged in, including its own. A
plain to-device message checks delivery to exactly one device, once.

    python tests/clients/nio_e2ee.py target/debug/hearth

With HEARTH_TEST_BASE_URL=http://127.0.0.1:PORT the test runs against a server that is already
running instead (no binary argument needed); users get a random suffix so it can be rerun.
"""

import asyncio
import logging
import os
import secrets
import sys
import tempfile
import time

import nio

from harness import check, running_hearth

WAIT_SECONDS = 20
# nio logs a warning for each retry of a message the new device has no key for (expected).
logging.getLogger("nio").setLevel(logging.ERROR)
ENCRYPTION = {"type": "m.room.encryption", "state_key": "", "content": {"algorithm": "m.megolm.v1.aes-sha2"}}


class Device:
    """One nio client with its own store, and what its syncs showed it."""

    def __init__(self, label: str, client: nio.AsyncClient) -> None:
        self.label = label
        self.client = client
        self.decrypted: dict[str, nio.RoomMessageText] = {}
        self.undecrypted: dict[str, nio.MegolmEvent] = {}
        self.to_device: list[nio.ToDeviceEvent] = []
        self.changed_users: set[str] = set()
        self.key_counts: list[int] = []
        self.uploads: list[nio.KeysUploadResponse] = []
        self.queries: list[nio.KeysQueryResponse] = []
        self.claims: list[nio.KeysClaimResponse] = []
        # Keep every keys upload/query/claim response, also those nio makes inside room_send.
        self.record("keys_upload", nio.KeysUploadResponse, self.uploads)
        self.record("keys_query", nio.KeysQueryResponse, self.queries)
        self.record("keys_claim", nio.KeysClaimResponse, self.claims)

    def record(self, method: str, success: type, into: list) -> None:
        original = getattr(self.client, method)

        async def recorded(*args, **kwargs):
            response = await original(*args, **kwargs)
            if not isinstance(response, success):
                raise AssertionError(f"{self.label}: {method} failed: {response}")
            into.append(response)
            return response

        setattr(self.client, method, recorded)

    @property
    def device_id(self) -> str:
        return self.client.device_id

    async def step(self, timeout: int = 0) -> nio.SyncResponse:
        """One sync, then what nio's sync_forever does after a sync: pending to-device
        messages, keys upload, query and claim as nio asks for them."""
        client = self.client
        response = await asyncio.wait_for(client.sync(timeout=timeout), WAIT_SECONDS)
        if not isinstance(response, nio.SyncResponse):
            raise AssertionError(f"{self.label}: sync failed: {response}")
        count = response.device_key_count.signed_curve25519
        if self.uploads and not count:
            # The spec: a missing count means zero, and nio would not notice it had to upload more.
            raise AssertionError(f"{self.label}: /sync has no device_one_time_keys_count.signed_curve25519 though keys were uploaded")
        self.key_counts.append(count)
        self.changed_users |= set(response.device_list.changed)
        self.to_device.extend(response.to_device_events)
        for room in response.rooms.join.values():
            for event in room.timeline.events:
                self.see(event)
        await client.send_to_device_messages()
        if client.should_upload_keys:
            await client.keys_upload()
        if client.should_query_keys:
            await client.keys_query()
        if client.should_claim_keys:
            await client.keys_claim(client.get_users_for_key_claiming())
        self.retry_undecrypted()
        return response

    def see(self, event: object) -> None:
        if isinstance(event, nio.RoomMessageText):
            self.decrypted[event.event_id] = event
            self.undecrypted.pop(event.event_id, None)
        elif isinstance(event, nio.MegolmEvent):
            self.undecrypted[event.event_id] = event

    def retry_undecrypted(self) -> None:
        """Megolm events whose room key arrived after them (in a later sync)."""
        for event in list(self.undecrypted.values()):
            try:
                self.see(self.client.decrypt_event(event))
            except nio.EncryptionError:
                pass


async def settle(devices: list[Device], rounds: int = 2) -> None:
    """A few sync steps of every device, so each has seen the others' latest state and keys."""
    for _ in range(rounds):
        await asyncio.gather(*(device.step() for device in devices))


async def until(devices: list[Device], what: str, condition) -> None:
    """Syncs the devices (long-polling briefly) until `condition()` holds, at most WAIT_SECONDS."""
    deadline = time.monotonic() + WAIT_SECONDS
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {WAIT_SECONDS} s")
        await asyncio.gather(*(device.step(timeout=500) for device in devices))
    check(True, what)


async def new_device(base: str, store: str, label: str, user: str, password: str, register: bool) -> Device:
    os.makedirs(store)
    config = nio.AsyncClientConfig(encryption_enabled=True, store_sync_tokens=True)
    client = nio.AsyncClient(base, user, store_path=store, config=config)
    if register:
        response = await client.register(user, password, device_name=label)
        check(isinstance(response, nio.RegisterResponse), f"register {label}", response)
    else:
        response = await client.login(password, device_name=label)
        check(isinstance(response, nio.LoginResponse), f"log in {label}", response)
    check(client.olm is not None, f"{label} has an Olm machine (nio's e2e extra is installed)")
    return Device(label, client)


async def send(device: Device, room_id: str, body: str, sent: list[tuple[str, str, Device]]) -> None:
    response = await device.client.room_send(
        room_id, "m.room.message", {"msgtype": "m.text", "body": body}, ignore_unverified_devices=True
    )
    if not isinstance(response, nio.RoomSendResponse):
        raise AssertionError(f"{device.label} sends {body!r}: {response}")
    sent.append((response.event_id, body, device))


async def all_decrypted(devices: list[Device], expected: dict[str, list[tuple[str, str, Device]]], what: str) -> None:
    """Syncs everyone until each device has decrypted each of its expected messages."""
    deadline = time.monotonic() + WAIT_SECONDS

    def missing() -> dict[str, list[str]]:
        return {
            device.label: [body for event_id, body, _ in expected[device.label] if event_id not in device.decrypted]
            for device in devices
            if any(event_id not in device.decrypted for event_id, _, _ in expected[device.label])
        }

    while (left := missing()) and time.monotonic() < deadline:
        await asyncio.gather(*(device.step(timeout=500) for device in devices))
    if left:
        stuck = {device.label: len(device.undecrypted) for device in devices}
        raise AssertionError(f"{what}: not decrypted within {WAIT_SECONDS} s: {left} (undecrypted Megolm events: {stuck})")
    for device in devices:
        for event_id, body, sender in expected[device.label]:
            event = device.decrypted[event_id]
            if event.body != body or event.sender != sender.client.user_id:
                raise AssertionError(f"{device.label} decrypted {event_id} as {event.sender}: {event.body!r}, not {body!r}")
            if not event.decrypted:
                raise AssertionError(f"{device.label}: {event_id} was not an encrypted event: {event}")
    counts = ", ".join(f"{device.label} {len(expected[device.label])}" for device in devices)
    check(True, f"{what}: every device decrypts every message it should ({counts})")


async def exercise(base: str, stores: str) -> None:
    suffix = secrets.token_hex(3)
    alice_name, bob_name = f"alice{suffix}", f"bob{suffix}"
    devices: list[Device] = []
    try:
        alice1 = await new_device(base, f"{stores}/a1", "alice's first device", alice_name, "alice e2ee password", True)
        devices.append(alice1)
        bob = await new_device(base, f"{stores}/b", "bob's device", bob_name, "bob e2ee password", True)
        devices.append(bob)
        alice_id, bob_id = alice1.client.user_id, bob.client.user_id

        # Keys upload: the device keys and a full set of one-time keys, counted back.
        await settle([alice1, bob], rounds=1)
        for device in (alice1, bob):
            check(len(device.uploads) == 1, f"{device.label} uploaded its keys once", device.uploads)
            maximum = device.client.olm.account.max_one_time_keys
            counts = device.uploads[0].signed_curve25519_count
            check(counts == maximum, f"{device.label}: keys upload counts its {maximum} signed_curve25519 one-time keys", device.uploads[0])
        await settle([alice1, bob], rounds=1)
        check(alice1.key_counts[-1] == alice1.client.olm.account.max_one_time_keys, "/sync reports the one-time key count", alice1.key_counts)

        # The DM: encrypted from its creation, is_direct to bob.
        dm = await alice1.client.room_create(
            is_direct=True, invite=[bob_id], preset=nio.RoomPreset.trusted_private_chat, initial_state=[ENCRYPTION]
        )
        check(isinstance(dm, nio.RoomCreateResponse), "alice creates an encrypted DM with bob", dm)
        # The group room: plain at first, encrypted by a later state event.
        group = await alice1.client.room_create(name="E2EE group", invite=[bob_id], preset=nio.RoomPreset.private_chat)
        check(isinstance(group, nio.RoomCreateResponse), "alice creates a group room", group)
        encrypted = await alice1.client.room_put_state(group.room_id, "m.room.encryption", ENCRYPTION["content"])
        check(isinstance(encrypted, nio.RoomPutStateResponse), "alice turns on encryption in the group room", encrypted)
        await until([alice1, bob], "bob is invited to both rooms", lambda: {dm.room_id, group.room_id} <= set(bob.client.invited_rooms))
        for room_id in (dm.room_id, group.room_id):
            joined = await bob.client.join(room_id)
            check(isinstance(joined, nio.JoinResponse), f"bob joins {room_id}", joined)
        def joined_encrypted(device: Device, room_id: str) -> bool:
            room = device.client.rooms.get(room_id)
            return room is not None and room.encrypted and room.joined_count == 2

        await until(
            [alice1, bob],
            "both devices see both rooms encrypted, with both joined",
            lambda: all(joined_encrypted(d, r) for d in (alice1, bob) for r in (dm.room_id, group.room_id)),
        )

        # Phase 1: alice's first device and bob.
        sent: list[tuple[str, str, Device]] = []
        for device in (alice1, bob):
            for room_id, name in ((dm.room_id, "DM"), (group.room_id, "group")):
                await send(device, room_id, f"phase 1: {device.label} in the {name}", sent)
        check(len(sent) == 4, "four encrypted messages sent")
        phase1 = list(sent)
        await all_decrypted([alice1, bob], {"alice's first device": phase1, "bob's device": phase1}, "phase 1")

        # Keys query as seen by each: the other's device with the keys it uploaded.
        alice_devices = list(bob.client.device_store.active_user_devices(alice_id))
        check([d.id for d in alice_devices] == [alice1.device_id], "bob's keys query found alice's device", [d.id for d in alice_devices])
        found = alice_devices[0]
        own_keys = alice1.client.olm.account.identity_keys
        check(
            found.ed25519 == own_keys["ed25519"] and found.curve25519 == own_keys["curve25519"],
            "keys query returned alice's uploaded identity keys",
        )
        queried = [q for q in bob.queries if alice_id in q.device_keys]
        check(bool(queried) and alice1.device_id in queried[-1].device_keys[alice_id], "bob's KeysQueryResponse lists alice's device", bob.queries)
        check(any(bob_id in q.device_keys for q in alice1.queries), "alice's keys query returned bob's devices", alice1.queries)

        # Alice's second device logs in: both others learn of it through device_lists.changed.
        alice1.changed_users.clear()
        bob.changed_users.clear()
        alice2 = await new_device(base, f"{stores}/a2", "alice's second device", alice_id, "alice e2ee password", False)
        devices.append(alice2)
        await until(devices, "bob's /sync lists alice in device_lists.changed", lambda: alice_id in bob.changed_users)
        await until(devices, "alice's first device's /sync lists alice in device_lists.changed", lambda: alice_id in alice1.changed_users)
        await settle(devices)
        bob_view = sorted(d.id for d in bob.client.device_store.active_user_devices(alice_id))
        check(bob_view == sorted([alice1.device_id, alice2.device_id]), "bob's keys query now returns both of alice's devices", bob_view)
        own_view = sorted(d.id for d in alice2.client.device_store.active_user_devices(alice_id))
        check(alice1.device_id in own_view, "alice's second device sees her first one", own_view)
        check(dm.room_id in alice2.client.rooms and group.room_id in alice2.client.rooms, "alice's second device sees both rooms")
        # Her initial sync included the earlier messages she has no keys for.
        check(all(event_id not in alice2.decrypted for event_id, _, _ in phase1), "earlier messages stay undecryptable on the new device")
        full = alice2.client.olm.account.max_one_time_keys
        check(alice2.uploads and alice2.uploads[0].signed_curve25519_count == full, "alice's second device uploaded its one-time keys", alice2.uploads)

        # Phase 2: every device sends in both rooms.
        before = len(alice2.key_counts)
        for device in (alice1, bob, alice2):
            for room_id, name in ((dm.room_id, "DM"), (group.room_id, "group")):
                await send(device, room_id, f"phase 2: {device.label} in the {name}", sent)
        phase2 = sent[len(phase1):]
        await all_decrypted(
            devices,
            {"alice's first device": sent, "bob's device": sent, "alice's second device": phase2},
            "phase 2 (alice's second device joined)",
        )
        # Alice's first device and bob each claimed one of her second device's one-time keys.
        later = alice2.key_counts[before:]
        check(any(count < full for count in later), "/sync shows alice's second device's one-time keys being claimed", later)
        await settle([alice2], rounds=2)
        check(alice2.key_counts[-1] == full, "nio tops its one-time keys up again and /sync counts them", alice2.key_counts[-3:])
        claimed = [c for device in devices for c in device.claims]
        check(
            any(alice_id in c.one_time_keys and alice2.device_id in c.one_time_keys[alice_id] for c in claimed),
            "a keys claim returned a one-time key of alice's second device",
            claimed,
        )

        # A plain to-device message: exactly one device gets it, exactly once.
        for device in devices:
            device.to_device.clear()
        message = nio.ToDeviceMessage("org.example.hearth.test", alice_id, alice2.device_id, {"nonce": suffix})
        sent_to_device = await bob.client.to_device(message)
        check(isinstance(sent_to_device, nio.ToDeviceResponse), "bob sends a to-device message to alice's second device", sent_to_device)

        def received(device: Device) -> list[nio.UnknownToDeviceEvent]:
            return [e for e in device.to_device if isinstance(e, nio.UnknownToDeviceEvent) and e.type == "org.example.hearth.test"]

        deadline = time.monotonic() + WAIT_SECONDS
        while not received(alice2) and time.monotonic() < deadline:
            await alice2.step(timeout=1000)
        got = received(alice2)
        check(len(got) == 1 and got[0].sender == bob_id and got[0].source.get("content") == {"nonce": suffix}, "alice's second device receives it", alice2.to_device)
        await settle(devices)
        check(len(received(alice2)) == 1, "it is not delivered twice", received(alice2))
        others = [(device.label, received(device)) for device in devices if device is not alice2 and received(device)]
        check(not others, "no other device gets it", others)
    finally:
        for device in devices:
            await device.client.close()


def main() -> None:
    binary = sys.argv[1] if len(sys.argv) > 1 else None
    if binary is None and not os.environ.get("HEARTH_TEST_BASE_URL"):
        raise SystemExit("usage: python tests/clients/nio_e2ee.py path/to/hearth (or set HEARTH_TEST_BASE_URL)")
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as stores, running_hearth(binary) as base:
        asyncio.run(exercise(base, stores))
    print(f"# nio_e2ee took {time.monotonic() - started:.1f} s")


if __name__ == "__main__":
    main()
