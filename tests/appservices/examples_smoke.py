#!/usr/bin/env python3
"""Smoke test of the example appservices (appservices/examples/) against a real Hearth.

    python3 tests/appservices/examples_smoke.py HEARTH ECHO_BOT WEBHOOK_BRIDGE

Starts Hearth with both registrations, then both examples, and walks through what their
READMEs promise: the echo bot joins on invite and answers `!echo`/`!ping`, a repeated
transaction is handled once; the webhook bridge joins on invite, posts webhook calls as
ghosts (by room ID and by alias), and forwards a real user's message to a local HTTP
server. Python 3 standard library only; everything on 127.0.0.1; every wait bounded."""

import http.server
import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "clients"))
from harness import check, free_port, running_hearth  # noqa: E402

SERVER_NAME = "localhost"
WAIT_SECONDS = 15
ECHO_BOT = f"@echo:{SERVER_NAME}"
BRIDGE_BOT = f"@webhook:{SERVER_NAME}"


# Everything is on 127.0.0.1: a proxy from the environment must not get in the way.
OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))
NO_PROXY_ENV = {k: v for k, v in os.environ.items() if k.lower() not in ("http_proxy", "https_proxy", "all_proxy")}


def call(method: str, url: str, body=None, token: str | None = None) -> tuple[int, dict]:
    """One JSON request; returns the status and the JSON body (`{}` if there is none)."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)
    request.add_header("Content-Type", "application/json")
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with OPENER.open(request, timeout=WAIT_SECONDS) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as error:
        status, raw = error.code, error.read()
    try:
        return status, json.loads(raw) if raw else {}
    except ValueError:
        return status, {"raw": raw.decode(errors="replace")}


def wait_for(what: str, probe, seconds: float = WAIT_SECONDS):
    """Calls `probe` until it returns something truthy; fails after `seconds`."""
    deadline = time.monotonic() + seconds
    last = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            check(True, what)
            return last
        time.sleep(0.2)
    raise AssertionError(f"{what}: not within {seconds} s (last: {last})")


def quote(segment: str) -> str:
    return urllib.parse.quote(segment, safe="")


class Client:
    """A real user on the homeserver."""

    def __init__(self, base: str, username: str):
        self.base = base
        body = {"username": username, "password": secrets.token_hex(12), "inhibit_login": False}
        status, answer = call("POST", f"{base}/_matrix/client/v3/register", body)
        if status == 401 and "session" in answer:  # user-interactive auth: the dummy stage
            body["auth"] = {"type": "m.login.dummy", "session": answer["session"]}
            status, answer = call("POST", f"{base}/_matrix/client/v3/register", body)
        check(status == 200, f"register {username}", answer)
        self.user_id, self.token = answer["user_id"], answer["access_token"]
        self.txn = 0

    def api(self, method: str, path: str, body=None) -> tuple[int, dict]:
        return call(method, f"{self.base}/_matrix/client/v3{path}", body, self.token)

    def create_room(self, name: str) -> str:
        status, answer = self.api("POST", "/createRoom", {"preset": "private_chat", "name": name})
        check(status == 200, f"create room {name}", answer)
        return answer["room_id"]

    def send_text(self, room_id: str, body: str) -> str:
        self.txn += 1
        path = f"/rooms/{quote(room_id)}/send/m.room.message/smoke{self.txn}"
        status, answer = self.api("PUT", path, {"msgtype": "m.text", "body": body})
        check(status == 200, f"send {body!r}", answer)
        return answer["event_id"]

    def membership(self, room_id: str, user_id: str) -> str | None:
        path = f"/rooms/{quote(room_id)}/state/m.room.member/{quote(user_id)}"
        status, answer = self.api("GET", path)
        return answer.get("membership") if status == 200 else None

    def messages(self, room_id: str) -> list[dict]:
        status, answer = self.api("GET", f"/rooms/{quote(room_id)}/messages?dir=b&limit=100")
        return answer.get("chunk", []) if status == 200 else []

    def find_message(self, room_id: str, sender: str, matches) -> list[dict]:
        return [
            event
            for event in self.messages(room_id)
            if event.get("type") == "m.room.message" and event.get("sender") == sender and matches(event["content"])
        ]


class Outbound:
    """The webhook bridge's `outbound_url`: records every POST it gets."""

    def __init__(self, secret: str):
        self.received: list[dict] = []
        self.lock = threading.Lock()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                length = int(self.headers.get("Content-Length", "0"))
                body = json.loads(self.rfile.read(length) or b"{}")
                with outer.lock:
                    outer.received.append({"auth": self.headers.get("Authorization"), "body": body})
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/matrix-messages"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def messages(self) -> list[dict]:
        with self.lock:
            return list(self.received)


