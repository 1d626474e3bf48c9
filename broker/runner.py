"""Run Mosquitto with the project's config (``broker/mosquitto.conf`` + ``broker/roles.json``).

The production config is rendered for a local run: the listeners, the dynamic-security
plugin's path and file, and the persistence path are replaced; everything else (queue
sizes, TCP_NODELAY, persistence) is kept as written. A local run has a plaintext
listener for the services (loopback by default) and, when given a certificate and key,
a TLS listener for the devices.
"""

from __future__ import annotations

import contextlib
import getpass
import logging
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from broker.dynsec import ADMIN_USER, SERVICE_USERS, Accounts, ControlChannel, DynsecFile

__all__ = [
    "BrokerError",
    "BrokerLayout",
    "MosquittoBroker",
    "TlsListener",
    "find_dynsec_plugin",
    "find_mosquitto",
]

log = logging.getLogger(__name__)

PACKAGE_DIR: Final = Path(__file__).resolve().parent
CONFIG_TEMPLATE: Final = PACKAGE_DIR / "mosquitto.conf"
PLUGIN_NAME: Final = "mosquitto_dynamic_security.so"
LISTENERS_MARKER: Final = "# --- listeners"


class BrokerError(RuntimeError):
    """Mosquitto is missing, misconfigured or did not come up."""


def find_mosquitto() -> str:
    for candidate in (
        shutil.which("mosquitto"),
        "/usr/sbin/mosquitto",
        "/usr/local/sbin/mosquitto",
    ):
        if candidate and Path(candidate).exists():
            return candidate
    raise BrokerError(
        "mosquitto is not installed: run `make test`/`make demo` (installs it through apt) "
        "or `apt-get install mosquitto`"
    )


def find_dynsec_plugin() -> Path:
    roots = [Path("/usr/lib/x86_64-linux-gnu"), Path("/usr/lib/aarch64-linux-gnu")]
    roots += [Path("/usr/lib"), Path("/usr/local/lib")]
    for root in roots:
        for candidate in (root / PLUGIN_NAME, root / "mosquitto" / PLUGIN_NAME):
            if candidate.exists():
                return candidate
    raise BrokerError(
        f"Mosquitto's dynamic-security plugin ({PLUGIN_NAME}) was not found; it ships with "
        "Mosquitto 2.0 (`apt-get install mosquitto`)"
    )


@dataclass(frozen=True)
class TlsListener:
    """A TLS listener for devices: port, bind address, server certificate and key."""

    port: int
    certfile: Path
    keyfile: Path
    bind: str = "127.0.0.1"


class BrokerLayout:
    """Where a local broker keeps its files under the data directory."""

    def __init__(self, data_dir: Path) -> None:
        self.root = data_dir.resolve() / "broker"
        self.config = self.root / "mosquitto.conf"
        self.dynsec = self.root / "dynamic-security.json"
        self.persistence = self.root / "data"
        self.service_env = self.root / "service-credentials.env"
        self.pid_file = self.root / "mosquitto.pid"
        self.port_file = self.root / "services.port"  # the running broker's plaintext port

    def service_credentials(self) -> dict[str, str]:
        """Passwords of the service users (svc-ingest, svc-api, svc-gateway, svc-admin),
        created once and kept 0600 in the data dir."""
        creds: dict[str, str] = {}
        if self.service_env.exists():
            for line in self.service_env.read_text().splitlines():
                user, _, password = line.partition("=")
                creds[user] = password
        missing = [u for u in SERVICE_USERS if u not in creds]
        if missing:
            import secrets  # noqa: PLC0415

            for user in missing:
                creds[user] = secrets.token_urlsafe(18)
            self.root.mkdir(parents=True, exist_ok=True)
            tmp = self.service_env.with_suffix(".tmp")
            tmp.write_text("".join(f"{u}={p}\n" for u, p in creds.items()))
            tmp.chmod(0o600)
            tmp.replace(self.service_env)
        return creds

    def running_port(self) -> int | None:
        """The plaintext port of a broker running on this data dir, if one runs."""
        try:
            os.kill(int(self.pid_file.read_text().strip()), 0)
            return int(self.port_file.read_text().strip())
        except (FileNotFoundError, ValueError, ProcessLookupError, PermissionError):
            return None

    @contextlib.contextmanager
    def accounts(self) -> Iterator[Accounts]:
        """Device accounts: through the running broker if there is one, else the file."""
        port = self.running_port()
        control = None
        if port is not None:
            control = ControlChannel("127.0.0.1", port, self.service_credentials()[ADMIN_USER])
        try:
            yield Accounts(DynsecFile(self.dynsec), control)
        finally:
            if control is not None:
                control.close()


