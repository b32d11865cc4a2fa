"""Real servers federating on loopback for interop tests: a test CA (made here, with the
`cryptography` package Synapse itself depends on), Hearth binaries and a pinned Synapse, each
with a TLS federation listener whose certificate the CA issued, all trusting the CA.

Server names are IP literals with ports ("127.0.0.2:PORT"): no DNS, well-known or SRV is
involved, so Synapse and Hearth connect to each other's federation port directly.
"""

import contextlib
import datetime
import ipaddress
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


def check(condition: bool, what: str, detail: object = "") -> None:
    if not condition:
        raise AssertionError(f"{what}: {detail}")
    print(f"ok - {what}", flush=True)


def free_port(ip: str) -> int:
    with socket.socket() as sock:
        sock.bind((ip, 0))
        return sock.getsockname()[1]


class TestCa:
    """A CA for one run; issues server certificates with IP subject alternative names."""

    def __init__(self, directory: str):
        self.directory = directory
        self.key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Hearth interop test CA")])
        now = datetime.datetime.now(datetime.timezone.utc)
        self.name = name
        self.certificate = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(True, False, False, False, False, True, True, False, False), critical=True
            )
            .sign(self.key, hashes.SHA256())
        )
        self.path = os.path.join(directory, "ca.pem")
        with open(self.path, "wb") as out:
            out.write(self.certificate.public_bytes(serialization.Encoding.PEM))

    def issue(self, ip: str) -> tuple[str, str]:
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.timezone.utc)
        certificate = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, ip)]))
            .issuer_name(self.name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(ip))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(self.key, hashes.SHA256())
        )
        cert_path = os.path.join(self.directory, f"{ip}.pem")
        key_path = os.path.join(self.directory, f"{ip}.key")
        with open(cert_path, "wb") as out:
            out.write(certificate.public_bytes(serialization.Encoding.PEM))
        with open(key_path, "wb") as out:
            out.write(
                key.private_bytes(
                    serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
                )
            )
        return cert_path, key_path


