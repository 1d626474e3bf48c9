"""Makassar's traffic as the fleet model sees it: local time, rush hours, congested places.

Speed depends on the time of day (WITA, UTC+8): :func:`peak_intensity` says how much of
a rush hour it is, and inside the congested zones (:data:`CONGESTION_ZONES`) a peak
slows vans much more than elsewhere.  :class:`CongestionGrid` turns the zones into a
weight along each route, looked up for every van at once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

from fleet.geometry import haversine_m
from fleet.routes import Route

__all__ = [
    "CONGESTION_ZONES",
    "WITA_OFFSET_H",
    "CongestionGrid",
    "CongestionZone",
    "hour_local",
    "peak_intensity",
]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

WITA_OFFSET_H: Final = 8.0  # Makassar local time is UTC+8
GRID_M: Final = 20.0  # resolution of the per-route congestion lookup


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


def hour_local(t_ms: int) -> float:
    """Hour of the day (0..24, fractional) in Makassar at ``t_ms`` (ms since the epoch)."""
    return ((t_ms / 3_600_000.0) + WITA_OFFSET_H) % 24.0


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


class CongestionGrid:
    """The congestion weight along every route (a GRID_M grid, all routes concatenated)."""

    def __init__(self, routes: Sequence[Route]) -> None:
        grids = [_zone_weights(r) for r in routes]
        self._offset = np.concatenate(([0], np.cumsum([len(g) for g in grids])[:-1]))
        self._length = np.array([len(g) for g in grids])
        self._weights = np.concatenate(grids)

    def weight_at(self, route_of: IntArray, dist_m: FloatArray) -> FloatArray:
        """Weight (0..1) at each van's distance along its route (``route_of``: route index)."""
        k = np.minimum((dist_m / GRID_M).astype(np.int64), self._length[route_of] - 1)
        return np.asarray(self._weights[self._offset[route_of] + k])
