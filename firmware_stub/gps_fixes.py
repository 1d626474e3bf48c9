"""From NMEA sentences to fixes: pair GGA and RMC per epoch, take the clock from GPS,
drop poor fixes, and sample the stream at the reporting interval.

A receiver reports once per epoch (usually 1 Hz) several sentences stamped with the same
UTC time. :class:`FixAssembler` pairs that epoch's ``GGA`` (quality, HDOP) with its
``RMC`` (validity, speed, course, **date**) and emits one :class:`GpsFix` whose ``ts``
is GPS time, never the system clock. An epoch with only one of the two is still used
when it can be: an RMC alone has no HDOP (it is not filtered on it), a GGA alone
borrows the date of the last valid RMC (rolled over at UTC midnight).
"""

from __future__ import annotations

import collections
import datetime as dt
import enum
import threading
from dataclasses import dataclass
from typing import Final

from firmware_stub.nmea import KNOTS_TO_MS, Gga, Rmc

__all__ = ["Discard", "FixAssembler", "GpsFix", "IntervalSampler"]

# GGA quality indicators that are real position fixes: GPS, DGPS, PPS, RTK fixed/float.
# 0 is no fix; 6 (dead reckoning), 7 (manual input) and 8 (simulator) are not measurements.
GOOD_QUALITY: Final = frozenset({1, 2, 3, 4, 5})
# RMC mode indicators (NMEA 2.3+) that are not measurements: estimated, not valid,
# manual, simulator.
BAD_MODES: Final = frozenset({"E", "N", "M", "S"})
DAY_MS: Final = 86_400_000
EPOCH: Final = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


class Discard(enum.StrEnum):
    """Why an epoch did not become a fix; each is its own counter."""

    NO_FIX = "no_fix"
    HIGH_HDOP = "high_hdop"
    NO_DATE = "no_date"


@dataclass(frozen=True, slots=True)
class GpsFix:
    """One position fix with GPS time (UTC epoch milliseconds)."""

    ts: int
    lat: float
    lon: float
    speed: float | None  # m/s
    heading: float | None  # degrees from north
    hdop: float | None
    satellites: int | None


class FixAssembler:
    """Pairs GGA and RMC of each epoch into fixes and counts what it discards."""

    def __init__(self, max_hdop: float | None = 5.0) -> None:
        self.max_hdop = max_hdop
        self.discarded: collections.Counter[Discard] = collections.Counter()
        self._epoch_ms: int | None = None
        self._gga: Gga | None = None
        self._rmc: Rmc | None = None
        self._done = False
        self._last_date: dt.date | None = None
        self._last_date_time_ms = 0

    def feed(self, sentence: Gga | Rmc) -> list[GpsFix]:
        """Take one sentence; return the fixes it completes (zero or one, rarely two)."""
        out: list[GpsFix] = []
        if sentence.time_ms is None:  # a receiver without time has no fix either
            self._count(Discard.NO_FIX)
            return out
        if sentence.time_ms != self._epoch_ms:
            out.extend(self.flush())
            self._epoch_ms = sentence.time_ms
        if isinstance(sentence, Gga):
            self._gga = sentence
        else:
            self._rmc = sentence
            if sentence.valid and sentence.date is not None:
                self._last_date, self._last_date_time_ms = sentence.date, sentence.time_ms
        if self._gga is not None and self._rmc is not None and not self._done:
            self._done = True
            out.extend(self._build())
        return out

    def flush(self) -> list[GpsFix]:
        """Close the current epoch (end of stream, or a new epoch began)."""
        out = [] if self._done else self._build()
        self._epoch_ms, self._gga, self._rmc, self._done = None, None, None, False
        return out

    def _count(self, reason: Discard) -> list[GpsFix]:
        self.discarded[reason] += 1
        return []

    def _build(self) -> list[GpsFix]:
        gga, rmc, time_ms = self._gga, self._rmc, self._epoch_ms
        if time_ms is None or (gga is None and rmc is None):
            return []
        if rmc is not None and (not rmc.valid or rmc.mode in BAD_MODES):
            return self._count(Discard.NO_FIX)
        if gga is not None and gga.quality not in GOOD_QUALITY:
            return self._count(Discard.NO_FIX)
        lat, lon = (gga.lat, gga.lon) if gga is not None else (None, None)
        if (lat is None or lon is None) and rmc is not None:
            lat, lon = rmc.lat, rmc.lon
        if lat is None or lon is None:
            return self._count(Discard.NO_FIX)
        hdop = gga.hdop if gga is not None else None
        if self.max_hdop is not None and hdop is not None and hdop > self.max_hdop:
            return self._count(Discard.HIGH_HDOP)
        date = self._date_for(time_ms)
        if date is None:
            return self._count(Discard.NO_DATE)
        midnight = dt.datetime(date.year, date.month, date.day, tzinfo=dt.UTC)
        ts = (midnight - EPOCH) // dt.timedelta(milliseconds=1) + time_ms
        speed = heading = None
        if rmc is not None:
            speed = None if rmc.speed_knots is None else rmc.speed_knots * KNOTS_TO_MS
            heading = None if rmc.course_deg is None else rmc.course_deg % 360.0
        satellites = gga.satellites if gga is not None else None
        return [GpsFix(ts, lat, lon, speed, heading, hdop, satellites)]

    def _date_for(self, time_ms: int) -> dt.date | None:
        """The UTC date of an epoch: its own RMC's, else the last one's (past midnight: +1)."""
        if self._rmc is not None and self._rmc.valid and self._rmc.date is not None:
            return self._rmc.date
        if self._last_date is None:
            return None
        if time_ms < self._last_date_time_ms:  # the clock wrapped at UTC midnight
            self._last_date += dt.timedelta(days=1)
            self._last_date_time_ms = time_ms
        return self._last_date


class IntervalSampler:
    """Keeps one fix per reporting interval, measured in GPS time.

    The interval may be changed from another thread (a ``set_interval`` command); the next
    fix is due ``interval`` after the last one kept.
    """

    def __init__(self, interval_s: float) -> None:
        self._lock = threading.Lock()
        self._interval_ms = self._to_ms(interval_s)
        self._last_ts: int | None = None

    @staticmethod
    def _to_ms(interval_s: float) -> int:
        if not interval_s > 0:
            raise ValueError(f"reporting interval must be positive, got {interval_s}")
        return round(interval_s * 1000)

    @property
    def interval_s(self) -> float:
        with self._lock:
            return self._interval_ms / 1000

    @interval_s.setter
    def interval_s(self, value: float) -> None:
        ms = self._to_ms(value)
        with self._lock:
            self._interval_ms = ms

    def admit(self, ts: int) -> bool:
        """True when a fix at GPS time ``ts`` is due (time going backwards restarts)."""
        with self._lock:
            last = self._last_ts
            if last is None or ts < last or ts - last >= self._interval_ms:
                self._last_ts = ts
                return True
            return False
