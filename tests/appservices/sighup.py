"""Registration files reloaded on SIGHUP, against a real `hearth` process (argv[1]): a changed
file takes effect (the new as_token works, the old one no longer does), a broken one is refused
and the registrations in use stay, and the server keeps serving throughout.

    python3 tests/appservices/sighup.py target/debug/hearth
"""

import json
import os
import signal
import sys
import tempfile
import time
import urllib.error
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "clients"))

from harness import check, running_hearth  # noqa: E402

REGISTRATION = """id: reloaded
url: null
as_token: {token}
hs_token: hs-reloaded
sender_localpart: reloadbot
namespaces:
  users: [{{exclusive: true, regex: '{regex}'}}]
"""


def whoami(base: str, token: str) -> int:
    request = urllib.request.Request(f"{base}/_matrix/client/v3/account/whoami")
    request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return json.load(response) and response.status
    except urllib.error.HTTPError as error:
        return error.code


def wait_for(what: str, condition) -> None:
    deadline = time.monotonic() + 15
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within 15 s")
        time.sleep(0.05)
    check(True, what)


def main() -> None:
    binary = sys.argv[1]
    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "registration.yaml")
        with open(path, "w") as out:
            out.write(REGISTRATION.format(token="as-first", regex="@reload_.*"))
        process = {}
        extra = f'[appservices]\nconfig_files = ["{path}"]\n'
        with running_hearth(binary, extra, started=lambda server: process.setdefault("server", server)) as base:
            server = process["server"]
            check(whoami(base, "as-first") == 200, "the registration at start is in use")

            with open(path, "w") as out:
                out.write(REGISTRATION.format(token="as-second", regex="@reload_.*"))
            server.send_signal(signal.SIGHUP)
            wait_for("after SIGHUP the new as_token works", lambda: whoami(base, "as-second") == 200)
            check(whoami(base, "as-first") == 401, "and the old one is refused")

            with open(path, "w") as out:
                out.write(REGISTRATION.format(token="as-third", regex="@reload_(["))
            server.send_signal(signal.SIGHUP)
            time.sleep(1)
            check(server.poll() is None, "a broken file does not stop the server")
            check(whoami(base, "as-second") == 200, "a broken file is refused: the registration in use stays")
            check(whoami(base, "as-third") == 401, "nothing of the broken file is granted")


if __name__ == "__main__":
    main()