def wait_healthy(url: str, what: str, process: subprocess.Popen, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while True:
        if process.poll() is not None:
            raise SystemExit(f"{what} exited with {process.returncode} before answering")
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise SystemExit(f"{what} did not answer {url} within {seconds} s")
        time.sleep(0.2)


class Server:
    """A running server: its name, client base URL and process."""

    def __init__(self, name: str, base: str, process: subprocess.Popen, log: str):
        self.name, self.base, self.process, self.log = name, base, process, log

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()

    def user(self, localpart: str) -> str:
        return f"@{localpart}:{self.name}"


def start_hearth(
    binary: str,
    ca: TestCa,
    ip: str,
    directory: str,
    database_url: str | None = None,
    log_level: str = "info,ruma_state_res=warn",
    federation_extra: str = "",
    extra: str = "",
) -> Server:
    """`federation_extra`: more lines for the `[federation]` table (benchmarks); `extra`: more
    tables after it (e.g. `[appservices]`)."""
    client_port, federation_port = free_port(ip), free_port(ip)
    name = f"{ip}:{federation_port}"
    cert, key = ca.issue(ip)
    data = os.path.join(directory, f"hearth-{ip}")
    os.makedirs(data, exist_ok=True)
    config = os.path.join(data, "hearth.toml")
    with open(config, "w") as out:
        out.write(
            f"""
server_name = "{name}"
listen = "{ip}:{client_port}"
data_dir = "{data}"
log = "{log_level}"
[registration]
enabled = true
enable_registration_without_verification = true
[rate_limits]
login = {{ per_second = 1000000.0, burst_count = 1000000 }}
registration = {{ per_second = 1000000.0, burst_count = 1000000 }}
message = {{ per_second = 1000000.0, burst_count = 1000000 }}
joins = {{ per_second = 1000000.0, burst_count = 1000000 }}
invites = {{ per_second = 1000000.0, burst_count = 1000000 }}
invites_received = {{ per_second = 1000000.0, burst_count = 1000000 }}
room_creation = {{ per_second = 1000000.0, burst_count = 1000000 }}
[federation]
enabled = true
listen = "{ip}:{federation_port}"
tls_certificate = "{cert}"
tls_private_key = "{key}"
extra_ca_file = "{ca.path}"
ip_range_allowlist = ["127.0.0.0/8"]
inbound_per_second = 100000.0
inbound_burst = 100000
allow_public_rooms_over_federation = true
{federation_extra}
{extra}
"""
        )
        if database_url:
            out.write(f'[database]\nurl = "{database_url}"\n')
    log = os.path.join(data, "hearth.log")
    # Each server its own database: HEARTH_* variables (HEARTH_DATABASE_URL above all) would
    # override the config of every Hearth started here.
    env = {name: value for name, value in os.environ.items() if not name.startswith("HEARTH_")}
    process = subprocess.Popen(
        [binary, "serve", "--config", config], stdout=open(log, "w"), stderr=subprocess.STDOUT, env=env
    )
    base = f"http://{ip}:{client_port}"
    wait_healthy(f"{base}/health", f"Hearth {name}", process)
    return Server(name, base, process, log)


def start_synapse(
    python: str, ca: TestCa, ip: str, directory: str, log_level: str = "INFO", extra: str = "", launcher: list | None = None
) -> Server:
    """`extra`: more homeserver.yaml lines; `launcher`: how to run Synapse instead of
    `python -m synapse.app.homeserver` (benchmarks that patch it)."""
    client_port, federation_port = free_port(ip), free_port(ip)
    name = f"{ip}:{federation_port}"
    cert, key = ca.issue(ip)
    data = os.path.join(directory, f"synapse-{ip}")
    os.makedirs(data, exist_ok=True)
    config = os.path.join(data, "homeserver.yaml")
    log_config = os.path.join(data, "log.yaml")
    log = os.path.join(data, "synapse.log")
    with open(log_config, "w") as out:
        out.write(
            f"""version: 1
formatters:
  precise:
    format: '%(asctime)s - %(name)s - %(lineno)d - %(levelname)s - %(request)s - %(message)s'
handlers:
  file:
    class: logging.FileHandler
    formatter: precise
    filename: {log}
    filters: [context]
filters:
  context:
    (): synapse.logging.context.LoggingContextFilter
    request: ""
root:
  level: {log_level}
  handlers: [file]
disable_existing_loggers: false
"""
        )
    generous = "{per_second: 1000, burst_count: 1000}"
    with open(config, "w") as out:
        out.write(
            f"""server_name: "{name}"
pid_file: {data}/homeserver.pid
listeners:
  - port: {federation_port}
    bind_addresses: ['{ip}']
    type: http
    tls: true
    resources: [{{names: [federation], compress: false}}]
  - port: {client_port}
    bind_addresses: ['{ip}']
    type: http
    tls: false
    resources: [{{names: [client], compress: false}}]
tls_certificate_path: {cert}
tls_private_key_path: {key}
federation_custom_ca_list: [{ca.path}]
federation_verify_certificates: true
federation_ip_range_blacklist: []
ip_range_whitelist: ['127.0.0.0/8']
database:
  name: sqlite3
  args:
    database: {data}/homeserver.db
log_config: {log_config}
media_store_path: {data}/media
signing_key_path: {data}/signing.key
report_stats: false
enable_registration: true
enable_registration_without_verification: true
trusted_key_servers: []
suppress_key_server_warning: true
allow_public_rooms_over_federation: true
room_list_publication_rules: [{{action: allow}}]
caches:
  sync_response_cache_duration: 0
rc_message: {generous}
rc_registration: {generous}
rc_login:
  address: {generous}
  account: {generous}
  failed_attempts: {generous}
rc_joins:
  local: {generous}
  remote: {generous}
rc_invites:
  per_room: {generous}
  per_user: {generous}
  per_issuer: {generous}
rc_federation:
  window_size: 1000
  sleep_limit: 100000
  sleep_delay: 1
  reject_limit: 100000
  concurrent: 1000
{extra}
"""
        )
    subprocess.run(
        [python, "-m", "synapse.app.homeserver", "--config-path", config, "--generate-keys"],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    process = subprocess.Popen(
        (launcher or [python, "-m", "synapse.app.homeserver"]) + ["--config-path", config],
        stdout=open(os.path.join(data, "stdout.log"), "w"),
        stderr=subprocess.STDOUT,
    )
    base = f"http://{ip}:{client_port}"
    wait_healthy(f"{base}/_matrix/client/versions", f"Synapse {name}", process, seconds=120)
    return Server(name, base, process, log)