def registration(app_id: str, port: int, localpart: str, users_regex: str | None) -> tuple[str, dict]:
    tokens = {"as_token": secrets.token_hex(32), "hs_token": secrets.token_hex(32)}
    users = f'\n    - exclusive: true\n      regex: "{users_regex}"' if users_regex else " []"
    text = (
        f"id: {app_id}\nurl: http://127.0.0.1:{port}\nas_token: {tokens['as_token']}\n"
        f"hs_token: {tokens['hs_token']}\nsender_localpart: {localpart}\nnamespaces:\n"
        f"  users:{users}\n  aliases: []\n  rooms: []\nrate_limited: false\n"
    )
    return text, tokens


def start_example(binary: str, config: str, log_path: str) -> subprocess.Popen:
    log = open(log_path, "w", encoding="utf-8")  # noqa: SIM115 (closed with the process)
    env = dict(NO_PROXY_ENV, RUST_LOG=os.environ.get("RUST_LOG", "info"))
    return subprocess.Popen([binary, "--config", config], stdout=log, stderr=subprocess.STDOUT, env=env)


def stop_examples(processes: dict[str, subprocess.Popen]) -> None:
    """SIGTERM to all, then each must exit 0 within the wait (or is killed, and fails)."""
    for process in processes.values():
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    failures = []
    for name, process in processes.items():
        try:
            process.wait(timeout=WAIT_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            failures.append(f"{name} did not stop within {WAIT_SECONDS} s of SIGTERM")
            continue
        if process.returncode != 0:
            failures.append(f"{name} exited with code {process.returncode} on SIGTERM")
        else:
            check(True, f"{name} exited cleanly on SIGTERM")
    if failures:
        raise AssertionError("; ".join(failures))


def check_appservice_api(process: subprocess.Popen, port: int, hs_token: str) -> None:
    """The homeserver-facing API of an example: tokens checked, queries answered 404."""
    base = f"http://127.0.0.1:{port}/_matrix/app/v1"

    def answers_ping() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"the appservice for port {port} exited with code {process.returncode}")
        try:
            return call("POST", f"{base}/ping", {}, hs_token)[0] == 200
        except OSError:  # not listening yet
            return False

    wait_for(f"appservice on {port} answers a ping", answers_ping)
    status, answer = call("POST", f"{base}/ping", {})
    check(status == 401 and answer.get("errcode") == "M_MISSING_TOKEN", "no hs_token: 401", (status, answer))
    status, answer = call("PUT", f"{base}/transactions/wrong", {"events": []}, "not-the-token")
    check(status == 403 and answer.get("errcode") == "M_FORBIDDEN", "wrong hs_token: 403", (status, answer))
    status, _ = call("GET", f"{base}/users/{quote('@nobody:' + SERVER_NAME)}", token=hs_token)
    check(status == 404, "user query: 404", status)
    status, _ = call("GET", f"{base}/rooms/{quote('#nowhere:' + SERVER_NAME)}", token=hs_token)
    check(status == 404, "room alias query: 404", status)


