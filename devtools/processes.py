"""One child process with its own log file: start, wait until ready, stop, log tail.

:class:`ChildProcess` is the one handle for every process the developer tools and the
tests start: the demo's services, ``fleet ingest`` of the benchmarks and the fault rig
(:class:`devtools.ingest_child.IngestChild`), the live benchmark's API, and the tests'
``fleet sim`` and ``fleet demo``. Stopping is always SIGTERM, a wait, then SIGKILL; a
child that exits or never answers its health URL raises an error carrying its name, its
log file and the end of that log.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Final

import httpx

__all__ = [
    "ChildError",
    "ChildExitedError",
    "ChildNotReadyError",
    "ChildProcess",
    "cpu_seconds",
    "fleet_argv",
    "pid_alive",
    "tree_cpu_seconds",
    "wait_gone",
]

log = logging.getLogger(__name__)

STOP_TIMEOUT_S: Final = 15.0
LOG_TAIL_LINES: Final = 25
_PR_SET_PDEATHSIG: Final = 1


def fleet_argv(*args: str) -> list[str]:
    """``python -m fleet.cli ARGS`` with this interpreter."""
    return [sys.executable, "-m", "fleet.cli", *args]


def _stat_fields(pid: int) -> list[str]:
    """``/proc/<pid>/stat`` after the command name: state, ppid, … (``proc(5)``, from
    field 3 on; so ``utime`` is index 11). Raises OSError when there is no such process."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat[stat.rindex(")") + 2 :].split()


def pid_alive(pid: int) -> bool:
    """True while the process runs (a zombie waiting for its reaper counts as gone)."""
    try:
        return _stat_fields(pid)[0] not in ("Z", "X")
    except (FileNotFoundError, ProcessLookupError):
        return False


def wait_gone(pid: int, timeout: float) -> bool:
    """Wait until ``pid`` is gone (see :func:`pid_alive`); False if it still runs."""
    deadline = time.monotonic() + timeout
    while pid_alive(pid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.01)
    return True


def cpu_seconds(pid: int | None) -> float:
    """User + system CPU seconds of a process so far (Linux /proc); 0 when unknown."""
    if pid is None:
        return 0.0
    try:
        fields = _stat_fields(pid)
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def tree_cpu_seconds(pid: int | None) -> float:
    """CPU seconds of a process and all its descendants so far, the exited ones included
    (each process's own user + system time plus that of its reaped children, from
    ``/proc/<pid>/stat``): a PostgreSQL postmaster with every backend it ever forked."""
    if pid is None:
        return 0.0
    total = 0
    todo = [pid]
    while todo:
        current = todo.pop()
        try:
            fields = _stat_fields(current)
            children = Path(f"/proc/{current}/task/{current}/children").read_text().split()
        except OSError:
            continue  # exited meanwhile: its parent's reaped-children time has it
        total += sum(int(f) for f in fields[11:15])  # utime stime cutime cstime
        todo.extend(int(c) for c in children)
    return total / os.sysconf("SC_CLK_TCK")


class ChildError(RuntimeError):
    """A child process failed; ``name``, ``log_path`` and ``tail`` (end of its log) say how."""

    def __init__(self, message: str, *, name: str, log_path: Path, tail: str) -> None:
        super().__init__(f"{message}; last lines of {log_path}:\n{tail}")
        self.name = name
        self.log_path = log_path
        self.tail = tail


class ChildExitedError(ChildError):
    """The child exited (``exit_code``; negative: killed by that signal)."""

    def __init__(self, *, name: str, exit_code: int, log_path: Path, tail: str) -> None:
        how = f"exited with code {exit_code}"
        if exit_code < 0:
            how = f"was killed by signal {-exit_code}"
        super().__init__(f"{name} {how}", name=name, log_path=log_path, tail=tail)
        self.exit_code = exit_code


