"""matrix-nio (a real Python Matrix client SDK) against a running Hearth.

Starts the `hearth` binary given as the first argument on a free loopback port with a fresh
SQLite data directory (or the database in HEARTH_DATABASE_URL), then registers, logs in, reads
whoami, sets and reads the display name, lists devices and logs out through nio. Finally it
stops the server with SIGTERM and checks that it shuts down cleanly.

    python tests/clients/nio_basic.py target/debug/hearth
"""

import asyncio
import sys

import nio

from harness import check, running_hearth


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
    with running_hearth(sys.argv[1]) as base:
        asyncio.run(exercise(base))


if __name__ == "__main__":
    main()
