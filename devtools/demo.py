"""``fleet demo``: the whole system on one box, supervised by one command.

Start order: PostgreSQL (embedded, or ``FLEET_DSN``) with migrations → Mosquitto with the
project's config → ``fleet ingest`` → ``fleet api`` → ``fleet sim``.  Each service is a
child process with its own log file under ``<data-dir>/logs/``.  Nothing is restarted
silently: when one dies, the demo says which one, shows the end of its log and stops
everything.  Ctrl-C / SIGTERM stops the services in reverse order.  The database and the
broker keep their state in the data directory, so a second run continues the first.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import logging
import os
import re
import secrets
import signal
import socket
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import IO, Final

import typer

from api.web_assets import (
    WebAssetsError,
    assets_installed,
    charts_installed,
    install_charts,
    install_leaflet,
)
from broker.runner import BrokerError, BrokerLayout, MosquittoBroker, TlsListener
from broker.tls import ServerCertificate, ensure_local_tls
from devtools.processes import ChildError, ChildProcess, fleet_argv, wait_gone
from fleet.storage.embedded import EmbeddedPostgres, EmbeddedPostgresError, free_port
from fleet.storage.migrate import migrate

__all__ = ["DemoError", "DemoOptions", "DemoStack", "run_demo"]

log = logging.getLogger(__name__)

STOP_TIMEOUT_S: Final = 15.0
READY_TIMEOUT_S: Final = 60.0
POLL_S: Final = 0.25
TOKEN_FILE: Final = "demo-token"  # noqa: S105 - a file name, not a secret
LOCK_FILE: Final = "demo.lock"  # held by the running demo (flock)


class DemoError(RuntimeError):
    """A service of the demo could not start or died; the message names it."""


@dataclass
class DemoOptions:
    data_dir: Path
    port: int = 8000
    mqtt_port: int = 1883  # plaintext, for the services: always on 127.0.0.1
    mqtt_tls_port: int = 8883  # TLS, for the devices: on ``bind``
    bind: str = "127.0.0.1"
    vehicles: int = 300
    speedup: float = 1.0
    history_s: float = 3600.0  # at speedup 1: the sim first replays this much of the past
    sim: bool = True
    dsn: str | None = None
    sim_args: Sequence[str] = ()


class Service(ChildProcess):
    """One supervised ``fleet <command>`` process writing to its own log file."""

    def __init__(
        self, name: str, argv: list[str], env: dict[str, str], log_path: Path, *, may_finish: bool
    ) -> None:
        super().__init__(name, argv, env, log_path, supervised=True, stop_timeout=STOP_TIMEOUT_S)
        self.may_finish = may_finish  # exit 0 is the end of its run (the sim), not a failure
        self.finish_reported = False


def demo_token(path: Path) -> str:
    """The demo's admin token: made once, kept (0600) in the data dir across runs."""
    if path.is_file():
        token = path.read_text().strip()
        if token:
            return token
    token = "flt_" + secrets.token_urlsafe(24)  # same shape as `fleet token create`
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(token + "\n")
    path.chmod(0o600)
    return token


def sim_argv(
    vehicles: int,
    speedup: float,
    data_dir: Path,
    extra: Sequence[str],
    tls_port: int,
    ca: Path,
    history_s: float = 0.0,
) -> list[str]:
    """``fleet sim`` in device mode: one MQTT connection, credentials and last will per van,
    each over TLS with the broker's certificate verified, as real trackers connect.

    With ``history_s`` (real time only), the same vans first drive the last ``history_s``
    seconds as fast as they can and then go on in real time: the sim never stamps a fix
    ahead of the clock, so catching up to the present turns it into the live fleet. The
    planner and the replay have that hour of service to show from the first minute.
    """
    if history_s > 0 and speedup == 1.0:
        start = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=history_s)
        pace = ["--speedup", "0", "--start", start.isoformat(timespec="seconds")]
    else:
        pace = ["--speedup", f"{speedup:g}"]
    return [
        "sim",
        "--mode",
        "device",
        "--port",
        str(tls_port),
        "--tls-ca",
        str(ca),
        "--data-dir",
        str(data_dir),
        "--vehicles",
        str(vehicles),
        *pace,
        *extra,
    ]


