"""The vans' GPS trackers: what they transmit of the motion, and when.

* A fix every ``report_interval_s`` (per-van phase), GPS noise with a 2-D RMS of
  ``noise_m``, occasional bad fixes hundreds of metres off.
* With ``dropout``: coverage losses of minutes (fixes are buffered and uploaded as one
  ``{"fixes": [...]}`` batch when coverage returns) and devices switched off for a while
  (their last will says offline).

What they send during one step of the model is a :class:`Tick`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from fleet.contract import MAX_BATCH_FIXES, Fix
from fleet.geometry import EARTH_RADIUS_M
from tracker_sim.motion import FleetMotion, Movement
from tracker_sim.parameters import SimConfig

__all__ = ["DeviceMessage", "StatusChange", "Tick", "Trackers"]

IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True, slots=True)
class DeviceMessage:
    """One MQTT telemetry message: a single fix, or (``batch``) a backlog upload."""

    vehicle_id: str
    fixes: list[Fix]
    batch: bool = False


@dataclass(frozen=True, slots=True)
class StatusChange:
    """A device switched off (``online=False``: its last will fires) or back on."""

    vehicle_id: str
    online: bool
    ts_ms: int


@dataclass(slots=True)
class Tick:
    """What the trackers sent during one step of the model."""

    t_ms: int  # simulated clock at the end of the step
    messages: list[DeviceMessage] = field(default_factory=list)
    status: list[StatusChange] = field(default_factory=list)

    @property
    def fix_count(self) -> int:
        return sum(len(m.fixes) for m in self.messages)


class Trackers:
    """One tracker per van (same index as in :class:`~tracker_sim.motion.FleetMotion`)."""

    def __init__(
        self,
        vehicle_ids: Sequence[str],
        route_codes: Sequence[str],
        *,
        start_ms: int,
        report_interval_ms: int,
        noise_m: float,
        dropout: bool,
        cfg: SimConfig,
        rng: np.random.Generator,
    ) -> None:
        self.vehicle_ids = list(vehicle_ids)
        self.route_codes = list(route_codes)
        self.report_interval_ms = report_interval_ms
        self.noise_m = noise_m
        self.dropout = dropout
        self.cfg = cfg
        self.rng = rng
        n = len(self.vehicle_ids)
        self.n = n
        self.next_report_ms = start_ms + rng.integers(1, report_interval_ms + 1, n, dtype=np.int64)
        self.seq = np.zeros(n, dtype=np.int64)
        self.online = np.ones(n, dtype=bool)
        self.offline_until_ms = np.zeros(n, dtype=np.int64)
        self.covered = np.ones(n, dtype=bool)
        self.coverage_until_ms = np.zeros(n, dtype=np.int64)
        self.backlog: list[list[Fix]] = [[] for _ in range(n)]
        self.has_backlog = np.zeros(n, dtype=bool)

    def rephase(self, t_ms: int) -> None:
        """Every tracker's next fix at a random moment of the interval after ``t_ms``."""
        phase = self.rng.integers(1, self.report_interval_ms + 1, self.n, dtype=np.int64)
        self.next_report_ms = t_ms + phase

    def transmit(self, movement: Movement, motion: FleetMotion, tick: Tick) -> None:
        """Add to ``tick`` what the trackers send during ``movement`` (after it, at t1)."""
        cfg, rng, n = self.cfg, self.rng, self.n
        t1 = movement.t1
        dt_h = (t1 - movement.t0) / 3_600_000.0

        self._reports(movement, motion, tick)
        # Then (at t1) devices switch off / on (last will) and lose / regain coverage.
        if self.dropout:
            back = ~self.online & (self.offline_until_ms <= t1)
            off = self.online & (rng.random(n) < cfg.offline_per_h * dt_h)
            self.online[back] = True
            for i in np.flatnonzero(back).tolist():
                tick.status.append(StatusChange(self.vehicle_ids[i], True, t1))
            if off.any():
                k = int(off.sum())
                self.online[off] = False
                self.offline_until_ms[off] = t1 + (
                    rng.uniform(cfg.offline_min_s, cfg.offline_max_s, k) * 1000
                ).astype(np.int64)
                for i in np.flatnonzero(off).tolist():
                    tick.status.append(StatusChange(self.vehicle_ids[i], False, t1))
            lose = self.covered & (rng.random(n) < cfg.coverage_loss_per_h * dt_h)
            if lose.any():
                k = int(lose.sum())
                self.covered[lose] = False
                self.coverage_until_ms[lose] = t1 + (
                    rng.uniform(cfg.coverage_loss_min_s, cfg.coverage_loss_max_s, k) * 1000
                ).astype(np.int64)
            self.covered[~self.covered & (self.coverage_until_ms <= t1)] = True

        # Backlog uploads when coverage returns (and the device is on), oldest first.
        upload = self.has_backlog & self.covered & self.online
        for i in np.flatnonzero(upload).tolist():
            pending = self.backlog[i]
            self.backlog[i] = []
            for b in range(0, len(pending), MAX_BATCH_FIXES):
                tick.messages.append(
                    DeviceMessage(self.vehicle_ids[i], pending[b : b + MAX_BATCH_FIXES], True)
                )
        self.has_backlog[upload] = False

    def _reports(self, movement: Movement, motion: FleetMotion, tick: Tick) -> None:
        """Fixes due in (t0, t1] of devices that are on: sent live or kept in the backlog."""
        cfg, rng = self.cfg, self.rng
        t0, t1 = movement.t0, movement.t1
        due = self.next_report_ms <= t1
        if not due.any():
            return
        idx = np.flatnonzero(due)
        ts = self.next_report_ms[idx].copy()
        self.next_report_ms[idx] += self.report_interval_ms
        on = self.online[idx]
        idx, ts = idx[on], ts[on]
        if idx.size == 0:
            return
        # True position at the report time: linear motion within the sub-step, in the
        # direction driven (a van that reached a terminal at t1 has not turned yet).
        direction = movement.direction[idx]
        veh_len = motion.veh_len[idx]
        dt = max((t1 - t0) / 1000.0, 1e-9)
        frac = np.clip((ts - t0) / 1000.0 / dt, 0.0, 1.0)
        s_end = movement.s1[idx]
        p_end = np.where(direction == 0, s_end, veh_len - s_end)
        p = movement.p0[idx] + (p_end - movement.p0[idx]) * frac
        s = np.where(direction == 0, p, veh_len - p)
        lat = np.empty(idx.size)
        lon = np.empty(idx.size)
        bearing = np.empty(idx.size)
        r_of = motion.route_of[idx]
        for r in np.unique(r_of).tolist():
            m = r_of == r
            route = motion.routes[r]
            lat[m], lon[m] = route.position_at(s[m])
            bearing[m] = route.bearing_at(s[m])
        heading = np.where(direction == 0, bearing, (bearing + 180.0) % 360.0)

        # GPS error: 2-D RMS noise_m, plus rare bad fixes far off.
        k = idx.size
        east = rng.normal(0.0, self.noise_m / math.sqrt(2), k)
        north = rng.normal(0.0, self.noise_m / math.sqrt(2), k)
        accuracy = np.clip(rng.normal(self.noise_m, 1.0, k), 2.0, None)
        bad = rng.random(k) < cfg.bad_fix_prob
        if bad.any():
            nb = int(bad.sum())
            dist = rng.uniform(cfg.bad_fix_min_m, cfg.bad_fix_max_m, nb)
            ang = rng.uniform(0.0, 2 * math.pi, nb)
            east[bad] += dist * np.sin(ang)
            north[bad] += dist * np.cos(ang)
            accuracy[bad] = rng.uniform(10.0, 80.0, nb)  # receivers under-report bad fixes
        lat = lat + np.degrees(north / EARTH_RADIUS_M)
        lon = lon + np.degrees(east / (EARTH_RADIUS_M * np.cos(np.radians(lat))))
        speed = np.clip(motion.v[idx] + rng.normal(0.0, 0.3, k), 0.0, None)
        self.seq[idx] += 1

        codes = self.route_codes
        covered = self.covered[idx]
        for i, t, la, lo, sp, hd, ac, r, sq, c in zip(
            idx.tolist(),
            ts.tolist(),
            np.round(lat, 6).tolist(),
            np.round(lon, 6).tolist(),
            np.round(speed, 1).tolist(),
            np.round(heading, 1).tolist(),
            np.round(accuracy, 1).tolist(),
            r_of.tolist(),
            self.seq[idx].tolist(),
            covered.tolist(),
            strict=True,
        ):
            fix = Fix(
                ts=t, lat=la, lon=lo, speed=sp, heading=hd, accuracy=ac, route=codes[r], seq=sq
            )
            if c:
                tick.messages.append(DeviceMessage(self.vehicle_ids[i], [fix]))
            else:
                self.backlog[i].append(fix)
                self.has_backlog[i] = True