class ChildNotReadyError(ChildError):
    """The child runs but ``url`` did not answer 2xx within ``timeout`` seconds."""

    def __init__(
        self, *, name: str, what: str, url: str, timeout: float, log_path: Path, tail: str
    ) -> None:
        super().__init__(
            f"{name} did not become ready ({what}: {url}) within {timeout:.0f} s",
            name=name,
            log_path=log_path,
            tail=tail,
        )
        self.url = url
        self.timeout = timeout


def _die_with_parent() -> None:  # runs in the child between fork and exec (Linux)
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def _http_ok(url: str, timeout: float = 2.0) -> bool:
    try:
        return httpx.get(url, timeout=timeout).is_success
    except httpx.HTTPError:
        return False


class ChildProcess:
    """``argv`` as a child process, its output appended to ``log_path``.

    ``stdout_pipe``: stdout is a pipe for the caller to read (``proc.stdout``), only
    stderr goes to the log. ``supervised``: the child gets its own session (a Ctrl-C
    reaches the supervisor only, which stops its children in order) and SIGTERM when the
    supervisor dies (Linux; start such children before any thread runs).
    """

    def __init__(
        self,
        name: str,
        argv: list[str],
        env: dict[str, str],
        log_path: Path,
        *,
        stdout_pipe: bool = False,
        supervised: bool = False,
        stop_timeout: float = STOP_TIMEOUT_S,
    ) -> None:
        self.name = name
        self.argv = argv
        self.env = env
        self.log_path = log_path
        self.stdout_pipe = stdout_pipe
        self.supervised = supervised
        self.stop_timeout = stop_timeout
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start (again); a line in the log marks each start."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as out:
            stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            out.write(f"\n==== {stamp} start\n".encode())
            out.flush()
            self.proc = subprocess.Popen(
                self.argv,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE if self.stdout_pipe else out,
                stderr=out if self.stdout_pipe else subprocess.STDOUT,
                start_new_session=self.supervised,
                preexec_fn=_die_with_parent if self.supervised else None,  # noqa: PLW1509
            )

    @property
    def pid(self) -> int | None:
        return None if self.proc is None else self.proc.pid

    def exit_code(self) -> int | None:
        """None while it runs (or before it started)."""
        return None if self.proc is None else self.proc.poll()

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait(self, timeout: float | None = None) -> int:
        assert self.proc is not None, f"{self.name} was never started"
        return self.proc.wait(timeout)

    def terminate(self) -> None:
        """SIGTERM, without waiting."""
        if self.running():
            assert self.proc is not None
            self.proc.terminate()

    def kill(self) -> None:
        """SIGKILL and reap: a crash, nothing flushed or acknowledged on the way out."""
        if self.running():
            assert self.proc is not None
            self.proc.kill()
            self.proc.wait()

    def stop(self, timeout: float | None = None) -> None:
        """SIGTERM, then SIGKILL if it has not exited within ``timeout`` (``stop_timeout``)."""
        if not self.running():
            return
        timeout = self.stop_timeout if timeout is None else timeout
        self.terminate()
        try:
            self.wait(timeout)
        except subprocess.TimeoutExpired:
            log.warning("%s did not stop in %.0f s: killing it", self.name, timeout)
            self.kill()

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def tail(self, lines: int = LOG_TAIL_LINES) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def exited(self) -> ChildExitedError | None:
        """What happened, once it has exited; None while it runs."""
        code = self.exit_code()
        if code is None:
            return None
        return ChildExitedError(
            name=self.name, exit_code=code, log_path=self.log_path, tail=self.tail()
        )

    def wait_ready(self, url: str, timeout: float, what: str = "health endpoint") -> None:
        """Block until ``url`` answers 2xx.

        Raises :class:`ChildExitedError` when the child exits first, and
        :class:`ChildNotReadyError` when ``timeout`` seconds pass.
        """
        deadline = time.monotonic() + timeout
        while True:
            exited = self.exited()
            if exited is not None:
                raise exited
            if _http_ok(url):
                return
            if time.monotonic() >= deadline:
                raise ChildNotReadyError(
                    name=self.name,
                    what=what,
                    url=url,
                    timeout=timeout,
                    log_path=self.log_path,
                    tail=self.tail(),
                )
            time.sleep(0.05)
