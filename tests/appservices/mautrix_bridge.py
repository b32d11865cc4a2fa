"""A test bridge built on mautrix-python's appservice framework (PyPI `mautrix==0.21.1`)
against a running Hearth.

Writes a registration file (Synapse's YAML format), starts the `hearth` binary given as the
first argument with it (a free loopback port, a fresh SQLite data directory or the database in
HEARTH_DATABASE_URL), and runs mautrix's own `AppService` (an aiohttp server on 127.0.0.1) and
`IntentAPI` against it:

- the bot user exists without registering; ghosts register with `m.login.application_service`
  (and log in with it); registrations outside the namespace, and ordinary users inside it, are
  refused;
- a ghost joins a real user's room and sends with a massaged timestamp (`?ts=`), the bot sets
  state with one; the real user sees both timestamps;
- transactions bring the real user's messages, typing and read receipts (MSC2409 ephemeral),
  authenticated with the hs_token;
- user and alias queries create a ghost and rooms on demand (GET /profile, GET /directory/room,
  joining by alias);
- ping; masquerading outside the namespace, and a wrong as_token, are refused;
- MSC4190 devices for ghosts without user-interactive auth, used with `?device_id=`
  (MSC4326, and the unstable `org.matrix.msc3202.device_id`);
- end-to-bridge encryption as mautrix bridges do it (mautrix.crypto and python-olm, if
  installed): an MSC4190 device for the bot, keys uploaded by masquerading, to-device messages,
  device list changes and one-time key counts in transactions (MSC2409/MSC3202), and an
  encrypted message each way between the bridge and a real user's Olm client.

Finally it stops the server with SIGTERM and checks that it shuts down cleanly.

    python3 -m venv target/as-venv
    target/as-venv/bin/pip install 'mautrix[encryption]==0.21.1' aiohttp==3.14.5 python-olm==3.2.16
    target/as-venv/bin/python tests/appservices/mautrix_bridge.py target/debug/hearth

HEARTH_SERVER_NAME (default localhost) must match the server's, as the registration's regexes
name it. MAUTRIX_TEST_LOG=debug shows mautrix's own logging.
"""

import asyncio
import contextlib
import json
import logging
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
import warnings
from urllib.parse import quote

import aiohttp
from aiohttp import web

# mautrix 0.21 passes `loop=` to aiohttp.web.Application, which aiohttp deprecates.
warnings.filterwarnings("ignore", category=DeprecationWarning)

from mautrix.appservice import AppService  # noqa: E402
from mautrix.appservice.state_store import ASStateStore  # noqa: E402
from mautrix.client.state_store import MemoryStateStore  # noqa: E402
from mautrix.errors import MatrixRequestError  # noqa: E402
from mautrix.types import EventType, Membership, RoomCreatePreset, RoomDirectoryVisibility  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "clients"))
from harness import check, free_port  # noqa: E402

WAIT = 15.0  # seconds any one awaited thing may take
PREFIX = "mautrixtest_"
BOT = "mautrixbot"
AS_ID = "mautrixtest"


def q(value: str) -> str:
    return quote(value, safe="")


@contextlib.contextmanager
def running_hearth(binary: str, config_text: str):
    """harness.running_hearth with a config of our own: yields the base URL of a healthy server
    on a free loopback port; stops it with SIGTERM and checks it exits 0."""
    with tempfile.TemporaryDirectory() as data_dir:
        config = os.path.join(data_dir, "hearth.toml")
        with open(config, "w") as file:
            file.write(config_text)
        port = free_port()
        env = dict(os.environ, HEARTH_LISTEN=f"127.0.0.1:{port}", HEARTH_DATA_DIR=data_dir, HEARTH_LOG="warn")
        server = subprocess.Popen([binary, "serve", "--config", config], env=env)
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 30
            while True:
                if server.poll() is not None:
                    raise SystemExit(f"hearth exited during start-up (code {server.returncode})")
                try:
                    with urllib.request.urlopen(f"{base}/health", timeout=1) as response:
                        if response.status == 200:
                            break
                except OSError:
                    if time.monotonic() > deadline:
                        raise SystemExit("hearth did not become healthy within 30 s")
                    time.sleep(0.1)
            yield base
        finally:
            if server.poll() is None:
                server.send_signal(signal.SIGTERM)
            try:
                code = server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
                code = "killed after 30 s"
        check(code == 0, f"hearth exited cleanly on SIGTERM (code {code})")


def registration_yaml(port: int, as_token: str, hs_token: str, server_name: str) -> str:
    escaped = server_name.replace(".", "\\\\.")
    return f"""# Written by tests/appservices/mautrix_bridge.py
id: {AS_ID}
url: "http://127.0.0.1:{port}"
as_token: "{as_token}"
hs_token: "{hs_token}"
sender_localpart: {BOT}
namespaces:
  users:
    - exclusive: true
      regex: "@{PREFIX}.*:{escaped}"
  aliases:
    - exclusive: true
      regex: "#{PREFIX}.*:{escaped}"
  rooms: []
rate_limited: false
receive_ephemeral: true
de.sorunome.msc2409.push_ephemeral: true
org.matrix.msc3202: true
io.element.msc4190: true
"""


