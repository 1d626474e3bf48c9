"""The device agent: NMEA in, durable queue in the middle, MQTT out.

The calling thread reads the NMEA source, turns sentences into fixes
(:class:`~firmware_stub.gps_fixes.FixAssembler`), keeps one per reporting interval
(:class:`~firmware_stub.gps_fixes.IntervalSampler`) and appends it to the on-disk queue;
the :class:`~firmware_stub.uploader.Uploader` thread empties the queue towards the
broker. The two only meet in the queue file, so a dead link never slows the GPS side and
a crash of either loses nothing that was queued.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from firmware_stub.fix_queue import FixQueue
from firmware_stub.gps_fixes import FixAssembler, GpsFix, IntervalSampler
from firmware_stub.nmea import NmeaError, parse_sentence
from firmware_stub.sources import ReplayPacer
from firmware_stub.uploader import UplinkConfig, Uploader
from fleet.contract import Command

__all__ = ["MAX_INTERVAL_S", "MIN_INTERVAL_S", "AgentConfig", "DeviceAgent", "RunSummary"]

log = logging.getLogger(__name__)

MIN_INTERVAL_S: Final = 1.0  # receivers report at 1 Hz; a shorter interval changes nothing
MAX_INTERVAL_S: Final = 3600.0
UERE_M: Final = 5.0  # user equivalent range error of a consumer receiver: accuracy ≈ HDOP × UERE
INTERVAL_KEY: Final = "interval_s"


@dataclass(frozen=True, slots=True)
class AgentConfig:
    uplink: UplinkConfig
    queue_path: Path
    interval_s: float = 5.0
    max_hdop: float | None = 5.0
    route: str | None = None
    queue_max_fixes: int = 1_000_000
    restamp_to_now: bool = False  # replaying an old log: shift GPS time so it starts now
    drain_at_end: bool = True  # when the source ends, wait until the queue is uploaded
    drain_timeout_s: float | None = None


@dataclass(frozen=True, slots=True)
class RunSummary:
    fixes_queued: int
    queue_depth: int
    drained: bool
    sentences: int
    rejected_lines: dict[str, int]
    discarded_epochs: dict[str, int]


class DeviceAgent:
    """One tracker: run :meth:`run` with a line source; :meth:`stop` from anywhere."""

    def __init__(
        self,
        config: AgentConfig,
        *,
        pacer: ReplayPacer | None = None,
        wall_clock_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000,
    ) -> None:
        self.config = config
        self._stop = threading.Event()
        self.pacer = pacer
        self._wall_clock_ms = wall_clock_ms
        self._queue = FixQueue(config.queue_path, config.queue_max_fixes)
        stored = self._queue.get_setting(INTERVAL_KEY)
        self.sampler = IntervalSampler(float(stored) if stored else config.interval_s)
        if stored:
            log.info("reporting interval from the last command", extra={"interval_s": stored})
        self.assembler = FixAssembler(config.max_hdop)
        self.rejected_lines: collections.Counter[str] = collections.Counter()
        self.sentences = 0
        self.fixes_queued = 0
        self._shift_ms: int | None = None
        self._last_ts: int | None = None
        self.uploader = Uploader(config.uplink, self._queue, self.apply_command)

    # -- commands (called from the uploader thread) -----------------------------------

    def apply_command(self, command: Command) -> str | None:
        """Carry out a command; return why it was refused, or None."""
        if command.cmd != "set_interval":
            return f"unknown command {command.cmd!r} (known: set_interval)"
        value = command.interval_s
        if value is None or not MIN_INTERVAL_S <= value <= MAX_INTERVAL_S:
            return f"interval_s must be in [{MIN_INTERVAL_S}, {MAX_INTERVAL_S}], got {value}"
        self.sampler.interval_s = value
        self._queue.set_setting(INTERVAL_KEY, repr(value))
        log.info("reporting interval changed", extra={"interval_s": value})
        return None

    # -- the GPS side --------------------------------------------------------------------

    def stop(self) -> None:
        self._stop.set()

    def sleep(self, seconds: float) -> None:
        """Wait, but return at once on :meth:`stop` (the replay pacer sleeps with this)."""
        self._stop.wait(seconds)

    def queue_depth(self) -> int:
        return self._queue.depth()

    def run(self, lines: Iterable[str]) -> RunSummary:
        """Read ``lines`` until they end (or :meth:`stop`), then drain the queue."""
        self.uploader.start()
        drained = False
        try:
            for line in lines:
                if self._stop.is_set():
                    break
                self.handle_line(line)
            for fix in self.assembler.flush():
                self._take(fix)
            if self.config.drain_at_end and not self._stop.is_set():
                drained = self._drain()
        finally:
            self.uploader.stop()
            self.uploader.join(timeout=10)
            depth = self._queue.depth()
            self._queue.close()
        summary = RunSummary(
            fixes_queued=self.fixes_queued,
            queue_depth=depth,
            drained=drained,
            sentences=self.sentences,
            rejected_lines=dict(self.rejected_lines),
            discarded_epochs={str(k): v for k, v in self.assembler.discarded.items()},
        )
        log.info("agent stopped", extra={"summary": summary})
        return summary

    def handle_line(self, line: str) -> None:
        """One line of NMEA: parse, assemble, sample, queue."""
        if not line.strip():
            return
        try:
            sentence = parse_sentence(line)
        except NmeaError as exc:
            self.rejected_lines[exc.problem.value] += 1
            log.debug("rejected NMEA line: %s", exc)
            return
        if sentence is None:
            return
        self.sentences += 1
        for fix in self.assembler.feed(sentence):
            self._take(fix)

    def _take(self, fix: GpsFix) -> None:
        ts = self._timestamp(fix.ts)
        if self.pacer is not None:
            self.pacer.pace(ts)
        if not self.sampler.admit(ts):
            return
        accuracy = None if fix.hdop is None else round(fix.hdop * UERE_M, 1)
        self._queue.put(
            ts=ts,
            lat=round(fix.lat, 7),
            lon=round(fix.lon, 7),
            speed=None if fix.speed is None else round(fix.speed, 2),
            heading=None if fix.heading is None else round(fix.heading, 1),
            accuracy=accuracy,
            route=self.config.route,
        )
        self.fixes_queued += 1

    def _timestamp(self, gps_ts: int) -> int:
        """GPS time, or (``restamp_to_now``) GPS time shifted so a replay looks live."""
        if not self.config.restamp_to_now:
            return gps_ts
        if self._shift_ms is None:
            self._shift_ms = self._wall_clock_ms() - gps_ts
        ts = gps_ts + self._shift_ms
        if self._last_ts is not None and ts <= self._last_ts:  # a looped log started over
            self._shift_ms += self._last_ts + 1000 - ts
            ts = gps_ts + self._shift_ms
        self._last_ts = ts
        return ts

    def _drain(self) -> bool:
        """Wait until every queued fix is settled (or stop / the drain timeout).

        Settled: a storage receipt covers it (receipts off: its PUBACK arrived).
        """
        timeout = self.config.drain_timeout_s
        deadline = None if timeout is None else time.monotonic() + timeout
        depth = self._queue.depth()
        if depth:
            log.info("source ended; uploading the queue", extra={"queued": depth})
        while not self._stop.is_set():
            if self._queue.depth() == 0 and self.uploader.inflight_batches == 0:
                return True
            if deadline is not None and time.monotonic() > deadline:
                log.warning(
                    "drain timeout: fixes stay queued for the next run",
                    extra={"queued": self._queue.depth()},
                )
                return False
            self._stop.wait(0.05)
        return False
