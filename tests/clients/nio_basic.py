"""matrix-nio (a real Python Matrix client SDK) against a running Hearth.

Starts the `hearth` binary given as the first argument on a free loopback port with a fresh
SQLite data directory (or the database in HEARTH_DATABASE_URL), then registers, logs in, reads
whoami, sets and reads the display name, lists devices and logs out through nio. Finally it
stops the server with SIGTERM and checks that it shuts down cleanly.

    python tests/clients/nio_basic.py target/debug/hearth
"""

import asyncio
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

import nio


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(binary: str, data_dir: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = dict(os.environ, HEARTH_LISTEN=f"127.0.0.1:{port}", HEARTH_DATA_DIR=data_dir, HEARTH_LOG="warn")
    server = subprocess.Popen([binary, "serve"], env=env)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{base}/health", timeout=1) as response:
                if response.status == 200:
                    return server, base
        except OSError:
            time.sleep(0.1)
    server.kill()
    raise SystemExit("hearth did not become healthy within 30 s")


def check(condition: bool, what: str, detail: object = "") -> None:
    if not condition:
        raise AssertionError(f"{what}: {detail}")
    print(f"ok - {what}")


async def exercise(base: str) -> None:
    client = nio.AsyncClient(base, "niouser")
    try:
        registered = await client.register("niouser", "nio password 1", device_name="nio test")
        check(isinstance(registered, nio.RegisterResponse), "register", registered)
        check(registered.user_id == "@niouser:localhost", "registered user ID")

        # A second client logs in with the password.
        other = nio.AsyncClient(base, "@niouser:localhost")
        login = await other.login("nio password 1", device_name="second device")
        check(isinstance(login, nio.LoginResponse), "login", login)
        check(login.device_id != registered.device_id, "login made a new device")

        whoami = await other.whoami()
        check(isinstance(whoami, nio.WhoamiResponse), "whoami", whoami)
        check(whoami.user_id == "@niouser:localhost" and whoami.device_id == login.device_id, "whoami names user and device")

        set_name = await other.set_displayname("Nio Tester")
        check(isinstance(set_name, nio.ProfileSetDisplayNameResponse), "set displayname", set_name)
        name = await client.get_displayname("@niouser:localhost")
        check(isinstance(name, nio.ProfileGetDisplayNameResponse) and name.displayname == "Nio Tester", "get displayname", name)

        devices = await other.devices()
        check(isinstance(devices, nio.DevicesResponse), "devices", devices)
        ids = sorted(device.id for device in devices.devices)
        check(ids == sorted([registered.device_id, login.device_id]), "both devices listed", ids)
        names = {device.id: device.display_name for device in devices.devices}
        check(names[login.device_id] == "second device", "device display name kept")

        logout = await other.logout()
        check(isinstance(logout, nio.LogoutResponse), "logout", logout)
        after = await other.whoami()
        check(isinstance(after, nio.WhoamiError) and after.status_code == "M_UNKNOWN_TOKEN", "token dead after logout", after)

        stranger = nio.AsyncClient(base, "@niouser:localhost")
        bad = await stranger.login("wrong password")
        check(isinstance(bad, nio.LoginError) and bad.status_code == "M_FORBIDDEN", "wrong password refused", bad)
        await stranger.close()
        await other.close()
    finally:
        await client.close()


def main() -> None:
    binary = sys.argv[1]
    with tempfile.TemporaryDirectory() as data_dir:
        server, base = start_server(binary, data_dir)
        try:
            asyncio.run(exercise(base))
        finally:
            server.send_signal(signal.SIGTERM)
            code = server.wait(timeout=30)
        check(code == 0, f"hearth exited cleanly on SIGTERM (code {code})")


if __name__ == "__main__":
    main()