def _stop_postgres(pg: EmbeddedPostgres, timeout: float = STOP_TIMEOUT_S) -> None:
    """``pg_ctl stop``; if that could not do it, a fast shutdown by signal (SIGINT).

    ``pg_ctl`` runs as the server's user and fails when a parent directory has lost its
    permissions meanwhile (e.g. something chmod-ed it 0700); the postmaster is still
    there and still obeys its signals.
    """
    pg.stop()
    pid = pg.pid()
    if pid is None or not pg.is_running():
        return
    log.warning(
        "pg_ctl could not stop PostgreSQL; sending SIGINT (fast shutdown)", extra={"pid": pid}
    )
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGINT)
    if not wait_gone(pid, timeout):
        raise DemoError(f"PostgreSQL (pid {pid}) did not stop within {timeout:.0f} s")


def masked_dsn(dsn: str) -> str:
    """The DSN with any password replaced by ``***`` (URL or key=value form)."""
    dsn = re.sub(r"(://[^:/@]+:)[^@]*@", r"\1***@", dsn)
    return re.sub(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", r"\1***", dsn)


def _port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


class DemoStack:
    """Start, watch and stop the services of the demo."""

    def __init__(self, opts: DemoOptions) -> None:
        self.opts = opts
        self.data_dir = opts.data_dir.resolve()
        self.logs_dir = self.data_dir / "logs"
        self.pg: EmbeddedPostgres | None = None
        self.broker: MosquittoBroker | None = None
        self.children: list[Service] = []
        self.dsn = ""
        self.token = ""
        self.creds: dict[str, str] = {}
        self.ingest_health_port = 0
        self.tls: ServerCertificate
        self._lock: IO[str] | None = None

    # ---- start
    def start(self, stopping: threading.Event) -> None:
        """Bring every service up, in order; raise DemoError naming the one that failed."""
        self._lock_data_dir()
        self._stop_leftover_broker()
        self._check_ports()
        self._ensure_map_library()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._start_database()
        self._start_broker()
        steps: list[Callable[[], None]] = [self._start_ingest, self._start_api]
        if self.opts.sim:
            steps.append(self._start_sim)
        for step in steps:
            if stopping.is_set():
                return
            step()

    def _lock_data_dir(self) -> None:
        """One demo per data dir: a second one would take the first one's broker and
        database from under it. The lock is the kernel's (flock), so it goes with the
        process however that ends, kill -9 included, and a new run can take over."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        path = self.data_dir / LOCK_FILE
        handle = path.open("a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            handle.close()
            raise DemoError(
                f"another `fleet demo` (pid {holder}) is running with the data dir "
                f"{self.data_dir}: stop it first, or give this one another --data-dir"
            ) from None
        handle.truncate(0)
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        self._lock = handle  # held open (locked) for the life of the process

    def _stop_leftover_broker(self) -> None:
        """A Mosquitto of an earlier demo on this data dir that was killed (SIGKILL) is ours."""
        pid_file = BrokerLayout(self.data_dir).pid_file
        try:
            pid = int(pid_file.read_text().strip())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (FileNotFoundError, ValueError, ProcessLookupError):
            return
        if b"mosquitto" not in cmdline or str(pid_file.parent).encode() not in cmdline:
            return  # the pid was reused by something else
        log.warning("stopping the Mosquitto left running by an earlier demo", extra={"pid": pid})
        os.kill(pid, signal.SIGTERM)
        wait_gone(pid, STOP_TIMEOUT_S)

    @staticmethod
    def _ensure_map_library() -> None:
        """The pages need Leaflet and uPlot in api/static/vendor (`make web-assets`); fetch
        what is missing."""
        if assets_installed() and charts_installed():
            return
        log.info("the page libraries are not installed yet: fetching them (make web-assets)")
        try:
            install_leaflet()
        except WebAssetsError as exc:
            raise DemoError(f"the live map needs its map library: {exc}") from None
        try:
            install_charts()
        except WebAssetsError as exc:
            raise DemoError(f"the planner needs its chart library: {exc}") from None

    def _check_ports(self) -> None:
        o = self.opts
        for what, host, port in (
            ("API (--port)", o.bind, o.port),
            ("MQTT (--mqtt-port)", "127.0.0.1", o.mqtt_port),
            ("MQTT over TLS (--mqtt-tls-port)", o.bind, o.mqtt_tls_port),
        ):
            if not _port_free(host, port):
                raise DemoError(
                    f"port {port} for the {what} is already in use on {host}: stop what "
                    "uses it (another `fleet demo`?) or choose another port"
                )

    def _start_database(self) -> None:
        if self.opts.dsn:
            self.dsn = self.opts.dsn
            log.info("using the PostgreSQL from FLEET_DSN")
        else:
            self.pg = EmbeddedPostgres(self.data_dir / "postgres")
            try:
                self.pg.start()
            except EmbeddedPostgresError as exc:
                raise DemoError(f"embedded PostgreSQL: {exc}") from None
            self.dsn = self.pg.dsn
        try:
            applied = migrate(self.dsn)
        except Exception as exc:
            raise DemoError(f"database migrations failed on {self._safe_dsn()}: {exc}") from exc
        log.info("schema ready", extra={"applied": applied})

    def _start_broker(self) -> None:
        o = self.opts
        names = [] if o.bind in ("127.0.0.1", "0.0.0.0", "localhost") else [o.bind]  # noqa: S104
        if o.bind == "0.0.0.0":  # noqa: S104
            names.append(socket.gethostname())
        self.tls = ensure_local_tls(BrokerLayout(self.data_dir).root / "tls", names)
        tls = TlsListener(o.mqtt_tls_port, self.tls.certfile, self.tls.keyfile, o.bind)
        # the services' plaintext listener never leaves this machine
        self.broker = MosquittoBroker(self.data_dir, port=o.mqtt_port, bind="127.0.0.1", tls=tls)
        try:
            self.broker.start()
        except BrokerError as exc:
            raise DemoError(f"mosquitto: {exc}") from None
        self.creds = self.broker.layout.service_credentials()

    def _service_env(self, mqtt_user: str) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            {
                "FLEET_DSN": self.dsn,
                "FLEET_DATA_DIR": str(self.data_dir),
                "FLEET_MQTT_HOST": "127.0.0.1",
                "FLEET_MQTT_PORT": str(self.opts.mqtt_port),
                "FLEET_MQTT_USERNAME": mqtt_user,
                "FLEET_MQTT_PASSWORD": self.creds[mqtt_user],
                "PYTHONUNBUFFERED": "1",
            }
        )
        return env

    def _spawn(
        self, name: str, argv: list[str], env: dict[str, str], *, may_finish: bool = False
    ) -> Service:
        child = Service(name, argv, env, self.logs_dir / f"{name}.log", may_finish=may_finish)
        self.children.append(child)
        child.start()
        log.info("%s started", name, extra={"pid": child.pid, "log": str(child.log_path)})
        return child

    @staticmethod
    def _wait_ready(child: Service, url: str, what: str) -> None:
        try:
            child.wait_ready(url, READY_TIMEOUT_S, what)
        except ChildError as exc:
            raise DemoError(str(exc)) from None

    def _start_ingest(self) -> None:
        self.ingest_health_port = free_port()
        env = self._service_env("svc-ingest")
        env["FLEET_METRICS_PORT"] = str(self.ingest_health_port)
        env["FLEET_METRICS_BIND"] = "127.0.0.1"
        child = self._spawn("ingest", fleet_argv("ingest", "--no-migrate"), env)
        self._wait_ready(
            child, f"http://127.0.0.1:{self.ingest_health_port}/healthz", "health endpoint"
        )

    def _start_api(self) -> None:
        self.token = demo_token(self.data_dir / TOKEN_FILE)
        env = self._service_env("svc-api")
        env.update(
            {
                "FLEET_API_PORT": str(self.opts.port),
                "FLEET_API_BIND": self.opts.bind,
                "FLEET_API_DEMO_TOKEN": self.token,
                "FLEET_API_DEMO_TOKEN_ROLE": "admin",
            }
        )
        child = self._spawn("api", fleet_argv("api", "--no-migrate"), env)
        self._wait_ready(child, f"{self.local_base_url}/readyz", "readiness endpoint")

    def _start_sim(self) -> None:
        env = self._service_env("svc-gateway")
        o = self.opts
        argv = sim_argv(
            o.vehicles,
            o.speedup,
            self.data_dir,
            o.sim_args,
            o.mqtt_tls_port,
            self.tls.ca_file,
            o.history_s,
        )
        self._spawn("sim", fleet_argv(*argv), env, may_finish=True)

    # ---- run
    @property
    def local_base_url(self) -> str:
        host = "127.0.0.1" if self.opts.bind == "0.0.0.0" else self.opts.bind  # noqa: S104
        return f"http://{host}:{self.opts.port}"

    @property
    def map_url(self) -> str:
        # a fragment never reaches the server (nor its logs); the page trades it for a
        # session cookie and takes it out of the address bar
        return f"{self.local_base_url}/#token={self.token}"

    def _safe_dsn(self) -> str:
        return self.dsn.split("@", 1)[-1] if "@" in self.dsn else self.dsn

    def failed(self) -> str | None:
        """A message naming a service that is no longer running, or None."""
        for child in self.children:
            code = child.exit_code()
            if code == 0 and child.may_finish:
                if not child.finish_reported:
                    child.finish_reported = True
                    log.warning(
                        "%s finished its run (exit 0); the other services keep running and "
                        "its vans will turn stale. Restart `fleet demo` for a new run.",
                        child.name,
                    )
                continue
            exited = child.exited()
            if exited is not None:
                return str(exited)
        if self.broker is not None and self.broker.proc is not None:
            code = self.broker.proc.poll()
            if code is not None:
                log_path = self.broker.layout.root / "mosquitto.log"
                return f"mosquitto exited with code {code}; see {log_path}"
        if self.pg is not None and not self.pg.is_running():
            return f"embedded PostgreSQL is no longer running; see {self.pg.log_path}"
        return None

    def watch(self, stopping: threading.Event) -> str | None:
        """Block until asked to stop (None) or a service dies (its message)."""
        while not stopping.wait(POLL_S):
            problem = self.failed()
            if problem is not None:
                return problem
        return None

    # ---- stop
    def stop(self) -> None:
        """Stop everything that was started, in reverse order; never raises."""
        for child in reversed(self.children):
            try:
                child.stop()
                log.info("%s stopped", child.name, extra={"exit_code": child.exit_code()})
            except Exception:
                log.exception("could not stop %s", child.name)
        if self.broker is not None:
            try:
                self.broker.stop()
                log.info("mosquitto stopped")
            except Exception:
                log.exception("could not stop mosquitto")
        if self.pg is not None:
            try:
                _stop_postgres(self.pg)
                log.info("embedded PostgreSQL stopped")
            except Exception:
                log.exception("could not stop the embedded PostgreSQL")

    def banner(self) -> str:
        o = self.opts
        lines = [
            "Makassar pete-pete fleet demo is running. Ctrl-C stops everything.",
            f"  map    {self.map_url}",
            f"  plan   {self.local_base_url}/planner/#token={self.token}   (planner workspace)",
            f"  token  {self.token}   (admin; saved in {self.data_dir / TOKEN_FILE})",
            f"  api    {self.local_base_url}/docs  (OpenAPI)",
            f"  mqtts  mqtts://{self.local_base_url.split('//')[1].split(':')[0]}:"
            f"{o.mqtt_tls_port}   (devices: fleet device add <van-id> --data-dir "
            f"{self.data_dir}; CA {self.tls.ca_file})",
            f"  mqtt   mqtt://127.0.0.1:{o.mqtt_port}   (services only, this machine)",
            f"  dsn    {masked_dsn(self.dsn)}",
            f"  logs   {self.logs_dir}/",
        ]
        if o.sim and o.speedup == 1.0 and o.history_s > 0:
            lines.append(
                f"  sim    {o.vehicles} vans: the last {o.history_s / 60:.0f} min of service "
                "replayed as fast as it goes (minutes), then live in real time"
            )
        elif o.sim:
            lines.append(f"  sim    {o.vehicles} vans, simulated time x{o.speedup:g}")
        else:
            lines.append("  sim    off (--no-sim): publish your own devices")
        return "\n".join(lines)


def run_demo(opts: DemoOptions) -> int:
    """Run the stack until Ctrl-C/SIGTERM (exit 0) or until a service dies (exit 1)."""
    stopping = threading.Event()

    def _on_signal(signum: int, frame: FrameType | None) -> None:
        if not stopping.is_set():
            log.info("%s received: stopping the demo", signal.Signals(signum).name)
        stopping.set()

    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)
    stack = DemoStack(opts)
    problem: str | None = None
    try:
        stack.start(stopping)
        if not stopping.is_set():
            typer.echo(stack.banner())
            problem = stack.watch(stopping)
    except DemoError as exc:
        problem = str(exc)
    finally:
        if problem is not None:
            log.error("demo failed, stopping all services: %s", problem)
        stack.stop()
    if problem is None:
        typer.echo("fleet demo: stopped; data kept in " + str(stack.data_dir))
        return 0
    return 1
