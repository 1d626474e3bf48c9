"""Run ``fleet demo`` as a subprocess for tests: free ports, own data dir, clean teardown."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

from broker.runner import BrokerLayout
from devtools.processes import ChildProcess, fleet_argv
from fleet.storage.embedded import EmbeddedPostgres, free_port


@contextlib.contextmanager
def demo_data_dir() -> Iterator[Path]:
    """A data dir outside pytest's ``/tmp/pytest-of-<user>``.

    The embedded PostgreSQL runs as an unprivileged user that must traverse the data
    dir's parents; every new pytest session (other test runs on this machine) resets
    ``/tmp/pytest-of-<user>`` to 0700, which would make the server's start or stop fail
    at random.  Removed afterwards.
    """
    root = Path(tempfile.mkdtemp(prefix="fleet-demo-test-"))
    try:
        yield root / "demo"
    finally:
        DemoProcess(root / "demo").cleanup()  # nothing may outlive a test
        shutil.rmtree(root, ignore_errors=True)


class DemoProcess:
    """``fleet demo`` with its own data dir and free ports; ``start()`` waits for the banner."""

    def __init__(
        self,
        data_dir: Path,
        *,
        vehicles: int = 20,
        speedup: float = 20,
        sim: bool = True,
        extra: tuple[str, ...] = (),
        env: dict[str, str] | None = None,
    ) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.mqtt_port = free_port()  # plaintext, services (and the tests' own vans): loopback
        self.mqtt_tls_port = free_port()  # the simulated vans connect here, over TLS
        self.vehicles = vehicles
        self.speedup = speedup
        self.sim = sim
        self.extra = extra
        self.extra_env = env or {}
        self.child: ChildProcess | None = None
        self.stdout_lines: list[str] = []
        self.stderr_path = data_dir.parent / f"{data_dir.name}-demo.stderr"
        self._banner = threading.Event()
        self.map_url = ""
        self.token = ""
        self.dsn = ""

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def proc(self) -> subprocess.Popen[bytes] | None:
        return None if self.child is None else self.child.proc

    def argv(self) -> list[str]:
        args = fleet_argv(
            "demo",
            "--data-dir",
            str(self.data_dir),
            "--port",
            str(self.port),
            "--mqtt-port",
            str(self.mqtt_port),
            "--mqtt-tls-port",
            str(self.mqtt_tls_port),
            "--vehicles",
            str(self.vehicles),
            "--speedup",
            str(self.speedup),
            *self.extra,
        )
        if not self.sim:
            args.append("--no-sim")
        return args

    def start(self, timeout: float = 120) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("FLEET_")}
        env.update(self.extra_env)
        self.stderr_path.unlink(missing_ok=True)  # this run's stderr only
        self.child = ChildProcess(
            "fleet demo", self.argv(), env, self.stderr_path, stdout_pipe=True
        )
        self.child.start()
        threading.Thread(target=self._read_stdout, daemon=True).start()
        deadline = time.monotonic() + timeout
        while not self._banner.wait(0.2):
            code = self.child.exit_code()
            if code is not None:
                raise AssertionError(f"fleet demo exited with {code}:\n{self.stderr()}")
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"fleet demo printed no banner in {timeout} s:\n{self.stderr()}"
                )

    def _read_stdout(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for raw in self.proc.stdout:
            line = raw.decode(errors="replace")
            self.stdout_lines.append(line.rstrip("\n"))
            words = line.split()
            if len(words) >= 2 and words[0] in ("map", "token"):
                setattr(self, "map_url" if words[0] == "map" else words[0], words[1])
            if words[:1] == ["dsn"]:  # a key=value DSN has spaces: the rest of the line
                self.dsn = line.strip()[len("dsn") :].strip()
            if words[:1] == ["logs"]:  # last line of the banner
                self._banner.set()

    def stderr(self) -> str:
        try:
            return self.stderr_path.read_text(errors="replace")[-6000:]
        except FileNotFoundError:
            return ""

    def api(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.base_url, headers={"Authorization": f"Bearer {self.token}"}, timeout=10
        )

    def child_pid(self, name: str) -> int:
        """The pid of a supervised service, from the demo's ``<name> started pid=`` log line."""
        for line in self.stderr().splitlines():
            if f"devtools.demo: {name} started" in line:
                return int(line.split("pid=")[1].split()[0])
        raise AssertionError(f"no `{name} started` line in the demo's log:\n{self.stderr()}")

    def terminate(self, timeout: float = 60) -> int:
        """SIGTERM (what Ctrl-C does) and wait; returns the exit code."""
        assert self.child is not None
        self.child.terminate()
        return self.child.wait(timeout)

    def cleanup(self) -> None:
        """Whatever happened, leave no broker, database or service running."""
        if self.child is not None:
            self.child.stop(30)
        pid_file = BrokerLayout(self.data_dir).pid_file
        with contextlib.suppress(FileNotFoundError, ValueError, ProcessLookupError):
            os.kill(int(pid_file.read_text().strip()), signal.SIGKILL)
        pg = EmbeddedPostgres(self.data_dir / "postgres")
        pid = pg.pid()
        if pid is not None and pg.is_running():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGQUIT)  # immediate shutdown, even if pg_ctl cannot


def broker_running(data_dir: Path) -> bool:
    pid_file = BrokerLayout(data_dir).pid_file
    try:
        os.kill(int(pid_file.read_text().strip()), 0)
    except (FileNotFoundError, ValueError, ProcessLookupError):
        return False
    return True


def wait_until(cond: object, timeout: float, what: str, interval: float = 0.1) -> None:
    assert callable(cond)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")
