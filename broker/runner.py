"""Run Mosquitto with the project's config (``broker/mosquitto.conf`` + ``broker/acl``).

The production config is rendered for a local run: the listener port and bind address,
and the password, ACL and persistence paths are replaced; everything else (queue
sizes, TCP_NODELAY, persistence) is kept as written.
"""

from __future__ import annotations

import getpass
import logging
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Final

from broker.credentials import SERVICE_USERS, PasswordFile

__all__ = ["BrokerError", "BrokerLayout", "MosquittoBroker", "find_mosquitto"]

log = logging.getLogger(__name__)

PACKAGE_DIR: Final = Path(__file__).resolve().parent
CONFIG_TEMPLATE: Final = PACKAGE_DIR / "mosquitto.conf"
ACL_TEMPLATE: Final = PACKAGE_DIR / "acl"


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


class BrokerLayout:
    """Where a local broker keeps its files under the data directory."""

    def __init__(self, data_dir: Path) -> None:
        self.root = data_dir.resolve() / "broker"
        self.config = self.root / "mosquitto.conf"
        self.passwd = self.root / "passwd"
        self.acl = self.root / "acl"
        self.persistence = self.root / "data"
        self.service_env = self.root / "service-credentials.env"
        self.pid_file = self.root / "mosquitto.pid"

    def passwords(self) -> PasswordFile:
        return PasswordFile(self.passwd)

    def service_credentials(self) -> dict[str, str]:
        """Passwords of the service users (svc-ingest, svc-api, svc-gateway), created once."""
        creds: dict[str, str] = {}
        if self.service_env.exists():
            for line in self.service_env.read_text().splitlines():
                user, _, password = line.partition("=")
                creds[user] = password
        missing = [u for u in SERVICE_USERS if u not in creds]
        if missing:
            pw = self.passwords()
            for user in missing:
                creds[user] = pw.set(user)
            self.root.mkdir(parents=True, exist_ok=True)
            self.service_env.write_text("".join(f"{u}={p}\n" for u, p in creds.items()))
            self.service_env.chmod(0o600)
        return creds


def render_config(layout: BrokerLayout, port: int, bind: str) -> str:
    replaced = {
        "password_file": f"password_file {layout.passwd}",
        "acl_file": f"acl_file {layout.acl}",
        "persistence_location": f"persistence_location {layout.persistence}/",
        "listener": f"listener {port} {bind}",
    }
    out = []
    for line in CONFIG_TEMPLATE.read_text().splitlines():
        key = line.split(" ", 1)[0]
        out.append(replaced.get(key, line))
    out.append(f"pid_file {layout.pid_file}")
    # Run as the invoking user (no privilege drop to a 'mosquitto' user for a local run).
    out.append(f"user {getpass.getuser()}")
    return "\n".join(out) + "\n"


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

    def __init__(self, data_dir: Path, port: int = 1883, bind: str = "127.0.0.1") -> None:
        self.layout = BrokerLayout(data_dir)
        self.port = port
        self.bind = bind
        self.proc: subprocess.Popen[bytes] | None = None

    def prepare(self) -> dict[str, str]:
        """Write config and ACL, ensure service users; return their credentials."""
        lay = self.layout
        lay.persistence.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(ACL_TEMPLATE, lay.acl)
        creds = lay.service_credentials()
        lay.config.write_text(render_config(lay, self.port, self.bind))
        return creds

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
        log.info("mosquitto ready", extra={"port": self.port, "config": str(self.layout.config)})

    def reload(self) -> None:
        """SIGHUP: re-read the password and ACL files without dropping clients."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGHUP)

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


def reload_running_broker(data_dir: Path) -> bool:
    """SIGHUP a broker started by `fleet broker` on this data dir, if it runs."""
    pid_file = BrokerLayout(data_dir).pid_file
    try:
        os.kill(int(pid_file.read_text().strip()), signal.SIGHUP)
    except (FileNotFoundError, ValueError, ProcessLookupError, PermissionError):
        return False
    return True
