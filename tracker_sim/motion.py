"""The noise-free motion of every van of every route, in numpy arrays.

:meth:`FleetMotion.advance` moves all vans through one sub-step (parameters in
:class:`~tracker_sim.parameters.SimConfig`):

* **Speed** by time of day (:mod:`tracker_sim.traffic`): a free-flow speed, slower
  everywhere at peak hours and much slower inside congested zones at peaks; each driver
  has a personal speed factor and a slowly wandering mood; acceleration is limited,
  braking is not.
* **Dwell stops anywhere**: a van stops to pick up / drop off with a rate per metre that
  grows with the distance to the van ahead on the same route and direction (more
  passengers are waiting behind a long gap), so a van close behind another rarely
  stops and catches up.  A stopped van pulls over and is passed.
* **Queueing**: a moving van cannot overtake the moving van ahead on the same route and
  direction; it keeps at least ``min_gap_m`` behind it.  Together with the demand
  rule above, pairs of vans form and travel together: bunching emerges.
* **Turnarounds**: at either terminal a van lays over (waits for passengers) and then
  drives back (direction 0 = increasing distance along the polyline, 1 = decreasing).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

from fleet.routes import Route
from tracker_sim.parameters import SimConfig
from tracker_sim.traffic import CongestionGrid, hour_local, peak_intensity

__all__ = ["DWELL", "LAYOVER", "MOVING", "FleetMotion", "Movement"]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

# Van states
MOVING: Final = 0
DWELL: Final = 1
LAYOVER: Final = 2


@dataclass(frozen=True, slots=True)
class Movement:
    """One sub-step of motion, for the trackers and the ground truth."""

    t0: int  # simulated clock (ms) at the start of the sub-step ...
    t1: int  # ... and at its end
    s0: FloatArray  # distance along the route at t0 ...
    s1: FloatArray  # ... and at t1
    p0: FloatArray  # progress in the direction driven, at t0
    direction: npt.NDArray[np.int8]  # direction driven (before a turnaround at t1)
    moving: BoolArray  # vans that drove during the sub-step

    @property
    def dt_s(self) -> float:
        return (self.t1 - self.t0) / 1000.0


class FleetMotion:
    """Positions, speeds and states of all vans; ``advance`` moves them all at once.

    Van ``i`` drives route ``routes[route_of[i]]``; ``s`` is its distance along the
    polyline, ``direction`` 0 (increasing ``s``) or 1, ``state`` :data:`MOVING`,
    :data:`DWELL` or :data:`LAYOVER` (``hold_s`` left of it).
    """

    def __init__(
        self,
        routes: Sequence[Route],
        counts: Sequence[int],
        cfg: SimConfig,
        rng: np.random.Generator,
    ) -> None:
        self.routes = list(routes)
        self.cfg = cfg
        self.rng = rng
        self.route_of = np.repeat(np.arange(len(self.routes)), counts).astype(np.int64)
        n = int(sum(counts))
        self.n = n
        length = np.array([r.length_m for r in self.routes])
        self.veh_len = length[self.route_of]
        self.nominal_gap = np.array(
            [2 * r.length_m / max(c, 1) for r, c in zip(self.routes, counts, strict=True)]
        )[self.route_of]
        self._congestion = CongestionGrid(self.routes)
        # Queueing sorts all vans on one axis: group g's progress shifted by g * this.
        self._group_stride = float(length.max()) + 10_000.0

        # Initial state: vans spread evenly around each route's out-and-back loop.
        u = np.empty(n)
        for i, count in enumerate(counts):
            idx = np.flatnonzero(self.route_of == i)
            loop = 2 * self.routes[i].length_m
            u[idx] = (np.arange(count) + rng.uniform(0.0, 0.6, count)) * loop / max(count, 1)
        self.direction = (u >= self.veh_len).astype(np.int8)
        self.s = np.where(self.direction == 0, u, 2 * self.veh_len - u)
        self.s = np.clip(self.s, 0.0, self.veh_len)
        self.v = np.zeros(n)
        self.state = np.full(n, MOVING, dtype=np.int8)
        self.hold_s = np.zeros(n)
        self.driver = np.clip(rng.normal(1.0, cfg.driver_speed_sd, n), 0.8, 1.2)
        self.mood = np.ones(n)
        self.last_departure_ms = np.full(2 * len(self.routes), -(2**62), dtype=np.int64)

    def progress(self) -> FloatArray:
        """Distance travelled in the current direction since the last terminal."""
        return np.where(self.direction == 0, self.s, self.veh_len - self.s)

    def advance(self, t0: int, t1: int) -> Movement:
        """Move every van from ``t0`` to ``t1`` (ms, at most ``max_substep_s`` apart)."""
        cfg, rng, n = self.cfg, self.rng, self.n
        dt = (t1 - t0) / 1000.0
        hour = hour_local(t0)
        peak = float(peak_intensity(hour))
        night = hour >= 22.0 or hour < 5.0
        free = cfg.free_speed_night_ms if night else cfg.free_speed_day_ms

        # Holding vans (dwell / layover) count down; released vans start from standstill.
        holding = self.state != MOVING
        self.hold_s[holding] -= dt
        released = holding & (self.hold_s <= 0.0)
        released &= self._may_depart(released, t0)
        self.state[released] = MOVING
        self.v[released] = 0.0
        moving = self.state == MOVING

        # Desired speed and acceleration limit.
        self.mood = np.clip(
            self.mood
            + rng.normal(0.0, cfg.mood_sd * math.sqrt(dt), n)
            - 0.1 * dt * (self.mood - 1),
            0.85,
            1.15,
        )
        zone = self._congestion.weight_at(self.route_of, self.s)
        target = (
            free
            * self.driver
            * self.mood
            * (1.0 - cfg.peak_slowdown * peak)
            * (1.0 - 0.7 * zone * peak)
        )
        v = np.where(moving, np.minimum(target, self.v + cfg.accel_ms2 * dt), 0.0)

        # Queueing: moving vans keep min_gap behind the moving van ahead (no overtaking).
        p0 = self.progress()
        p1 = p0 + v * dt
        idx = np.flatnonzero(moving)
        if idx.size:
            group = self.route_of[idx] * 2 + self.direction[idx]
            order = np.lexsort((-p0[idx], group))
            srt = idx[order]
            g = group[order]
            starts = np.r_[True, g[1:] != g[:-1]]
            first = np.maximum.accumulate(np.where(starts, np.arange(srt.size), 0))
            rank = np.arange(srt.size) - first
            big = self._group_stride + srt.size * cfg.min_gap_m + 1.0  # > any y within a group
            y = p1[srt] + rank * cfg.min_gap_m - g * big
            y = np.minimum.accumulate(y)
            p1[srt] = np.maximum(y + g * big - rank * cfg.min_gap_m, p0[srt])
        v = np.where(moving, (p1 - p0) / dt, 0.0)
        arrived = moving & (p1 >= self.veh_len)
        p1 = np.minimum(p1, self.veh_len)
        dir0 = self.direction.copy()
        s0 = self.s
        s1 = np.where(dir0 == 0, p1, self.veh_len - p1)
        self.s = s1
        self.v = v

        # Turnarounds: lay over at the terminal, then drive back.
        if arrived.any():
            k = int(arrived.sum())
            self.state[arrived] = LAYOVER
            self.hold_s[arrived] = cfg.layover_min_s + rng.exponential(cfg.layover_mean_s, k)
            self.direction[arrived] = 1 - self.direction[arrived]
            self.v[arrived] = 0.0

        # Dwell stops: more likely the longer the gap to the van ahead.
        still = moving & ~arrived
        members = self.state != LAYOVER
        gap, leader = self._gap_ahead(self.progress(), members)
        gap_ratio = np.clip(gap / self.nominal_gap, cfg.min_gap_ratio, 3.0)
        demand = 0.3 if night else 1.0 + 0.5 * peak
        rate = cfg.stops_per_km / 1000.0 * demand * gap_ratio**cfg.stop_rate_exponent
        stop = still & (rng.random(n) < -np.expm1(-rate * (p1 - p0)))
        if stop.any():
            k = int(stop.sum())
            mean = cfg.dwell_mean_s * gap_ratio[stop] ** cfg.dwell_exponent
            self.state[stop] = DWELL
            self.hold_s[stop] = cfg.dwell_min_s + rng.exponential(1.0, k) * mean
            self.v[stop] = 0.0
            # A van close behind one that stops often stops too (same crowd, or stuck
            # behind it in a narrow street) and leaves just after it: pairs stay pairs.
            lead = np.maximum(leader, 0)
            shadow = (
                still
                & ~stop
                & (leader >= 0)
                & stop[lead]
                & (gap < cfg.shadow_gap_m)
                & (rng.random(n) < cfg.shadow_prob)
            )
            if shadow.any():
                self.state[shadow] = DWELL
                self.hold_s[shadow] = self.hold_s[lead[shadow]] + rng.uniform(
                    0.0, 3.0, int(shadow.sum())
                )
                self.v[shadow] = 0.0
        return Movement(t0=t0, t1=t1, s0=s0, s1=s1, p0=p0, direction=dir0, moving=moving)

    def _gap_ahead(self, p: FloatArray, members: BoolArray) -> tuple[FloatArray, IntArray]:
        """Distance to the next member van ahead on the same route and direction, and
        its index (-1 for the front van, which gets the nominal, evenly spaced gap)."""
        gap = self.nominal_gap.copy()
        leader = np.full(self.n, -1, dtype=np.int64)
        idx = np.flatnonzero(members)
        if idx.size == 0:
            return gap, leader
        group = self.route_of[idx] * 2 + self.direction[idx]
        order = np.lexsort((-p[idx], group))
        srt = idx[order]
        same = group[order][1:] == group[order][:-1]
        gap[srt[1:]] = np.where(same, p[srt][:-1] - p[srt][1:], self.nominal_gap[srt][1:])
        leader[srt[1:]] = np.where(same, srt[:-1], -1)
        return gap, leader

    def _may_depart(self, released: BoolArray, t_ms: int) -> BoolArray:
        """Of the vans whose lay-over is over, at most one per terminal leaves, and only
        ``departure_spacing`` of an even headway after the previous departure; the
        others wait a little longer."""
        ok = np.ones(self.n, dtype=bool)
        idx = np.flatnonzero(released & (self.state == LAYOVER))
        if idx.size == 0:
            return ok
        key = self.route_of[idx] * 2 + self.direction[idx]
        order = np.lexsort((self.hold_s[idx], key))  # most overdue first per terminal
        idx, key = idx[order], key[order]
        first = np.r_[True, key[1:] != key[:-1]]
        spacing_ms = (
            self.cfg.departure_spacing * self.nominal_gap[idx] / self.cfg.typical_speed_ms * 1000
        )
        leave = first & (t_ms >= self.last_departure_ms[key] + spacing_ms)
        self.last_departure_ms[key[leave]] = t_ms
        wait = idx[~leave]
        ok[wait] = False
        self.hold_s[wait] = self.rng.uniform(1.0, 5.0, wait.size)
        return ok
