"""Where NMEA comes from: a log file (replayed), a pipe or stdin, or a serial port.

:func:`open_source` turns the ``--nmea`` argument into a :class:`LineSource`:

* ``-``: standard input (``gpspipe -r | fleet device run --nmea -``);
* a FIFO: read as it is written;
* a character device (``/dev/ttyUSB0``, ``/dev/serial0``): through pyserial at the
  given baud rate, or, with ``plain_tty``, as a plain file (configure it first with
  ``stty -F /dev/ttyUSB0 9600 raw``);
* a regular file: a recorded log, ``replay=True`` (paced by :class:`ReplayPacer` in the
  agent, optionally looped).

Lines are decoded as ASCII with replacement: line noise becomes a failed checksum,
never an exception.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import stat
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Protocol

__all__ = ["LineSource", "ReplayPacer", "SourceError", "open_source"]

log = logging.getLogger(__name__)


class SourceError(RuntimeError):
    """The NMEA source cannot be opened; the message says what to do."""


class _Stream(Protocol):
    def readline(self) -> bytes: ...
    def close(self) -> None: ...


class LineSource:
    """An iterator of text lines plus what the agent needs to know about its origin."""

    def __init__(
        self,
        name: str,
        opener: Callable[[], _Stream],
        *,
        replay: bool = False,
        loop: bool = False,
    ) -> None:
        self.name = name
        self.replay = replay  # a recording: pace by GPS time, not by arrival
        self._opener = opener
        self._loop = loop
        self._closed = threading.Event()
        self._stream = opener()  # opened now, so that open_source reports errors

    def __iter__(self) -> Iterator[str]:
        while True:
            while not self._closed.is_set():
                raw = self._stream.readline()
                if not raw:
                    break
                yield raw.decode("ascii", errors="replace")
            if not self._loop or self._closed.is_set():
                return
            log.info("replaying the log again", extra={"source": self.name})
            self._stream.close()
            self._stream = self._opener()

    def close(self) -> None:
        self._closed.set()
        with contextlib.suppress(OSError):
            self._stream.close()


def _open_file(path: Path) -> Callable[[], _Stream]:
    def opener() -> _Stream:
        try:
            return path.open("rb")
        except OSError as exc:
            raise SourceError(f"cannot open NMEA source {path}: {exc}") from None

    return opener


def open_source(
    spec: str, *, baud: int = 9600, plain_tty: bool = False, loop: bool = False
) -> LineSource:
    """Open the ``--nmea`` argument (see the module doc)."""
    if spec == "-":
        return LineSource("stdin", lambda: sys.stdin.buffer)
    path = Path(spec)
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise SourceError(f"NMEA source {spec} does not exist") from None
    except OSError as exc:
        raise SourceError(f"cannot open NMEA source {spec}: {exc}") from None
    if stat.S_ISCHR(mode) and not plain_tty:
        return _open_serial(spec, baud)
    if stat.S_ISREG(mode):
        return LineSource(spec, _open_file(path), replay=True, loop=loop)
    return LineSource(spec, _open_file(path))  # FIFO, or a tty read as a plain file


def _open_serial(port: str, baud: int) -> LineSource:
    try:
        serial = importlib.import_module("serial")
    except ModuleNotFoundError:
        raise SourceError(
            f"{port} is a serial port and reading it needs pyserial: "
            "`.venv/bin/pip install pyserial` (or configure the port with "
            f"`stty -F {port} {baud} raw -echo` and pass --plain-tty to read it as a file)"
        ) from None

    def opener() -> _Stream:
        try:
            device: _Stream = serial.Serial(port, baudrate=baud, timeout=None)
        except (OSError, ValueError) as exc:
            raise SourceError(f"cannot open serial port {port} at {baud} baud: {exc}") from None
        return device

    return LineSource(f"{port}@{baud}", opener)


class ReplayPacer:
    """Replays a recording in (scaled) real time: GPS time drives the wall clock.

    ``speed`` 1.0 is real time, 10 is ten times faster, 0 is as fast as possible.
    ``monotonic`` and ``sleep`` are injectable so tests never wait for real.
    """

    def __init__(
        self,
        speed: float,
        *,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], object] = time.sleep,
    ) -> None:
        if speed < 0:
            raise ValueError("replay speed must be >= 0")
        self.speed = speed
        self._monotonic = monotonic
        self._sleep = sleep
        self._anchor: tuple[int, float] | None = None
        self._last_ts: int | None = None

    def pace(self, ts: int) -> None:
        """Wait until the fix at GPS time ``ts`` is due."""
        if self.speed == 0:
            return
        if self._anchor is None or self._last_ts is None or ts < self._last_ts:
            self._anchor = (ts, self._monotonic())  # first fix, or the log started over
        self._last_ts = ts
        gps0, wall0 = self._anchor
        delay = wall0 + (ts - gps0) / 1000 / self.speed - self._monotonic()
        if delay > 0:
            self._sleep(delay)
