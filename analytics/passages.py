"""Checkpoint passages from GPS fixes: linear referencing and crossing interpolation.

1. **Linear referencing.** Each fix is projected onto its route's polyline in a local
   metric plane (:class:`fleet.geometry.LocalProjection`); the candidate segments come
   from a uniform grid index (cell → segments within ``max_offset_m`` + half a cell
   diagonal), so projecting N fixes costs O(N·K) with K a handful of segments. Fixes
   farther than ``max_offset_m`` from the line are ignored.
2. **Hysteresis.** Around each checkpoint at distance ``p`` a dead band ``[p − h, p + h]``
   is laid; a fix outside every band has a *level* = number of checkpoints behind it.
   Fixes inside a band keep the last level (GPS jitter around a checkpoint therefore
   never produces a crossing). A change of level between successive stable fixes of
   the same van is a crossing of every checkpoint in between — upwards (direction 0,
   increasing distance) or downwards (direction 1). A turnaround inside a band is no
   crossing.
3. **Interpolation.** Between the two stable fixes, the split is placed where the
   fewest fixes lie on the wrong side of ``p`` (so GPS jitter while a van dwells near
   a checkpoint does not time the passage at the first noisy fix beyond it), and the
   crossing time is interpolated linearly between the two fixes around the split.
   Crossings spanning a data gap longer than ``max_gap_s`` are dropped, and so are
   single fixes that jump along the route and straight back faster than
   ``max_speed_mps`` (multipath spikes that stay within ``max_offset_m`` of the line).

Everything is vectorized over all vans of a batch at once (numpy); no Python loop runs
per fix or per crossing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, Protocol

import numpy as np
import numpy.typing as npt

from fleet.geometry import LocalProjection

__all__ = [
    "CheckpointLike",
    "Crossings",
    "Detection",
    "DetectionParams",
    "RouteLike",
    "RouteLine",
    "detect_crossings",
]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

DIRECTION_UP: Final = 0  # increasing distance along the polyline
DIRECTION_DOWN: Final = 1


class CheckpointLike(Protocol):
    @property
    def id(self) -> str: ...
    @property
    def seq(self) -> int: ...
    @property
    def dist_m(self) -> float: ...
    @property
    def lat(self) -> float: ...
    @property
    def lon(self) -> float: ...


class RouteLike(Protocol):
    """What analytics needs of ``fleet.routes.Route``."""

    @property
    def code(self) -> str: ...
    @property
    def lat(self) -> FloatArray: ...
    @property
    def lon(self) -> FloatArray: ...
    @property
    def cum_m(self) -> FloatArray: ...
    @property
    def length_m(self) -> float: ...
    @property
    def checkpoints(self) -> Sequence[CheckpointLike]: ...


@dataclass(frozen=True)
class DetectionParams:
    max_offset_m: float = 60.0  # fixes farther from the route are ignored
    hysteresis_m: float = 45.0  # half-width of the dead band around each checkpoint
    max_gap_s: float = 300.0  # no interpolation across longer gaps between fixes
    max_speed_mps: float = 30.0  # a fix that jumps away and back faster is a GPS spike
    grid_cell_m: float = 100.0


@dataclass(frozen=True)
class Crossings:
    """Detected passages, parallel arrays (index = group id given to detect_crossings)."""

    group: IntArray
    checkpoint: IntArray  # index into RouteLine.checkpoint_dist (0-based, seq order)
    direction: IntArray  # 0 = increasing distance, 1 = decreasing
    t: FloatArray  # seconds (same clock as the input)

    def __len__(self) -> int:
        return int(self.t.size)


@dataclass(frozen=True)
class Detection:
    """Crossings plus, per group, the time span they are complete for.

    Every crossing between the first and the last stable fix of a group (``span_lo`` <
    t < ``span_hi``) is in ``crossings``; crossings outside that span depend on fixes
    outside the input and must be left as they are (see ``loop``'s windowing).
    """

    crossings: Crossings
    span_group: IntArray
    span_lo: FloatArray
    span_hi: FloatArray


class RouteLine:
    """A route polyline prepared for fast projection and crossing detection."""

    def __init__(self, route: RouteLike, params: DetectionParams | None = None) -> None:
        self.params = params or DetectionParams()
        self.code = route.code
        lat = np.asarray(route.lat, dtype=np.float64)
        lon = np.asarray(route.lon, dtype=np.float64)
        self.cum_m = np.asarray(route.cum_m, dtype=np.float64)
        self.length_m = float(route.length_m)
        self.proj = LocalProjection(float(lat.mean()), float(lon.mean()))
        x, y = self.proj.to_xy(lat, lon)
        self._ax, self._ay = x[:-1], y[:-1]
        self._dx, self._dy = np.diff(x), np.diff(y)
        self._len2 = np.maximum(self._dx**2 + self._dy**2, 1e-9)
        cps = sorted(route.checkpoints, key=lambda c: c.dist_m)
        self.checkpoint_ids = [c.id for c in cps]
        self.checkpoint_seq = np.array([c.seq for c in cps], dtype=np.int64)
        self.checkpoint_dist = np.array([c.dist_m for c in cps], dtype=np.float64)
        self._edges = self._dead_band_edges()
        self._build_grid(x, y)

    # -- set-up -----------------------------------------------------------------------

    def _dead_band_edges(self) -> FloatArray:
        """Sorted [p0−h, p0+h, p1−h, p1+h, ...]; bands are clipped to the line's ends.

        A checkpoint closer than h to a terminal gets its band shrunk on that side so a
        van arriving at the terminal still leaves the band on the far side.
        """
        h = self.params.hysteresis_m
        p = self.checkpoint_dist
        lo = p - h
        hi = p + h
        end_margin = min(h / 3, 5.0)
        # Terminal checkpoints: the band must lie within the line with room to spare.
        hi = np.where(
            hi > self.length_m - end_margin, np.maximum(p, self.length_m - end_margin), hi
        )
        # (a checkpoint at distance 0 gets a band starting just above 0, so a van standing
        # at the first terminal is below it.)
        lo = np.where(lo < end_margin, np.maximum(np.minimum(p, end_margin), 1e-6), lo)
        # Keep the bands disjoint even for closely spaced checkpoints.
        if p.size > 1:
            mid = (p[1:] + p[:-1]) / 2
            hi[:-1] = np.minimum(hi[:-1], mid - 1e-6)
            lo[1:] = np.maximum(lo[1:], mid + 1e-6)
        edges = np.empty(2 * p.size, dtype=np.float64)
        edges[0::2] = lo
        edges[1::2] = hi
        return edges

    def _build_grid(self, x: FloatArray, y: FloatArray) -> None:
        cell = self.params.grid_cell_m
        reach = self.params.max_offset_m + cell * np.sqrt(2) / 2
        self._x0 = float(x.min()) - self.params.max_offset_m - cell
        self._y0 = float(y.min()) - self.params.max_offset_m - cell
        self._nx = int((x.max() + self.params.max_offset_m + cell - self._x0) // cell) + 1
        self._ny = int((y.max() + self.params.max_offset_m + cell - self._y0) // cell) + 1
        cx = self._x0 + (np.arange(self._nx) + 0.5) * cell
        cy = self._y0 + (np.arange(self._ny) + 0.5) * cell
        gx, gy = np.meshgrid(cx, cy, indexing="ij")
        px, py = gx.ravel()[:, None], gy.ravel()[:, None]
        t = np.clip(((px - self._ax) * self._dx + (py - self._ay) * self._dy) / self._len2, 0, 1)
        dist2 = (px - self._ax - t * self._dx) ** 2 + (py - self._ay - t * self._dy) ** 2
        near = dist2 <= reach**2  # cells × segments
        k = max(int(near.sum(axis=1).max()), 1)
        # Candidates per cell, padded with -1 (no segment).
        order = np.argsort(~near, axis=1, kind="stable")[:, :k]
        cand = np.where(np.take_along_axis(near, order, axis=1), order, -1)
        self._cand = cand.astype(np.int32)
        self._k = k

    # -- projection -------------------------------------------------------------------

    def project(self, lat: npt.ArrayLike, lon: npt.ArrayLike) -> tuple[FloatArray, FloatArray]:
        """Distance along the route (m) and offset from it (m); offset = inf off the grid."""
        x, y = self.proj.to_xy(lat, lon)
        cell = self.params.grid_cell_m
        ix = ((x - self._x0) // cell).astype(np.int64)
        iy = ((y - self._y0) // cell).astype(np.int64)
        inside = (ix >= 0) & (ix < self._nx) & (iy >= 0) & (iy < self._ny)
        flat = np.where(inside, ix * self._ny + iy, 0)
        cand = self._cand[flat]  # N × K
        valid = (cand >= 0) & inside[:, None]
        seg = np.where(valid, cand, 0)
        ax, ay = self._ax[seg], self._ay[seg]
        dx, dy = self._dx[seg], self._dy[seg]
        rx, ry = x[:, None] - ax, y[:, None] - ay
        t = np.clip((rx * dx + ry * dy) / self._len2[seg], 0.0, 1.0)
        ex, ey = rx - t * dx, ry - t * dy
        dist2 = np.where(valid, ex * ex + ey * ey, np.inf)
        best = np.argmin(dist2, axis=1)
        rows = np.arange(x.size)
        best_seg = seg[rows, best]
        best_t = t[rows, best]
        offset = np.sqrt(dist2[rows, best])
        along = self.cum_m[best_seg] + best_t * (self.cum_m[best_seg + 1] - self.cum_m[best_seg])
        return along, offset

    def levels(self, along: FloatArray) -> tuple[IntArray, npt.NDArray[np.bool_]]:
        """Level (checkpoints behind) of each distance, and whether it is outside every band."""
        idx = np.searchsorted(self._edges, along, side="right")
        stable = (idx % 2) == 0
        return (idx // 2).astype(np.int64), stable


def detect_crossings(
    line: RouteLine,
    group: npt.ArrayLike,
    t: npt.ArrayLike,
    lat: npt.ArrayLike,
    lon: npt.ArrayLike,
) -> Detection:
    """Checkpoint crossings of many vans on one route.

    ``group`` is an integer per fix (one id per van or van-window); fixes must be sorted
    by (group, t). ``t`` is in seconds.
    """
    g_all = np.asarray(group, dtype=np.int64)
    t_all = np.asarray(t, dtype=np.float64)
    along, offset = line.project(lat, lon)
    on = offset <= line.params.max_offset_m
    g, tt, d = g_all[on], t_all[on], along[on]
    keep = ~_spikes(g, tt, d, line.params.max_speed_mps, line.params.max_offset_m)
    g, tt, d = g[keep], tt[keep], d[keep]
    level, stable = line.levels(d)
    s_idx = np.flatnonzero(stable)
    sg = g[s_idx]
    first = np.flatnonzero(np.r_[True, sg[1:] != sg[:-1]]) if sg.size else s_idx
    last = np.r_[first[1:] - 1, sg.size - 1] if sg.size else s_idx
    span_group = sg[first]
    span_lo, span_hi = tt[s_idx[first]], tt[s_idx[last]]
    crossings = _crossings(line, g, tt, d, level, s_idx)
    return Detection(crossings, span_group, span_lo, span_hi)


def _spikes(
    g: IntArray, t: FloatArray, d: FloatArray, max_speed: float, slack_m: float
) -> npt.NDArray[np.bool_]:
    """Fixes that jump along the route and straight back faster than ``max_speed``."""
    spike = np.zeros(d.size, dtype=bool)
    if d.size < 3:
        return spike
    dd = np.diff(d)
    dt = np.maximum(np.diff(t), 1e-3)
    too_fast = (np.abs(dd) > max_speed * dt + slack_m) & (g[1:] == g[:-1])
    back = np.sign(dd[:-1]) != np.sign(dd[1:])
    spike[1:-1] = too_fast[:-1] & too_fast[1:] & back
    return spike


def _crossings(
    line: RouteLine, g: IntArray, tt: FloatArray, d: FloatArray, level: IntArray, s_idx: IntArray
) -> Crossings:
    empty = Crossings(
        np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0)
    )
    if s_idx.size < 2:
        return empty
    i, j = s_idx[:-1], s_idx[1:]
    li, lj = level[i], level[j]
    moved = (g[i] == g[j]) & (li != lj) & (tt[j] - tt[i] <= line.params.max_gap_s)
    i, j, li, lj = i[moved], j[moved], li[moved], lj[moved]
    if i.size == 0:
        return empty
    up = lj > li
    n = np.abs(lj - li)
    # One row per crossed checkpoint.
    rep = np.repeat(np.arange(i.size), n)
    first_of = np.cumsum(n) - n
    step = np.arange(rep.size) - first_of[rep]
    ci = np.where(up[rep], li[rep] + step, li[rep] - 1 - step)
    ci_i, ci_j, ci_up = i[rep], j[rep], up[rep]
    p = line.checkpoint_dist[ci]
    sign = np.where(ci_up, 1.0, -1.0)
    # Split each span [i, j] where the fewest fixes are on the wrong side of p: fixes
    # before the split should be behind the checkpoint, fixes from the split on beyond it.
    # (Robust to GPS jitter while a van dwells close to a checkpoint.)
    span = ci_j - ci_i + 1
    owner = np.repeat(np.arange(ci.size), span)
    start = np.cumsum(span) - span
    offset_in = np.arange(owner.size) - start[owner]
    k = ci_i[owner] + offset_in
    beyond = (sign[owner] * (d[k] - p[owner]) >= 0).astype(np.int64)
    csum = np.cumsum(beyond)
    beyond_before = csum - beyond - (csum[start] - beyond[start])[owner]
    behind_total = (span - np.add.reduceat(beyond, start))[owner]
    cost = (2 * beyond_before - offset_in + behind_total).astype(np.float64)
    cost[start] = np.inf  # the split is after the stable fix i
    order = np.lexsort((cost, owner))
    kk = k[order[start]]
    k0 = kk - 1
    denom = d[kk] - d[k0]
    frac = np.where(np.abs(denom) > 1e-9, (p - d[k0]) / np.where(denom == 0, 1.0, denom), 0.5)
    t_cross = tt[k0] + np.clip(frac, 0.0, 1.0) * (tt[kk] - tt[k0])
    return Crossings(
        group=g[ci_i],
        checkpoint=ci.astype(np.int64),
        direction=np.where(ci_up, DIRECTION_UP, DIRECTION_DOWN).astype(np.int64),
        t=t_cross,
    )
