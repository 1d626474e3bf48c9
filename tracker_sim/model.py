"""A vectorized movement model of a pete-pete fleet, free of MQTT.

All vans of all routes live in numpy arrays; :meth:`FleetModel.step` advances every van
at once and returns what the trackers would transmit now.  The model is deterministic
for a given seed and sequence of ``step`` calls.

What it models (parameters in :class:`SimConfig`):

* **Speed** by time of day (WITA, UTC+8): a free-flow speed, slower everywhere at peak
  hours and much slower inside congested zones (:data:`CONGESTION_ZONES`) at peaks;
  each driver has a personal speed factor and a slowly wandering mood; acceleration is
  limited, braking is not.
* **Dwell stops anywhere**: a van stops to pick up / drop off with a rate per metre that
  grows with the distance to the van ahead on the same route and direction (more
  passengers are waiting behind a long gap), so a van close behind another rarely
  stops and catches up.  A stopped van pulls over and is passed.
* **Queueing**: a moving van cannot overtake the moving van ahead on the same route and
  direction; it keeps at least ``min_gap_m`` behind it.  Together with the demand
  rule above, pairs of vans form and travel together: bunching emerges.
* **Turnarounds**: at either terminal a van lays over (waits for passengers) and then
  drives back (direction 0 = increasing distance along the polyline, 1 = decreasing).
* **Trackers**: a fix every ``report_interval_s`` (per-van phase), GPS noise with a 2-D
  RMS of ``noise_m``, occasional bad fixes hundreds of metres off, coverage losses of
  minutes (fixes are buffered and uploaded as one ``{"fixes": [...]}`` batch when
  coverage returns) and devices switched off for a while (last will: offline).
* **Ground truth**: the exact time each van passes each checkpoint, interpolated
  from the noise-free motion (``FleetModel.truth``).
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, TextIO

import numpy as np
import numpy.typing as npt

from fleet.contract import MAX_BATCH_FIXES, Fix
from fleet.geometry import EARTH_RADIUS_M, haversine_m
from fleet.routes import Route

__all__ = [
    "CONGESTION_ZONES",
    "TRUTH_CSV_HEADER",
    "CongestionZone",
    "DeviceMessage",
    "FleetModel",
    "Passage",
    "SimConfig",
    "StatusChange",
    "Tick",
    "TruthTable",
    "peak_intensity",
]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

WITA_OFFSET_H: Final = 8.0  # Makassar local time is UTC+8
GRID_M: Final = 20.0  # resolution of the per-route congestion lookup
TRUTH_CSV_HEADER: Final = (
    "vehicle_id",
    "route",
    "direction",
    "checkpoint_id",
    "checkpoint_seq",
    "ts_ms",
)

# Van states
MOVING: Final = 0
DWELL: Final = 1
LAYOVER: Final = 2


@dataclass(frozen=True, slots=True)
class CongestionZone:
    name: str
    lat: float
    lon: float
    radius_m: float
    weight: float  # 0..1: share of speed lost at the height of a peak


CONGESTION_ZONES: Final = (
    CongestionZone("Makassar Mall / Pasar Sentral", -5.1318, 119.4155, 500.0, 1.0),
    CongestionZone("Fly-over Urip / Pettarani / Perintis", -5.1360, 119.4495, 600.0, 1.0),
    CongestionZone("Jl. Urip Sumoharjo (UMI)", -5.1360, 119.4400, 450.0, 0.7),
    CongestionZone("Pettarani × Boulevard (Panakkukang)", -5.1520, 119.4425, 500.0, 0.9),
    CongestionZone("Alauddin × Pettarani", -5.1760, 119.4340, 500.0, 0.9),
    CongestionZone("Unhas Tamalanrea", -5.1315, 119.4875, 400.0, 0.7),
    CongestionZone("Terminal Daya", -5.1080, 119.5120, 500.0, 0.8),
    CongestionZone("Sungguminasa", -5.2040, 119.4510, 500.0, 0.8),
)


@dataclass(frozen=True)
class SimConfig:
    """Behavioural parameters of the model (defaults: a weekday in Makassar)."""

    free_speed_day_ms: float = 9.0  # cruising for passengers, ≈ 32 km/h
    free_speed_night_ms: float = 12.0  # 22:00-05:00
    peak_slowdown: float = 0.3  # everywhere, at the height of a peak
    driver_speed_sd: float = 0.08  # personal speed factor ~ N(1, sd)
    mood_sd: float = 0.05  # per-second random walk of the speed factor
    accel_ms2: float = 1.2
    min_gap_m: float = 12.0  # a moving van keeps at least this behind the moving van ahead
    stops_per_km: float = 2.0  # at the nominal (even) gap, daytime off-peak
    dwell_mean_s: float = 15.0  # at the nominal gap; grows with the gap
    dwell_min_s: float = 4.0
    layover_min_s: float = 30.0
    layover_mean_s: float = 90.0  # exponential part on top of the minimum
    # A van leaves a terminal no sooner than this share of the route's even headway
    # after the previous one ("ngetem": it waits for passengers the last one left).
    departure_spacing: float = 0.9
    typical_speed_ms: float = 6.0  # to turn the even gap (m) into an even headway (s)
    min_gap_ratio: float = 0.4  # gap / even gap is clipped to [min_gap_ratio, 3]
    stop_rate_exponent: float = 0.5  # stops per km ∝ (gap / even gap) ** this
    dwell_exponent: float = 0.5  # mean dwell ∝ (gap / even gap) ** this
    shadow_gap_m: float = 60.0  # a van this close behind one that stops ...
    shadow_prob: float = 0.7  # ... stops too with this probability, leaving just after it
    bad_fix_prob: float = 0.002
    bad_fix_min_m: float = 80.0
    bad_fix_max_m: float = 600.0
    coverage_loss_per_h: float = 0.4  # per van, when dropout is on
    coverage_loss_min_s: float = 60.0
    coverage_loss_max_s: float = 600.0
    offline_per_h: float = 0.05  # device switched off (last will), when dropout is on
    offline_min_s: float = 300.0
    offline_max_s: float = 1800.0
    max_substep_s: float = 1.0


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
    """What happened during one :meth:`FleetModel.step`."""

    t_ms: int  # simulated clock at the end of the step
    messages: list[DeviceMessage] = field(default_factory=list)
    status: list[StatusChange] = field(default_factory=list)

    @property
    def fix_count(self) -> int:
        return sum(len(m.fixes) for m in self.messages)


@dataclass(frozen=True, slots=True)
class Passage:
    """One row of ground truth: a van passed a checkpoint."""

    vehicle_id: str
    route: str
    direction: int
    checkpoint_id: str
    checkpoint_seq: int
    ts_ms: int


@dataclass(frozen=True, eq=False)
class TruthTable:
    """Checkpoint passages as parallel arrays, in order of ``ts_ms`` within each step."""

    vehicle_id: npt.NDArray[np.object_]
    route: npt.NDArray[np.object_]
    direction: npt.NDArray[np.int8]
    checkpoint_id: npt.NDArray[np.object_]
    checkpoint_seq: npt.NDArray[np.int32]
    ts_ms: IntArray

    def __len__(self) -> int:
        return len(self.ts_ms)

    def rows(self) -> Iterator[Passage]:
        for v, r, d, cid, seq, ts in zip(
            self.vehicle_id.tolist(),
            self.route.tolist(),
            self.direction.tolist(),
            self.checkpoint_id.tolist(),
            self.checkpoint_seq.tolist(),
            self.ts_ms.tolist(),
            strict=True,
        ):
            yield Passage(v, r, d, cid, seq, ts)

    def write_csv(self, out: TextIO, header: bool = True) -> int:
        """Write rows in the documented CSV format (docs/routes.md); return the count."""
        writer = csv.writer(out, lineterminator="\n")
        if header:
            writer.writerow(TRUTH_CSV_HEADER)
        n = 0
        for p in self.rows():
            writer.writerow(
                (p.vehicle_id, p.route, p.direction, p.checkpoint_id, p.checkpoint_seq, p.ts_ms)
            )
            n += 1
        return n

    @staticmethod
    def read_csv(path: Path) -> list[Passage]:
        with path.open(newline="") as f:
            return [
                Passage(
                    row["vehicle_id"],
                    row["route"],
                    int(row["direction"]),
                    row["checkpoint_id"],
                    int(row["checkpoint_seq"]),
                    int(row["ts_ms"]),
                )
                for row in csv.DictReader(f)
            ]


def peak_intensity(hour_local: npt.ArrayLike) -> FloatArray:
    """0..1: how much of a rush hour it is (morning ~07:30, noon, evening ~17:30 WITA)."""
    h = np.asarray(hour_local, dtype=np.float64)
    p = (
        np.exp(-(((h - 7.5) / 1.0) ** 2))
        + 0.45 * np.exp(-(((h - 12.5) / 1.0) ** 2))
        + np.exp(-(((h - 17.5) / 1.3) ** 2))
    )
    return np.asarray(np.clip(p, 0.0, 1.0))


def _zone_weights(route: Route) -> FloatArray:
    """Congestion weight (0..1) on a GRID_M grid along the route."""
    d = np.arange(0.0, route.length_m + GRID_M, GRID_M)
    lat, lon = route.position_at(d)
    w = np.zeros_like(d)
    for z in CONGESTION_ZONES:
        dist = haversine_m(lat, lon, z.lat, z.lon)
        w = np.maximum(w, z.weight * np.exp(-((dist / z.radius_m) ** 2)))
    return w


class FleetModel:
    """All vans of all routes; ``step(dt_s)`` advances everyone and returns a :class:`Tick`."""

    def __init__(
        self,
        routes: Mapping[str, Route],
        vehicles_per_route: int | Mapping[str, int],
        seed: int = 0,
        start_ms: int = 0,
        report_interval_s: float = 5.0,
        noise_m: float = 5.0,
        dropout: bool = True,
        config: SimConfig | None = None,
        id_prefix: str = "pp-",
        keep_truth: bool = True,
    ) -> None:
        if report_interval_s < 1.0:
            raise ValueError(f"report interval must be ≥ 1 s (got {report_interval_s})")
        if not routes:
            raise ValueError("no routes to drive")
        self.cfg = config or SimConfig()
        self.routes = list(routes.values())
        self.noise_m = noise_m
        self.dropout = dropout
        self.keep_truth = keep_truth
        self.rng = np.random.default_rng(seed)
        self.t_ms = int(start_ms)
        self.report_interval_ms = round(report_interval_s * 1000)

        counts = [
            vehicles_per_route
            if isinstance(vehicles_per_route, int)
            else int(vehicles_per_route.get(r.code, 0))
            for r in self.routes
        ]
        if sum(counts) == 0:
            raise ValueError("the fleet has no vehicles")
        self.route_of = np.repeat(np.arange(len(self.routes)), counts).astype(np.int64)
        self.vehicle_ids: list[str] = [
            f"{id_prefix}{r.code}-{k:03d}"
            for r, n in zip(self.routes, counts, strict=True)
            for k in range(1, n + 1)
        ]
        self.route_codes: list[str] = [r.code for r in self.routes]
        n = len(self.vehicle_ids)
        self.n = n
        self.length = np.array([r.length_m for r in self.routes])
        self.veh_len = self.length[self.route_of]
        self.nominal_gap = np.array(
            [2 * r.length_m / max(c, 1) for r, c in zip(self.routes, counts, strict=True)]
        )[self.route_of]

        # Congestion grid, all routes concatenated.
        grids = [_zone_weights(r) for r in self.routes]
        self._grid_off = np.concatenate(([0], np.cumsum([len(g) for g in grids])[:-1]))
        self._grid_len = np.array([len(g) for g in grids])
        self._grid = np.concatenate(grids)

        # Checkpoints of all routes on one global axis: route i's distances + i * stride.
        self._stride = float(self.length.max()) + 10_000.0
        cp_pos: list[float] = []
        self._cp_id: list[str] = []
        self._cp_seq: list[int] = []
        self._cp_route: list[str] = []
        for i, r in enumerate(self.routes):
            for cp in r.checkpoints:
                cp_pos.append(i * self._stride + cp.dist_m)
                self._cp_id.append(cp.id)
                self._cp_seq.append(cp.seq)
                self._cp_route.append(r.code)
        self._cp_pos = np.array(cp_pos)

        # Initial state: vans spread evenly around each route's out-and-back loop.
        u = np.empty(n)
        for i, count in enumerate(counts):
            idx = np.flatnonzero(self.route_of == i)
            loop = 2 * self.routes[i].length_m
            u[idx] = (np.arange(count) + self.rng.uniform(0.0, 0.6, count)) * loop / max(count, 1)
        self.direction = (u >= self.veh_len).astype(np.int8)
        self.s = np.where(self.direction == 0, u, 2 * self.veh_len - u)
        self.s = np.clip(self.s, 0.0, self.veh_len)
        self.v = np.zeros(n)
        self.state = np.full(n, MOVING, dtype=np.int8)
        self.hold_s = np.zeros(n)
        self.driver = np.clip(self.rng.normal(1.0, self.cfg.driver_speed_sd, n), 0.8, 1.2)
        self.mood = np.ones(n)
        self.next_report_ms = self.t_ms + self.rng.integers(
            1, self.report_interval_ms + 1, n, dtype=np.int64
        )
        self.seq = np.zeros(n, dtype=np.int64)
        self.online = np.ones(n, dtype=bool)
        self.offline_until_ms = np.zeros(n, dtype=np.int64)
        self.covered = np.ones(n, dtype=bool)
        self.coverage_until_ms = np.zeros(n, dtype=np.int64)
        self.backlog: list[list[Fix]] = [[] for _ in range(n)]
        self.has_backlog = np.zeros(n, dtype=bool)
        self.last_departure_ms = np.full(2 * len(self.routes), -(2**62), dtype=np.int64)

        self._truth_v: list[IntArray] = []
        self._truth_cp: list[IntArray] = []
        self._truth_dir: list[npt.NDArray[np.int8]] = []
        self._truth_ts: list[IntArray] = []
        self._drained = 0
        self._quiet = False

    # ------------------------------------------------------------------ helpers

    def hour_local(self, t_ms: int | None = None) -> float:
        t = self.t_ms if t_ms is None else t_ms
        return ((t / 3_600_000.0) + WITA_OFFSET_H) % 24.0

    def _progress(self) -> FloatArray:
        """Distance travelled in the current direction since the last terminal."""
        return np.where(self.direction == 0, self.s, self.veh_len - self.s)

    def _s_from_progress(self, p: FloatArray, direction: npt.NDArray[np.int8]) -> FloatArray:
        return np.where(direction == 0, p, self.veh_len - p)

    def _zone_weight_at(self, s: FloatArray) -> FloatArray:
        k = np.minimum((s / GRID_M).astype(np.int64), self._grid_len[self.route_of] - 1)
        return np.asarray(self._grid[self._grid_off[self.route_of] + k])

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

    # ------------------------------------------------------------------ public API

    def step(self, dt_s: float) -> Tick:
        """Advance the simulated clock by ``dt_s`` seconds (in sub-steps ≤ 1 s)."""
        tick = Tick(self.t_ms)
        if dt_s <= 0:
            return tick
        n_sub = max(1, math.ceil(dt_s / self.cfg.max_substep_s - 1e-9))
        total_ms = round(dt_s * 1000)
        t_end = self.t_ms + total_ms
        for k in range(n_sub):
            t1 = self.t_ms + (t_end - self.t_ms) // (n_sub - k)
            self._substep(t1, tick)
        tick.t_ms = self.t_ms
        return tick

    def warm_up(self, seconds: float) -> None:
        """Drive the fleet for ``seconds`` without trackers or ground truth, so that
        the published part starts from a fleet that has been on the road (vans no longer
        evenly spaced: bunches have formed)."""
        self._quiet = True
        try:
            self.step(seconds)
        finally:
            self._quiet = False
        self._truth_v, self._truth_cp, self._truth_dir, self._truth_ts = [], [], [], []
        self._drained = 0
        phase = self.rng.integers(1, self.report_interval_ms + 1, self.n, dtype=np.int64)
        self.next_report_ms = self.t_ms + phase

    def snapshot(self) -> dict[str, npt.NDArray[np.generic]]:
        """True (noise-free) state of every van now."""
        lat = np.empty(self.n)
        lon = np.empty(self.n)
        for i, r in enumerate(self.routes):
            m = self.route_of == i
            lat[m], lon[m] = r.position_at(self.s[m])
        return {
            "vehicle_id": np.array(self.vehicle_ids, dtype=object),
            "route": np.array(self.route_codes, dtype=object)[self.route_of],
            "direction": self.direction.copy(),
            "dist_m": self.s.copy(),
            "lat": lat,
            "lon": lon,
            "speed": self.v.copy(),
            "state": self.state.copy(),
            "online": self.online.copy(),
        }

    @property
    def truth(self) -> TruthTable:
        """Every checkpoint passage so far (or since the last drain if keep_truth=False)."""
        return self._table(0)

    def drain_truth(self) -> TruthTable:
        """Passages since the previous drain (for streaming them to a file)."""
        table = self._table(self._drained)
        self._drained += len(table)
        if not self.keep_truth:
            self._truth_v, self._truth_cp, self._truth_dir, self._truth_ts = [], [], [], []
            self._drained = 0
        return table

    def _table(self, start: int) -> TruthTable:
        def cat(parts: list[npt.NDArray[np.generic]], dtype: type) -> npt.NDArray[np.generic]:
            return np.concatenate(parts)[start:] if parts else np.empty(0, dtype=dtype)

        veh = cat(self._truth_v, np.int64).astype(np.int64)  # type: ignore[arg-type]
        cp = cat(self._truth_cp, np.int64).astype(np.int64)  # type: ignore[arg-type]
        ids = np.array([*self.vehicle_ids, ""], dtype=object)
        cp_id = np.array([*self._cp_id, ""], dtype=object)
        cp_route = np.array([*self._cp_route, ""], dtype=object)
        cp_seq = np.array([*self._cp_seq, 0], dtype=np.int32)
        return TruthTable(
            vehicle_id=ids[veh],
            route=cp_route[cp],
            direction=cat(self._truth_dir, np.int8).astype(np.int8),  # type: ignore[arg-type]
            checkpoint_id=cp_id[cp],
            checkpoint_seq=cp_seq[cp],
            ts_ms=cat(self._truth_ts, np.int64).astype(np.int64),  # type: ignore[arg-type]
        )

    # ------------------------------------------------------------------ one sub-step

    def _substep(self, t1: int, tick: Tick) -> None:
        cfg, rng, n = self.cfg, self.rng, self.n
        t0 = self.t_ms
        dt = (t1 - t0) / 1000.0
        hour = self.hour_local(t0)
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
        zone = self._zone_weight_at(self.s)
        target = (
            free
            * self.driver
            * self.mood
            * (1.0 - cfg.peak_slowdown * peak)
            * (1.0 - 0.7 * zone * peak)
        )
        v = np.where(moving, np.minimum(target, self.v + cfg.accel_ms2 * dt), 0.0)

        # Queueing: moving vans keep min_gap behind the moving van ahead (no overtaking).
        p0 = self._progress()
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
            big = self._stride + srt.size * cfg.min_gap_m + 1.0  # > any y within a group
            y = p1[srt] + rank * cfg.min_gap_m - g * big
            y = np.minimum.accumulate(y)
            p1[srt] = np.maximum(y + g * big - rank * cfg.min_gap_m, p0[srt])
        v = np.where(moving, (p1 - p0) / dt, 0.0)
        arrived = moving & (p1 >= self.veh_len)
        p1 = np.minimum(p1, self.veh_len)
        dir0 = self.direction.copy()
        s0 = self.s
        s1 = self._s_from_progress(p1, dir0)

        self._record_passages(s0=s0, s1=s1, direction=dir0, moving=moving, t0=t0, dt=dt)
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
        gap, leader = self._gap_ahead(self._progress(), members)
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

        self.t_ms = t1
        if not self._quiet:
            self._devices(t0, t1, p0, dir0, tick)

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

    def _record_passages(
        self,
        *,
        s0: FloatArray,
        s1: FloatArray,
        direction: npt.NDArray[np.int8],
        moving: BoolArray,
        t0: int,
        dt: float,
    ) -> None:
        offset = self.route_of * self._stride
        g0, g1 = s0 + offset, s1 + offset
        fwd = direction == 0
        # direction 0 crosses c when s0 < c <= s1; direction 1 when s1 <= c < s0
        lo = np.where(
            fwd,
            np.searchsorted(self._cp_pos, g0, "right"),
            np.searchsorted(self._cp_pos, g1, "left"),
        )
        hi = np.where(
            fwd,
            np.searchsorted(self._cp_pos, g1, "right"),
            np.searchsorted(self._cp_pos, g0, "left"),
        )
        count = np.where(moving, np.maximum(hi - lo, 0), 0)
        total = int(count.sum())
        if total == 0:
            return
        veh = np.repeat(np.arange(self.n), count)
        first = np.repeat(lo, count)
        within = np.arange(total) - np.repeat(np.cumsum(count) - count, count)
        # direction 1 passes checkpoints in decreasing order
        cp = np.where(fwd[veh], first + within, np.repeat(hi, count) - 1 - within)
        frac = np.abs(self._cp_pos[cp] - g0[veh]) / np.abs(g1[veh] - g0[veh])
        ts = t0 + np.round(frac * dt * 1000.0).astype(np.int64)
        order = np.argsort(ts, kind="stable")
        self._truth_v.append(veh[order])
        self._truth_cp.append(cp[order].astype(np.int64))
        self._truth_dir.append(direction[veh][order].astype(np.int8))
        self._truth_ts.append(ts[order])

    def _devices(
        self, t0: int, t1: int, p0: FloatArray, dir0: npt.NDArray[np.int8], tick: Tick
    ) -> None:
        cfg, rng, n = self.cfg, self.rng, self.n
        dt_h = (t1 - t0) / 3_600_000.0

        self._reports(t0, t1, p0, dir0, tick)
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

    def _reports(
        self, t0: int, t1: int, p0: FloatArray, dir0: npt.NDArray[np.int8], tick: Tick
    ) -> None:
        """Fixes due in (t0, t1] of devices that are on: sent live or kept in the backlog."""
        cfg, rng = self.cfg, self.rng
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
        # True position at the report time: linear motion within the sub-step.
        dt = max((t1 - t0) / 1000.0, 1e-9)
        frac = np.clip((ts - t0) / 1000.0 / dt, 0.0, 1.0)
        p_new = self._progress_for(idx, dir0)
        p = p0[idx] + (p_new - p0[idx]) * frac
        s = np.where(dir0[idx] == 0, p, self.veh_len[idx] - p)
        lat = np.empty(idx.size)
        lon = np.empty(idx.size)
        bearing = np.empty(idx.size)
        r_of = self.route_of[idx]
        for r in np.unique(r_of).tolist():
            m = r_of == r
            route = self.routes[r]
            lat[m], lon[m] = route.position_at(s[m])
            bearing[m] = route.bearing_at(s[m])
        heading = np.where(dir0[idx] == 0, bearing, (bearing + 180.0) % 360.0)

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
        speed = np.clip(self.v[idx] + rng.normal(0.0, 0.3, k), 0.0, None)
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

    def _progress_for(self, idx: IntArray, dir0: npt.NDArray[np.int8]) -> FloatArray:
        """Progress (in the direction before any turnaround) reached at the sub-step's end."""
        s = self.s[idx]
        return np.where(dir0[idx] == 0, s, self.veh_len[idx] - s)
