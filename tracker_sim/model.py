"""A vectorized model of a pete-pete fleet, free of MQTT: :class:`FleetModel`.

All vans of all routes live in numpy arrays; :meth:`FleetModel.step` advances every van
at once and returns what the trackers would transmit now.  The model is deterministic
for a given seed and sequence of ``step`` calls (one random generator, drawn from in a
fixed order: motion, then trackers).

Its parts, one job each:

* :mod:`tracker_sim.parameters` — the behavioural parameters (:class:`SimConfig`);
* :mod:`tracker_sim.traffic` — time of day, rush hours and congested places;
* :mod:`tracker_sim.motion` — the noise-free motion: speeds, dwell stops, queueing
  (bunching emerges from it), turnarounds;
* :mod:`tracker_sim.trackers` — what the GPS trackers send: noisy fixes, bad fixes,
  coverage losses with backlog uploads, devices switched off (last will);
* :mod:`tracker_sim.truth` — ground truth: the exact time each van passes each
  checkpoint, interpolated from the noise-free motion (``FleetModel.truth``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import numpy.typing as npt

from fleet.routes import Route
from tracker_sim.motion import FleetMotion
from tracker_sim.parameters import SimConfig
from tracker_sim.trackers import Tick, Trackers
from tracker_sim.truth import TruthRecorder, TruthTable

__all__ = ["FleetModel"]


class FleetModel:
    """All vans of all routes; ``step(dt_s)`` advances everyone and returns a :class:`Tick`.

    ``motion`` holds where the vans are and what they do, ``trackers`` the state of
    their devices (schedule, coverage, backlog); van ``i`` is ``vehicle_ids[i]`` in both.
    """

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
        rng = np.random.default_rng(seed)
        self.t_ms = int(start_ms)

        counts = [
            vehicles_per_route
            if isinstance(vehicles_per_route, int)
            else int(vehicles_per_route.get(r.code, 0))
            for r in self.routes
        ]
        if sum(counts) == 0:
            raise ValueError("the fleet has no vehicles")
        self.vehicle_ids: list[str] = [
            f"{id_prefix}{r.code}-{k:03d}"
            for r, n in zip(self.routes, counts, strict=True)
            for k in range(1, n + 1)
        ]
        self.route_codes: list[str] = [r.code for r in self.routes]
        self.n = len(self.vehicle_ids)
        # the order of construction is the order of the first random draws
        self.motion = FleetMotion(self.routes, counts, self.cfg, rng)
        self.trackers = Trackers(
            self.vehicle_ids,
            self.route_codes,
            start_ms=self.t_ms,
            report_interval_ms=round(report_interval_s * 1000),
            noise_m=noise_m,
            dropout=dropout,
            cfg=self.cfg,
            rng=rng,
        )
        self._truth = TruthRecorder(
            self.routes, self.vehicle_ids, self.motion.route_of, keep=keep_truth
        )
        self._quiet = False

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
        self._truth.clear()
        self.trackers.rephase(self.t_ms)

    def snapshot(self) -> dict[str, npt.NDArray[np.generic]]:
        """True (noise-free) state of every van now."""
        motion = self.motion
        lat = np.empty(self.n)
        lon = np.empty(self.n)
        for i, r in enumerate(self.routes):
            m = motion.route_of == i
            lat[m], lon[m] = r.position_at(motion.s[m])
        return {
            "vehicle_id": np.array(self.vehicle_ids, dtype=object),
            "route": np.array(self.route_codes, dtype=object)[motion.route_of],
            "direction": motion.direction.copy(),
            "dist_m": motion.s.copy(),
            "lat": lat,
            "lon": lon,
            "speed": motion.v.copy(),
            "state": motion.state.copy(),
            "online": self.trackers.online.copy(),
        }

    @property
    def truth(self) -> TruthTable:
        """Every checkpoint passage so far (or since the last drain if keep_truth=False)."""
        return self._truth.table()

    def drain_truth(self) -> TruthTable:
        """Passages since the previous drain (for streaming them to a file)."""
        return self._truth.drain()

    def _substep(self, t1: int, tick: Tick) -> None:
        movement = self.motion.advance(self.t_ms, t1)
        self.t_ms = t1
        if self._quiet:
            return
        self._truth.record(movement)
        self.trackers.transmit(movement, self.motion, tick)
