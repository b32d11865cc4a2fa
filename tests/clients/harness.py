"""Runs a real `hearth` binary for client SDK tests: a free loopback port, a fresh data
directory (SQLite) unless HEARTH_DATABASE_URL says otherwise, and a clean SIGTERM at the end.

HEARTH_TEST_BASE_URL=http://127.0.0.1:PORT instead points a test at a server that is already
running (another Hearth, or Synapse to check the test itself); nothing is started or stopped."""

import contextlib
import os
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def check(condition: bool, what: str, detail: object = "") -> None:
    if not condition:
        raise AssertionError(f"{what}: {detail}")
    print(f"ok - {what}")


@contextlib.contextmanager
def running_hearth(binary: str, extra_config: str = "", started=None):
    """Yields the base URL of a healthy server; stops it with SIGTERM and checks it exits 0.

    `extra_config`: TOML put before nio-server.toml's (so top-level keys stay top-level),
    for a test that needs more than the shared settings (appservice registrations).
    `started`: called with the server's process once it is healthy (to signal it)."""
    external = os.environ.get("HEARTH_TEST_BASE_URL")
    if external:
        if extra_config:
            raise SystemExit("this test configures its own server; unset HEARTH_TEST_BASE_URL")
        yield external.rstrip("/")
        return
    with tempfile.TemporaryDirectory() as data_dir:
        port = free_port()
        env = dict(os.environ, HEARTH_LISTEN=f"127.0.0.1:{port}", HEARTH_DATA_DIR=data_dir, HEARTH_LOG="warn")
        config = os.path.join(os.path.dirname(os.path.abspath(__file__)), "nio-server.toml")
        if extra_config:
            with open(config, encoding="utf-8") as shared:
                combined = extra_config.rstrip("\n") + "\n\n" + shared.read()
            config = os.path.join(data_dir, "hearth.toml")
            with open(config, "w", encoding="utf-8") as file:
                file.write(combined)
        server = subprocess.Popen([binary, "serve", "--config", config], env=env)
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    with urllib.request.urlopen(f"{base}/health", timeout=1) as response:
                        if response.status == 200:
                            break
                except OSError:
                    if time.monotonic() > deadline:
                        raise SystemExit("hearth did not become healthy within 30 s")
                    time.sleep(0.1)
            if started:
                started(server)
            yield base
        finally:
            server.send_signal(signal.SIGTERM)
            code = server.wait(timeout=30)
        check(code == 0, f"hearth exited cleanly on SIGTERM (code {code})")