def test_echo_bot(alice: Client, echo_port: int, hs_token: str) -> None:
    room = alice.create_room("echo smoke")
    status, answer = alice.api("POST", f"/rooms/{quote(room)}/invite", {"user_id": ECHO_BOT})
    check(status == 200, "invite the echo bot", answer)
    wait_for("the echo bot joined", lambda: alice.membership(room, ECHO_BOT) == "join")

    alice.send_text(room, "!echo hello")
    is_notice = lambda body: lambda c: c.get("msgtype") == "m.notice" and c.get("body") == body  # noqa: E731
    wait_for("the echo bot answered `hello`", lambda: alice.find_message(room, ECHO_BOT, is_notice("hello")))
    alice.send_text(room, "!ping")
    pong = lambda c: c.get("msgtype") == "m.notice" and c.get("body", "").startswith("pong")  # noqa: E731
    wait_for("the echo bot answered `!ping`", lambda: alice.find_message(room, ECHO_BOT, pong))

    # The same transaction twice, as a homeserver retrying it would send it: one answer.
    event = {
        "type": "m.room.message",
        "room_id": room,
        "sender": alice.user_id,
        "event_id": "$smoke-repeated-transaction",
        "origin_server_ts": int(time.time() * 1000),
        "content": {"msgtype": "m.text", "body": "!echo only once"},
    }
    url = f"http://127.0.0.1:{echo_port}/_matrix/app/v1/transactions/smoke-repeat"
    for attempt in ("first", "repeated"):
        status, answer = call("PUT", url, {"events": [event]}, hs_token)
        check(status == 200, f"{attempt} transaction: 200", (status, answer))
    wait_for("the echo bot answered the transaction", lambda: alice.find_message(room, ECHO_BOT, is_notice("only once")))
    time.sleep(1.5)  # room for a second answer, were the repeat handled again
    answers = alice.find_message(room, ECHO_BOT, is_notice("only once"))
    check(len(answers) == 1, "a repeated transaction is handled once", len(answers))


def test_webhook_bridge(alice: Client, bridge_port: int, secret: str, outbound: Outbound, outbound_secret: str):
    room = alice.create_room("webhook smoke")
    status, answer = alice.api("POST", f"/rooms/{quote(room)}/invite", {"user_id": BRIDGE_BOT})
    check(status == 200, "invite the bridge bot", answer)
    wait_for("the bridge bot joined", lambda: alice.membership(room, BRIDGE_BOT) == "join")

    webhook = f"http://127.0.0.1:{bridge_port}/webhook/"
    status, answer = call("POST", webhook + quote(room), {"text": "x"})
    check(status == 401, "webhook without the secret: 401", (status, answer))
    status, answer = call("POST", webhook + quote(room), {"text": "x"}, "wrong-secret")
    check(status == 403, "webhook with a wrong secret: 403", (status, answer))

    status, answer = call("POST", webhook + quote(room), {"text": "deploy finished", "username": "CI Bot"}, secret)
    ghost = f"@webhook_ci_bot:{SERVER_NAME}"
    check(status == 200 and answer.get("user_id") == ghost, "webhook call by room ID", (status, answer))
    said = lambda body: lambda c: c.get("body") == body  # noqa: E731
    wait_for("the ghost's message is in the room", lambda: alice.find_message(room, ghost, said("deploy finished")))
    status, answer = alice.api("GET", f"/profile/{quote(ghost)}/displayname")
    check(answer.get("displayname") == "CI Bot", "the ghost's display name is the username", (status, answer))

    alias = f"#webhook-smoke:{SERVER_NAME}"
    status, answer = alice.api("PUT", f"/directory/room/{quote(alias)}", {"room_id": room})
    check(status == 200, "alias for the bridged room", answer)
    status, answer = call("POST", webhook + quote(alias), {"text": "by alias"}, secret)
    default_ghost = f"@webhook_hook:{SERVER_NAME}"
    check(status == 200 and answer.get("user_id") == default_ghost, "webhook call by alias", (status, answer))
    wait_for("the default ghost's message is in the room", lambda: alice.find_message(room, default_ghost, said("by alias")))

    event_id = alice.send_text(room, "hello outside")
    out = wait_for(
        "a real user's message reached the outbound URL",
        lambda: [m for m in outbound.messages() if m["body"].get("event_id") == event_id],
    )[0]
    expected = {"room_id": room, "sender": alice.user_id, "body": "hello outside", "event_id": event_id}
    check(all(out["body"].get(k) == v for k, v in expected.items()), "forwarded fields", out)
    check(isinstance(out["body"].get("origin_server_ts"), int), "forwarded origin_server_ts", out)
    check(out["auth"] == f"Bearer {outbound_secret}", "forwarded with the outbound secret", out["auth"])
    senders = {m["body"].get("sender") for m in outbound.messages()}
    check(not senders & {ghost, default_ghost, BRIDGE_BOT}, "ghost messages are not forwarded", senders)