def render_config(
    layout: BrokerLayout, port: int, bind: str, tls: TlsListener | None = None
) -> str:
    replaced = {
        "plugin": f"plugin {find_dynsec_plugin()}",
        "plugin_opt_config_file": f"plugin_opt_config_file {layout.dynsec}",
        "persistence_location": f"persistence_location {layout.persistence}/",
    }
    template = CONFIG_TEMPLATE.read_text().split(LISTENERS_MARKER)[0]
    lines = [replaced.get(line.split(" ", 1)[0], line) for line in template.splitlines()]
    lines += [f"listener {port} {bind}", "protocol mqtt"]
    if tls is not None:
        lines += [
            f"listener {tls.port} {tls.bind}",
            "protocol mqtt",
            f"certfile {tls.certfile}",
            f"keyfile {tls.keyfile}",
            "tls_version tlsv1.2",
        ]
    lines.append(f"pid_file {layout.pid_file}")
    # Run as the invoking user (no privilege drop to a 'mosquitto' user for a local run).
    lines.append(f"user {getpass.getuser()}")
    return "\n".join(lines) + "\n"


def wait_for_port(host: str, port: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.05)
    return False


class MosquittoBroker:
    """One local Mosquitto process with the project's config."""

    def __init__(
        self,
        data_dir: Path,
        port: int = 1883,
        bind: str = "127.0.0.1",
        tls: TlsListener | None = None,
    ) -> None:
        self.layout = BrokerLayout(data_dir)
        self.port = port
        self.bind = bind
        self.tls = tls
        self.proc: subprocess.Popen[bytes] | None = None

    def prepare(self) -> dict[str, str]:
        """Write the config, ensure service users and roles; return their credentials."""
        lay = self.layout
        lay.persistence.mkdir(parents=True, exist_ok=True)
        creds = lay.service_credentials()
        DynsecFile(lay.dynsec).ensure_services(creds)
        lay.config.write_text(render_config(lay, self.port, self.bind, self.tls))
        return creds

    @contextlib.contextmanager
    def accounts(self) -> Iterator[Accounts]:
        """Device accounts of this running broker (changed through its control topic)."""
        admin = self.layout.service_credentials()[ADMIN_USER]
        control = ControlChannel("127.0.0.1", self.port, admin)
        try:
            yield Accounts(DynsecFile(self.layout.dynsec), control)
        finally:
            control.close()

    def start(self, timeout: float = 15) -> None:
        exe = find_mosquitto()
        self.prepare()
        log_path = self.layout.root / "mosquitto.log"
        with log_path.open("ab") as log_file:
            self.proc = subprocess.Popen(
                [exe, "-c", str(self.layout.config)],
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        host = "127.0.0.1" if self.bind in ("0.0.0.0", "") else self.bind  # noqa: S104
        if not wait_for_port(host, self.port, timeout):
            self.kill()
            tail = log_path.read_text(errors="replace")[-1500:]
            raise BrokerError(f"mosquitto did not listen on {host}:{self.port}:\n{tail}")
        self.layout.port_file.write_text(f"{self.port}\n")
        log.info("mosquitto ready", extra={"port": self.port, "config": str(self.layout.config)})

    def stop(self, timeout: float = 15) -> None:
        """Graceful stop (SIGTERM): Mosquitto writes its persistence file on the way out."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def terminate(self) -> None:
        """SIGTERM without waiting (safe in a signal handler); see :meth:`wait`."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def wait(self) -> int:
        assert self.proc is not None
        return self.proc.wait()