class Http:
    """Plain requests (the real user's, and the appservice's where mautrix has no method)."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=WAIT))

    async def call(self, method, path, token=None, body=None, query=None, headers=None):
        all_headers = dict(headers or {})
        if token:
            all_headers["Authorization"] = f"Bearer {token}"
        async with self.session.request(
            method, self.base + path, json=body, params=query, headers=all_headers
        ) as response:
            text = await response.text()
            try:
                data = json.loads(text) if text else {}
            except ValueError:
                data = {"unparsed": text}
            return response.status, data

    async def close(self) -> None:
        await self.session.close()


class StateStore(MemoryStateStore, ASStateStore):
    """mautrix's in-memory state store with the appservice parts, and the one query
    mautrix.crypto needs besides (which rooms a user shares with us)."""

    def __init__(self) -> None:
        MemoryStateStore.__init__(self)
        ASStateStore.__init__(self)

    async def find_shared_rooms(self, user_id):
        return [
            room_id
            for room_id, members in self.members.items()
            if user_id in members and members[user_id].membership == Membership.JOIN
        ]


class RecordingAppService(AppService):
    """mautrix's AppService, noting what the homeserver sends it: the token on every call,
    the raw body of every transaction, and pings."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.calls = []  # (path, authorized with the hs_token in the Authorization header)
        self.bodies = []  # raw transaction bodies
        self.pings = []  # transaction IDs of homeserver pings
        self.accepted = []  # (transaction ID, raw body) of each transaction handled
        self.refuse = 0  # how many transactions to answer 503 to, as a bridge that is down
        self.refused = []  # their IDs

    def _check_token(self, request) -> bool:
        ok = super()._check_token(request)
        header = request.headers.get("Authorization") == f"Bearer {self.hs_token}"
        self.calls.append((request.path, ok and header))
        return ok

    async def _read_transaction_header(self, request):
        txn_id, data = await super()._read_transaction_header(request)
        self.bodies.append(json.loads(json.dumps(data)))
        self.accepted.append((txn_id, self.bodies[-1]))
        return txn_id, data

    async def _http_handle_transaction(self, request):
        if self.refuse > 0 and self._check_token(request):
            self.refuse -= 1
            self.refused.append(request.match_info["transaction_id"])
            return web.json_response({"errcode": "M_UNKNOWN", "error": "the bridge is down"}, status=503)
        return await super()._http_handle_transaction(request)

    async def _http_ping(self, request):
        response = await super()._http_ping(request)
        body = await request.json()
        self.pings.append(body.get("transaction_id"))
        return response