def main() -> int:
    if len(sys.argv) != 4:
        print(__doc__)
        return 2
    hearth, echo_binary, bridge_binary = sys.argv[1:]
    echo_port, bridge_port = free_port(), free_port()
    webhook_secret, outbound_secret = secrets.token_hex(16), secrets.token_hex(16)
    outbound = Outbound(outbound_secret)
    with tempfile.TemporaryDirectory() as work:
        echo_registration, echo_tokens = registration("echo-bot", echo_port, "echo", None)
        bridge_registration, bridge_tokens = registration(
            "webhook-bridge", bridge_port, "webhook", f"@webhook_.*:{SERVER_NAME}"
        )
        files = {"echo-registration.yaml": echo_registration, "webhook-registration.yaml": bridge_registration}
        for name, text in files.items():
            with open(os.path.join(work, name), "w", encoding="utf-8") as file:
                file.write(text)
        extra_config = (
            f'server_name = "{SERVER_NAME}"\n\n[appservices]\nconfig_files = ['
            + ", ".join(json.dumps(os.path.join(work, name)) for name in files)
            + "]\n"
        )
        processes: dict[str, subprocess.Popen] = {}
        try:
            with running_hearth(hearth, extra_config) as base:
                common = f"homeserver_url: {base}\nserver_name: {SERVER_NAME}\n"
                configs = {
                    "echo-bot": f"{common}listen: 127.0.0.1:{echo_port}\nregistration: echo-registration.yaml\n",
                    "webhook-bridge": (
                        f"{common}listen: 127.0.0.1:{bridge_port}\nregistration: webhook-registration.yaml\n"
                        f"webhook_secret: {webhook_secret}\noutbound_url: {outbound.url}\n"
                        f"outbound_secret: {outbound_secret}\n"
                    ),
                }
                for (name, config), binary in zip(configs.items(), (echo_binary, bridge_binary)):
                    path = os.path.join(work, f"{name}.yaml")
                    with open(path, "w", encoding="utf-8") as file:
                        file.write(config)
                    processes[name] = start_example(binary, path, os.path.join(work, f"{name}.log"))
                try:
                    check_appservice_api(processes["echo-bot"], echo_port, echo_tokens["hs_token"])
                    check_appservice_api(processes["webhook-bridge"], bridge_port, bridge_tokens["hs_token"])
                    alice = Client(base, "alice")
                    test_echo_bot(alice, echo_port, echo_tokens["hs_token"])
                    test_webhook_bridge(alice, bridge_port, webhook_secret, outbound, outbound_secret)
                except BaseException:
                    # Stop them, but report the failure that came first.
                    try:
                        stop_examples(processes)
                    except AssertionError as error:
                        print(f"also: {error}", file=sys.stderr)
                    raise
                stop_examples(processes)
        except Exception as error:  # any failure: report it with the examples' logs
            print(f"not ok - {type(error).__name__}: {error}", file=sys.stderr)
            for name in processes:
                with open(os.path.join(work, f"{name}.log"), encoding="utf-8", errors="replace") as log:
                    print(f"--- {name} log (last 40 lines) ---\n" + "".join(log.readlines()[-40:]), file=sys.stderr)
            return 1
        finally:
            outbound.server.shutdown()
    print("ok - all example appservice checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