async def wait_for(what, probe, timeout=WAIT):
    """Polls `probe` (sync or async) until it returns something truthy, which is returned."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:.0f} s")
        await asyncio.sleep(0.1)


def errcode(data) -> str:
    return data.get("errcode", "") if isinstance(data, dict) else ""


async def register_user(http: Http, username: str):
    status, data = await http.call(
        "POST",
        "/_matrix/client/v3/register",
        body={"username": username, "password": "a long test password", "auth": {"type": "m.login.dummy"}},
    )
    check(status == 200 and "access_token" in data, f"register real user {username}", (status, data))
    return data


async def exercise(base: str, server_name: str, as_port: int, as_token: str, hs_token: str) -> None:
    http = Http(base)
    store = StateStore()
    received = []  # every event and EDU given to the handlers, as mautrix parsed it
    queries = {"users": [], "aliases": []}
    alias_rooms = {}
    ghost = lambda name: f"@{PREFIX}{name}:{server_name}"  # noqa: E731
    alias = lambda name: f"#{PREFIX}{name}:{server_name}"  # noqa: E731
    bot_id = f"@{BOT}:{server_name}"

    async def query_user(user_id):
        queries["users"].append(user_id)
        if user_id != ghost("bob"):
            return None
        intent = appservice.intent.user(user_id)
        await intent.ensure_registered()
        await intent.set_displayname("Bob Ghost")
        return {"created": True}

    async def query_alias(room_alias):
        queries["aliases"].append(room_alias)
        localpart = room_alias[1:].split(":", 1)[0]
        if room_alias == alias("room"):
            room_id = await appservice.intent.create_room(alias_localpart=localpart, name="Queried room")
        elif room_alias == alias("public"):
            room_id = await appservice.intent.create_room(
                alias_localpart=localpart,
                preset=RoomCreatePreset.PUBLIC,
                visibility=RoomDirectoryVisibility.PRIVATE,
                name="Joined by alias",
            )
        else:
            return None
        alias_rooms[room_alias] = room_id
        return {"room_id": room_id}

    appservice = RecordingAppService(
        server=base,
        domain=server_name,
        as_token=as_token,
        hs_token=hs_token,
        bot_localpart=BOT,
        id=AS_ID,
        loop=asyncio.get_running_loop(),
        state_store=store,
        query_user=query_user,
        query_alias=query_alias,
        ephemeral_events=True,
        encryption_events=True,
    )
    e2ee_hooks = {}  # filled by the encryption part

    @appservice.matrix_event_handler
    async def on_event(evt) -> None:
        received.append(evt)
        hook = e2ee_hooks.get("event")
        if hook:
            await hook(evt)

    async def on_to_device(evt) -> None:
        e2ee_hooks.setdefault("to_device", []).append(evt)
        if "olm" in e2ee_hooks:
            await e2ee_hooks["olm"].handle_as_to_device_event(evt)

    async def on_otk_counts(counts) -> None:
        e2ee_hooks.setdefault("otk_counts", []).append(counts)
        if "olm" in e2ee_hooks:
            await e2ee_hooks["olm"].handle_as_otk_counts(counts)

    async def on_device_lists(lists) -> None:
        e2ee_hooks.setdefault("device_lists", []).append(lists)
        if "olm" in e2ee_hooks:
            await e2ee_hooks["olm"].handle_as_device_lists(lists)

    appservice.to_device_handler = on_to_device
    appservice.otk_handler = on_otk_counts
    appservice.device_list_handler = on_device_lists

    def events_of(type_name, room_id=None, pred=lambda evt: True):
        return [
            evt
            for evt in received
            if evt.type.t == type_name and (room_id is None or evt.room_id == room_id) and pred(evt)
        ]

    await appservice.start(host="127.0.0.1", port=as_port)
    try:
        bot = appservice.intent

        # --- The bot, and registering ghosts ---
        whoami = await bot.whoami()
        check(whoami.user_id == bot_id, "the bot user exists without registering (whoami)", whoami)
        status, data = await http.call("GET", "/_matrix/client/v3/account/whoami", query={"access_token": as_token})
        check(status == 200 and data.get("user_id") == bot_id, "as_token in the access_token query parameter", (status, data))
        status, data = await http.call(
            "POST", "/_matrix/client/v3/register", as_token, {"type": "m.login.application_service", "username": BOT}
        )
        check(
            status == 200 or (status == 400 and errcode(data) == "M_USER_IN_USE"),
            f"registering the bot itself: 200 or M_USER_IN_USE (got {status} {errcode(data)})",
            (status, data),
        )
        await bot.ensure_registered()

        alice = bot.user(ghost("alice"))
        try:
            # mautrix sends POST /register?kind=user&user_id=<the ghost> (its intents always
            # name their user); Synapse authenticates /register by the as_token alone.
            await alice.ensure_registered()
        except MatrixRequestError as error:
            check(False, "IntentAPI.ensure_registered registers a ghost (POST /register?user_id=<ghost>)", f"{getattr(error, 'http_status', '?')} {getattr(error, 'errcode', '?')}: {error}")
        whoami = await alice.whoami()
        check(whoami.user_id == ghost("alice"), "ghost registered by IntentAPI.ensure_registered (m.login.application_service)", whoami)

        status, data = await http.call(
            "POST",
            "/_matrix/client/v3/register",
            as_token,
            {"type": "m.login.application_service", "username": f"{PREFIX}dave", "inhibit_login": True},
        )
        check(
            status == 200 and data.get("user_id") == ghost("dave") and "access_token" not in data,
            "inhibit_login: a ghost registered without an access token",
            (status, data),
        )
        status, data = await http.call(
            "POST", "/_matrix/client/v3/register", as_token, {"type": "m.login.application_service", "username": "notmine"}
        )
        check(
            status in (400, 403) and errcode(data) in ("M_EXCLUSIVE", "M_FORBIDDEN", "M_INVALID_USERNAME"),
            f"the appservice cannot register outside its namespace ({status} {errcode(data)})",
            (status, data),
        )
        status, data = await http.call(
            "POST",
            "/_matrix/client/v3/register",
            body={"username": f"{PREFIX}eve", "password": "a long test password", "auth": {"type": "m.login.dummy"}},
        )
        check(status == 400 and errcode(data) == "M_EXCLUSIVE", "an ordinary user cannot register in the exclusive namespace (400 M_EXCLUSIVE)", (status, data))
        status, data = await http.call("GET", "/_matrix/client/v3/register/available", query={"username": f"{PREFIX}eve"})
        check(status == 400 and errcode(data) == "M_EXCLUSIVE", "register/available: 400 M_EXCLUSIVE in the namespace", (status, data))

        status, data = await http.call("GET", "/_matrix/client/v3/login")
        flows = [flow.get("type") for flow in data.get("flows", [])] if status == 200 else []
        check("m.login.application_service" in flows, "GET /login offers m.login.application_service", (status, data))
        status, data = await http.call(
            "POST",
            "/_matrix/client/v3/login",
            as_token,
            {"type": "m.login.application_service", "identifier": {"type": "m.id.user", "user": f"{PREFIX}alice"}},
        )
        check(status == 200 and data.get("user_id") == ghost("alice") and data.get("access_token"), "ghost logs in with m.login.application_service", (status, data))
        alice_token = data.get("access_token")
        status, data = await http.call("GET", "/_matrix/client/v3/account/whoami", alice_token)
        check(status == 200 and data.get("user_id") == ghost("alice"), "the login's access token is the ghost's", (status, data))
        status, data = await http.call(
            "POST",
            "/_matrix/client/v3/login",
            as_token,
            {"type": "m.login.application_service", "identifier": {"type": "m.id.user", "user": "notmine"}},
        )
        check(status in (400, 403), f"no appservice login outside the namespace ({status} {errcode(data)})", (status, data))

        # --- A real user's room: joins, timestamp massaging ---
        user = await register_user(http, "realuser")
        user_id, user_token = user["user_id"], user["access_token"]
        check(user_id == f"@realuser:{server_name}", f"server name is {server_name}", user_id)
        status, data = await http.call(
            "POST",
            "/_matrix/client/v3/createRoom",
            user_token,
            {
                "preset": "private_chat",
                "name": "Bridged room",
                "invite": [bot_id, ghost("alice")],
                "power_level_content_override": {"users": {bot_id: 100}},
            },
        )
        check(status == 200, "real user creates a room inviting the bot and a ghost", (status, data))
        room_id = data["room_id"]
        await bot.join_room(room_id)
        await alice.join_room(room_id)
        status, data = await http.call("GET", f"/_matrix/client/v3/rooms/{q(room_id)}/joined_members", user_token)
        joined = set(data.get("joined", {}))
        check({user_id, bot_id, ghost("alice")} <= joined, "bot and ghost joined through their intents", data)

        past = int(time.time() * 1000) - 3_600_000
        sent = await alice.send_text(room_id, "hello from the past", timestamp=past)
        state_ts = past + 1234
        topic_id = await bot.set_room_topic(room_id, "a topic set in the past", timestamp=state_ts)
        status, data = await http.call(
            "GET", f"/_matrix/client/v3/rooms/{q(room_id)}/messages", user_token, query={"dir": "b", "limit": "50"}
        )
        chunk = {event["event_id"]: event for event in data.get("chunk", [])}
        check(sent in chunk and chunk[sent]["sender"] == ghost("alice"), "the real user sees the ghost's message", data)
        check(chunk[sent]["origin_server_ts"] == past, "origin_server_ts is the massaged ?ts= of the message", (chunk[sent]["origin_server_ts"], past))
        check(topic_id in chunk and chunk[topic_id]["origin_server_ts"] == state_ts, "origin_server_ts is the massaged ?ts= of the state event", chunk.get(topic_id))
        status, data = await http.call(
            "PUT",
            f"/_matrix/client/v3/rooms/{q(room_id)}/send/m.room.message/tsnotallowed",
            user_token,
            {"msgtype": "m.text", "body": "an ordinary user's ts is ignored"},
            query={"ts": str(past)},
        )
        if status == 200:
            status2, event = await http.call("GET", f"/_matrix/client/v3/rooms/{q(room_id)}/event/{q(data['event_id'])}", user_token)
            check(status2 == 200 and event.get("origin_server_ts") != past, "?ts= from an ordinary user is not honoured", event)
        else:
            check(False, "ordinary user's send with ?ts=", (status, data))

        # --- Transactions: the real user's message, typing and a read receipt ---
        status, data = await http.call(
            "PUT",
            f"/_matrix/client/v3/rooms/{q(room_id)}/send/m.room.message/txn1",
            user_token,
            {"msgtype": "m.text", "body": "hello bridge"},
        )
        check(status == 200, "real user sends a message", (status, data))
        message_id = data["event_id"]
        await wait_for(
            "the real user's message reaches the appservice",
            lambda: events_of("m.room.message", room_id, lambda evt: evt.event_id == message_id),
        )
        evt = events_of("m.room.message", room_id, lambda evt: evt.event_id == message_id)[0]
        check(evt.sender == user_id and evt.content.body == "hello bridge", "transaction event: the real user's message", evt)

        status, data = await http.call(
            "PUT", f"/_matrix/client/v3/rooms/{q(room_id)}/typing/{q(user_id)}", user_token, {"typing": True, "timeout": 20000}
        )
        check(status == 200, "real user starts typing", (status, data))
        await wait_for(
            "typing reaches the appservice",
            lambda: events_of("m.typing", room_id, lambda evt: user_id in evt.content.user_ids),
        )
        check(True, "transaction EDU: m.typing naming the real user")

        status, data = await http.call(
            "POST", f"/_matrix/client/v3/rooms/{q(room_id)}/receipt/m.read/{q(sent)}", user_token, {}
        )
        check(status == 200, "real user sends a read receipt", (status, data))

        def receipt_seen(evt):
            for event_id, receipts in evt.content.items():
                for kind, users in receipts.items():
                    if event_id == sent and getattr(kind, "value", kind) == "m.read" and user_id in users:
                        return True
            return False

        await wait_for("the read receipt reaches the appservice", lambda: events_of("m.receipt", room_id, receipt_seen))
        check(True, "transaction EDU: m.receipt for the ghost's message")

        # A bridge that fails transactions (503) gets the same transaction again, later.
        appservice.refuse = 2
        status, data = await http.call(
            "PUT",
            f"/_matrix/client/v3/rooms/{q(room_id)}/send/m.room.message/txn-outage",
            user_token,
            {"msgtype": "m.text", "body": "sent while the bridge is down"},
        )
        check(status == 200, "real user sends while the bridge refuses transactions", (status, data))
        outage_id = data["event_id"]
        await wait_for(
            "the message sent during the outage reaches the appservice",
            lambda: events_of("m.room.message", room_id, lambda evt: evt.event_id == outage_id),
        )
        check(len(appservice.refused) == 2, f"the bridge refused {len(appservice.refused)} attempts first", appservice.refused)
        carrying = [txn for txn, body in appservice.accepted if any(e.get("event_id") == outage_id for e in body.get("events", []))]
        check(
            carrying and carrying[0] in appservice.refused,
            "the retry carried the refused transaction's ID",
            (carrying, appservice.refused),
        )

        ephemeral_keys = [
            key for body in appservice.bodies for key in ("ephemeral", "de.sorunome.msc2409.ephemeral") if body.get(key)
        ]
        check("ephemeral" in ephemeral_keys, "EDUs came in the stable `ephemeral` key", sorted(set(ephemeral_keys)))
        check(
            "de.sorunome.msc2409.ephemeral" in ephemeral_keys,
            "EDUs came in the unstable `de.sorunome.msc2409.ephemeral` key too",
            sorted(set(ephemeral_keys)),
        )

        # --- User and alias queries ---
        status, data = await http.call(
            "POST", "/_matrix/client/v3/register", as_token, {"type": "m.login.application_service", "username": f"{PREFIX}alice"}
        )
        check(status == 400 and errcode(data) == "M_USER_IN_USE", "registering an existing ghost: 400 M_USER_IN_USE (what mautrix ignores)", (status, data))
        status, data = await http.call("GET", f"/_matrix/client/v3/profile/{q(ghost('alice'))}", user_token)
        check(status == 200 and ghost("alice") not in queries["users"], "the profile of an existing ghost is no query", (status, queries["users"]))
        status, data = await http.call("GET", f"/_matrix/client/v3/profile/{q(ghost('bob'))}", user_token)
        check(ghost("bob") in queries["users"], "GET /profile of an unknown ghost queried the appservice", queries["users"])
        check(status == 200 and data.get("displayname") == "Bob Ghost", "the queried ghost exists, with the profile the bridge set", (status, data))
        whoami = await bot.user(ghost("bob")).whoami()
        check(whoami.user_id == ghost("bob"), "the queried ghost is registered", whoami)
        status, data = await http.call("GET", f"/_matrix/client/v3/profile/{q(ghost('nobody'))}", user_token)
        check(ghost("nobody") in queries["users"], "a ghost the bridge refuses was queried too", queries["users"])
        check(status == 404 and errcode(data) == "M_NOT_FOUND", "a ghost the bridge refuses: 404 M_NOT_FOUND", (status, data))

        status, data = await http.call("GET", f"/_matrix/client/v3/directory/room/{q(alias('room'))}", user_token)
        check(alias("room") in queries["aliases"], "GET /directory/room of an unknown alias queried the appservice", queries["aliases"])
        check(
            status == 200 and data.get("room_id") == alias_rooms.get(alias("room")),
            "the alias resolves to the room the bridge created in the query",
            (status, data, alias_rooms),
        )
        status, data = await http.call("GET", f"/_matrix/client/v3/directory/room/{q(alias('missing'))}", user_token)
        check(status == 404 and errcode(data) == "M_NOT_FOUND", "an alias the bridge refuses: 404 M_NOT_FOUND", (status, data))

        status, data = await http.call("POST", f"/_matrix/client/v3/join/{q(alias('public'))}", user_token, {})
        check(alias("public") in queries["aliases"], "joining an unknown alias queried the appservice", queries["aliases"])
        check(
            status == 200 and data.get("room_id") == alias_rooms.get(alias("public")),
            "the real user joined the room the query created",
            (status, data),
        )
        public_room = data.get("room_id")
        status, data = await http.call(
            "PUT", f"/_matrix/client/v3/rooms/{q(public_room)}/send/m.room.message/txn2", user_token, {"msgtype": "m.text", "body": "in the bot's room"}
        )
        check(status == 200, "real user sends in the bot's room", (status, data))
        await wait_for(
            "a message in a room where only the bot (sender_localpart) is joined reaches the appservice",
            lambda: events_of("m.room.message", public_room, lambda evt: evt.sender == user_id),
        )
        check(True, "interest through the bot's membership alone")

        status, data = await http.call(
            "PUT", f"/_matrix/client/v3/directory/room/{q(alias('stolen'))}", user_token, {"room_id": room_id}
        )
        check(status == 400 and errcode(data) == "M_EXCLUSIVE", "an ordinary user cannot create an alias in the exclusive namespace (400 M_EXCLUSIVE)", (status, data))

        # --- Ping ---
        duration = await appservice.ping_self("ping-1")
        check(isinstance(duration, int) and duration >= 0, f"ping through mautrix: duration_ms {duration}", duration)
        await wait_for("the homeserver's ping reaches the appservice", lambda: "ping-1" in appservice.pings)
        check(True, "the appservice was pinged with the transaction_id")
        status, data = await http.call("POST", f"/_matrix/client/v1/appservice/{AS_ID}/ping", as_token, {})
        check(status == 200 and isinstance(data.get("duration_ms"), int), "ping without a transaction_id", (status, data))
        status, data = await http.call("POST", "/_matrix/client/v1/appservice/someoneelse/ping", as_token, {})
        check(status == 403 and errcode(data) == "M_FORBIDDEN", "ping for another appservice's ID: 403 M_FORBIDDEN", (status, data))

        # --- Masquerading and tokens ---
        for target in (f"@someoneelse:{server_name}", user_id):
            status, data = await http.call("GET", "/_matrix/client/v3/account/whoami", as_token, query={"user_id": target})
            check(
                status == 403 and errcode(data) in ("M_EXCLUSIVE", "M_FORBIDDEN"),
                f"masquerading as {target} (outside the namespace) refused: {status} {errcode(data)}",
                (status, data),
            )
        status, data = await http.call("GET", "/_matrix/client/v3/account/whoami", as_token, query={"user_id": ghost("neverregistered")})
        print(f"note - masquerading as an unregistered ghost: {status} {errcode(data)} (Synapse: 403 M_FORBIDDEN)")
        status, data = await http.call("GET", "/_matrix/client/v3/account/whoami", "not-the-as-token", query={"user_id": ghost("alice")})
        check(status == 401 and errcode(data) == "M_UNKNOWN_TOKEN", "a wrong as_token: 401 M_UNKNOWN_TOKEN", (status, data))
        status, data = await http.call("GET", "/_matrix/client/v3/account/whoami", user_token, query={"user_id": ghost("alice")})
        check(
            (status == 200 and data.get("user_id") == user_id) or status == 403,
            "user_id= from an ordinary user's token does not masquerade",
            (status, data),
        )

        # --- MSC4190 devices and device masquerading (MSC4326) ---
        carol = bot.user(ghost("carol"))
        await carol.ensure_registered()
        await carol.create_device_msc4190("CAROLDEV", "Carol's bridge device")
        whoami = await carol.whoami()
        check(whoami.device_id == "CAROLDEV", "MSC4190: device created without UIA; whoami with device_id masquerading names it", whoami)
        for param in ("device_id", "org.matrix.msc3202.device_id"):
            status, data = await http.call(
                "GET", "/_matrix/client/v3/account/whoami", as_token, query={"user_id": ghost("carol"), param: "CAROLDEV"}
            )
            check(status == 200 and data.get("device_id") == "CAROLDEV", f"whoami with ?{param}= names the device", (status, data))
        status, data = await http.call("GET", "/_matrix/client/v3/devices", as_token, query={"user_id": ghost("carol")})
        names = {device["device_id"]: device.get("display_name") for device in data.get("devices", [])}
        check(names.get("CAROLDEV") == "Carol's bridge device", "the device is listed with its display name", (status, data))
        status, data = await http.call(
            "GET", "/_matrix/client/v3/account/whoami", as_token, query={"user_id": ghost("carol"), "device_id": "NOSUCHDEVICE"}
        )
        check(400 <= status < 500, f"masquerading as a device that does not exist is refused ({status} {errcode(data)})", (status, data))
        status, data = await http.call("DELETE", f"/_matrix/client/v3/devices/CAROLDEV", as_token, query={"user_id": ghost("carol")})
        check(status == 200, "MSC4190: DELETE /devices/{id} without UIA", (status, data))
        status, data = await http.call("GET", "/_matrix/client/v3/devices", as_token, query={"user_id": ghost("carol")})
        check(status == 200 and "CAROLDEV" not in [d["device_id"] for d in data.get("devices", [])], "the device is gone", (status, data))
        carol.api.as_device_id = None  # mautrix would go on masquerading as the deleted device
        await carol.create_device_msc4190("CAROLDEV2", "second")
        carol.api.as_device_id = None
        await carol.create_device_msc4190("CAROLDEV3", "third")
        carol.api.as_device_id = None
        status, data = await http.call(
            "POST", "/_matrix/client/v3/delete_devices", as_token, {"devices": ["CAROLDEV2", "CAROLDEV3"]}, query={"user_id": ghost("carol")}
        )
        check(status == 200, "MSC4190: POST /delete_devices without UIA", (status, data))

        # --- End-to-bridge encryption ---
        await exercise_encryption(http, appservice, store, e2ee_hooks, bot, alice, user, room_id)

        # --- Every call to the bridge carried the hs_token ---
        check(appservice.calls, "the homeserver called the bridge", appservice.calls)
        bad = [path for path, ok in appservice.calls if not ok]
        check(not bad, f"all {len(appservice.calls)} calls to the bridge carried `Authorization: Bearer <hs_token>`", bad)

        # Spec (appservice_ping.yaml): a token that is not an appservice's gets 403 M_FORBIDDEN;
        # the user's token is valid, so 401 M_UNKNOWN_TOKEN would tell the client it is dead.
        status, data = await http.call("POST", f"/_matrix/client/v1/appservice/{AS_ID}/ping", user_token, {})
        check(status == 403 and errcode(data) == "M_FORBIDDEN", "ping with a user's token: 403 M_FORBIDDEN", (status, data))
        # Spec (whoami): device_id "can be omitted" when no device is associated with the token,
        # "such as in the case of application services"; Synapse omits it. A device ID that
        # does not exist would send a bridge looking for it.
        status, data = await http.call("GET", "/_matrix/client/v3/account/whoami", as_token)
        check(status == 200 and "device_id" not in data, "whoami of the appservice user names no device", (status, data))
    finally:
        await appservice.stop()
        await http.close()


async def exercise_encryption(http, appservice, store, hooks, bot, alice, user, plain_room):
    try:
        import olm  # noqa: F401  (python-olm: mautrix.crypto's Olm and Megolm)
        from mautrix.client import Client, InternalEventType
        from mautrix.crypto import MemoryCryptoStore, OlmMachine
        from mautrix.errors import SessionNotFound
        from mautrix.types import TextMessageEventContent, MessageType
    except ImportError as error:
        print(f"skip - end-to-bridge encryption: {error} (pip install 'mautrix[encryption]' python-olm)")
        return

    user_id, user_token, user_device = user["user_id"], user["access_token"], user["device_id"]
    bot_id = appservice.bot_mxid

    # The bridge's encryption, as mautrix.bridge.e2ee.EncryptionManager sets it up with MSC4190
    # in appservice mode: a device for the bot, keys uploaded by masquerading as it, and
    # to-device messages, device lists and one-time key counts from transactions.
    bridge_store = MemoryCryptoStore("", "mautrix test bridge")
    bridge_client = Client(mxid=bot_id, base_url=http.base, token=appservice.as_token, state_store=store, sync_store=bridge_store)
    await bridge_client.create_device_msc4190(device_id="", initial_display_name="mautrix test bridge")
    bridge_device = bridge_client.device_id
    whoami = await bridge_client.whoami()
    check(whoami.device_id == bridge_device, f"bridge bot device {bridge_device} created with MSC4190", whoami)
    bridge_olm = OlmMachine(bridge_client, bridge_store, store)
    await bridge_olm.load()
    await bridge_store.put_device_id(bridge_device)
    await bridge_olm.share_keys()
    hooks["olm"] = bridge_olm

    decrypted_by_bridge = {}  # event ID -> the decrypted event or the error

    async def on_bridge_event(evt):
        if evt.type.t != "m.room.encrypted":
            return
        try:
            try:
                plain = await bridge_olm.decrypt_megolm_event(evt)
            except SessionNotFound as error:
                await bridge_olm.wait_for_session(evt.room_id, error.session_id, timeout=WAIT)
                plain = await bridge_olm.decrypt_megolm_event(evt)
            decrypted_by_bridge[evt.event_id] = plain
        except Exception as error:  # noqa: BLE001
            decrypted_by_bridge[evt.event_id] = error

    hooks["event"] = on_bridge_event

    # An encrypted room with the real user, the bot and a ghost.
    status, data = await http.call(
        "POST",
        "/_matrix/client/v3/createRoom",
        user_token,
        {
            "preset": "private_chat",
            "invite": [bot_id, alice.mxid],
            "initial_state": [{"type": "m.room.encryption", "state_key": "", "content": {"algorithm": "m.megolm.v1.aes-sha2"}}],
        },
    )
    check(status == 200, "real user creates an encrypted room", (status, data))
    room_id = data["room_id"]
    await bot.join_room(room_id)
    await alice.join_room(room_id)
    await store.set_encryption_info(room_id, {"algorithm": "m.megolm.v1.aes-sha2"})

    # The real user's Olm client (mautrix.crypto over /sync), on its registration device.
    user_store = MemoryCryptoStore(user_id, "mautrix test user")
    user_state = StateStore()
    user_client = Client(mxid=user_id, device_id=user_device, base_url=http.base, token=user_token, state_store=user_state, sync_store=user_store)
    user_olm = OlmMachine(user_client, user_store, user_state)
    await user_olm.load()
    await user_store.put_device_id(user_device)
    decrypted_by_user = {}  # event ID -> the decrypted event or the error
    synced = []

    async def on_user_encrypted(evt):
        try:
            try:
                plain = await user_olm.decrypt_megolm_event(evt)
            except SessionNotFound as error:
                await user_olm.wait_for_session(evt.room_id, error.session_id, timeout=WAIT)
                plain = await user_olm.decrypt_megolm_event(evt)
            decrypted_by_user[evt.event_id] = plain
        except Exception as error:  # noqa: BLE001
            decrypted_by_user[evt.event_id] = error

    async def on_synced(_data):
        synced.append(True)

    user_client.add_event_handler(EventType.ROOM_ENCRYPTED, on_user_encrypted)
    user_client.add_event_handler(InternalEventType.SYNC_SUCCESSFUL, on_synced)
    hooks["device_lists"] = []
    await user_olm.share_keys()
    sync_task = user_client.start(None)
    try:
        await wait_for("the real user's client syncs", lambda: synced)
        # MSC3202: the user's new device keys are a device list change in a room the bot is in;
        # the bot device's one-time keys are counted.
        await wait_for(
            "org.matrix.msc3202.device_lists.changed names the real user",
            lambda: any(user_id in lists.changed for lists in hooks.get("device_lists", [])),
        )
        check(True, "MSC3202: device list change of the real user in a transaction")

        def bot_otk_count():
            for counts in hooks.get("otk_counts", []):
                count = counts.get(bot_id, {}).get(bridge_device)
                if count is not None:
                    return count
            return None

        # Bridge -> user: the bot's Megolm session, shared over Olm to-device messages sent
        # while masquerading as the bot's device, encrypts a message the ghost sends.
        await bridge_olm.share_group_session(room_id, [user_id])
        content = await bridge_olm.encrypt_megolm_event(
            room_id, EventType.ROOM_MESSAGE, TextMessageEventContent(msgtype=MessageType.TEXT, body="secret from the bridge")
        )
        encrypted_id = await alice.send_message_event(room_id, EventType.ROOM_ENCRYPTED, content)
        plain = await wait_for("the real user decrypts the ghost's message", lambda: decrypted_by_user.get(encrypted_id))
        check(
            not isinstance(plain, Exception) and plain.sender == alice.mxid and plain.content.body == "secret from the bridge",
            "E2EE bridge -> user: the real user decrypts the ghost's message",
            plain,
        )

        # User -> bridge: the user's session reaches the bot's device through a transaction
        # (to-device, MSC2409) and the encrypted event through another.
        await user_olm.share_group_session(room_id, [user_id, bot_id, alice.mxid])
        content = await user_olm.encrypt_megolm_event(
            room_id, EventType.ROOM_MESSAGE, TextMessageEventContent(msgtype=MessageType.TEXT, body="secret from the user")
        )
        encrypted_id = await user_client.send_message_event(room_id, EventType.ROOM_ENCRYPTED, content)
        await wait_for(
            "a to-device message for the bot's device reaches the appservice",
            lambda: [evt for evt in hooks.get("to_device", []) if evt.to_user_id == bot_id and evt.to_device_id == bridge_device],
        )
        check(True, "MSC2409: to-device message for the bridge device in a transaction")
        to_device_keys = {key for body in appservice.bodies for key in ("to_device", "de.sorunome.msc2409.to_device") if body.get(key)}
        print(f"note - to-device messages came in {sorted(to_device_keys)}")
        plain = await wait_for("the bridge decrypts the real user's message", lambda: decrypted_by_bridge.get(encrypted_id))
        check(
            not isinstance(plain, Exception) and plain.sender == user_id and plain.content.body == "secret from the user",
            "E2EE user -> bridge: the bridge decrypts the real user's message",
            plain,
        )
        await wait_for("org.matrix.msc3202.device_one_time_keys_count for the bridge device", lambda: bot_otk_count() is not None)
        check(True, "MSC3202: one-time key counts for the bridge device in transactions")

        # The real user claims one of the bridge device's one-time keys; the next transaction
        # reports the server's new count.
        status, data = await http.call(
            "POST", "/_matrix/client/v3/keys/upload", appservice.as_token, {}, query={"user_id": bot_id, "device_id": bridge_device}
        )
        before = data.get("one_time_key_counts", {}).get("signed_curve25519", 0)
        check(status == 200 and before > 0, f"the bridge device has {before} one-time keys on the server", (status, data))
        seen = len(hooks.get("otk_counts", []))
        status, data = await http.call(
            "POST", "/_matrix/client/v3/keys/claim", user_token, {"one_time_keys": {bot_id: {bridge_device: "signed_curve25519"}}}
        )
        check(status == 200 and data.get("one_time_keys", {}).get(bot_id, {}).get(bridge_device), "the real user claims one of them", (status, data))
        status, data = await http.call(
            "PUT", f"/_matrix/client/v3/rooms/{q(plain_room)}/send/m.room.message/otk", user_token, {"msgtype": "m.text", "body": "after the claim"}
        )

        def count_after_claim():
            for counts in hooks.get("otk_counts", [])[seen:]:
                count = counts.get(bot_id, {}).get(bridge_device)
                if count is not None and count.signed_curve25519 == before - 1:
                    return True
            return False

        await wait_for(f"a transaction counts {before - 1} one-time keys for the bridge device", count_after_claim)
        check(True, f"MSC3202: the count after the claim ({before - 1}) in a transaction")
    finally:
        user_client.stop()
        with contextlib.suppress(asyncio.CancelledError):
            await sync_task
        await user_client.api.session.close()
        await bridge_client.api.session.close()
        hooks.pop("olm", None)
        hooks.pop("event", None)


def main() -> None:
    if len(sys.argv) < 2:
        raise SystemExit("usage: mautrix_bridge.py path/to/hearth")
    level = os.environ.get("MAUTRIX_TEST_LOG", "warning").upper()
    logging.basicConfig(level=getattr(logging, level, logging.WARNING), format="%(levelname)s %(name)s: %(message)s")
    if "MAUTRIX_TEST_LOG" not in os.environ:
        # Warnings about devices that are not cross-signed: nothing here cross-signs.
        logging.getLogger("mau.crypto").setLevel(logging.ERROR)
    server_name = os.environ.get("HEARTH_SERVER_NAME", "localhost")
    as_port = free_port()
    as_token, hs_token = secrets.token_hex(24), secrets.token_hex(24)
    with tempfile.TemporaryDirectory() as work:
        registration = os.path.join(work, "registration.yaml")
        with open(registration, "w") as file:
            file.write(registration_yaml(as_port, as_token, hs_token, server_name))
        config = (
            "[appservices]\n"
            f"config_files = [{json.dumps(registration)}]\n"
            "\n"
            "[rate_limits]\n"
            "message = { per_second = 1000.0, burst_count = 1000 }\n"
        )
        with running_hearth(sys.argv[1], config) as base:
            asyncio.run(exercise(base, server_name, as_port, as_token, hs_token))


if __name__ == "__main__":
    main()
