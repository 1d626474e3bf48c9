"""Pete-pete routes (trayek): polylines, checkpoints and the GeoJSON file they come from.

The routes file (``fleet/data/makassar-routes.geojson``, format in ``docs/routes.md``) is
a GeoJSON FeatureCollection with one ``LineString`` per route code.  Every route is
driven out and back: direction 0 runs with increasing distance along the polyline
(first vertex → last), direction 1 runs back; vans turn around at both terminals.

Checkpoints, the points at which headways are measured, are placed every
``checkpoint_spacing_m`` (≈ 400 m, spread evenly so the route length divides exactly)
strictly inside the route, half a spacing away from each terminal, so a passage never
coincides with a turnaround.  Checkpoint ``seq`` counts from 0 at the direction-0
start; the id is ``<route>-<seq:03d>`` (e.g. ``B-012``).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from fleet.geometry import bearing_deg, haversine_m

__all__ = [
    "DEFAULT_ROUTES_PATH",
    "Checkpoint",
    "Route",
    "RoutesError",
    "load_routes",
    "routes_geojson",
]

DEFAULT_ROUTES_PATH: Final = Path(__file__).resolve().parent / "data" / "makassar-routes.geojson"
ROUTE_CODE_RE: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.]{0,15}$")
COLOR_RE: Final = re.compile(r"^#[0-9a-fA-F]{6}$")
MIN_ROUTE_LENGTH_M: Final = 500.0
MAX_ROUTE_LENGTH_M: Final = 100_000.0

FloatArray = npt.NDArray[np.float64]


class RoutesError(ValueError):
    """The routes file is unreadable or invalid; the message names file, feature and fix."""


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A point on a route at which passages (and so headways) are measured."""

    id: str  # "<route>-<seq:03d>", e.g. "B-012"
    route: str
    seq: int  # 0 at the direction-0 start, increasing along the polyline
    dist_m: float  # distance from the first vertex along the polyline
    lat: float
    lon: float


@dataclass(frozen=True, eq=False)
class Route:
    """One route code: its polyline, linear referencing and checkpoints."""

    code: str
    name: str
    color: str  # "#rrggbb"
    lat: FloatArray
    lon: FloatArray
    cum_m: FloatArray  # cumulative metres along the polyline at each vertex (cum_m[0] == 0)
    length_m: float
    checkpoints: tuple[Checkpoint, ...]
    target_headway_s: float | None = None

    @property
    def checkpoint_dist_m(self) -> FloatArray:
        return np.array([c.dist_m for c in self.checkpoints], dtype=np.float64)

    def position_at(self, dist_m: npt.ArrayLike) -> tuple[FloatArray, FloatArray]:
        """(lat, lon) at distances along the polyline (clipped to the route), element-wise."""
        d = np.clip(np.asarray(dist_m, dtype=np.float64), 0.0, self.length_m)
        return np.interp(d, self.cum_m, self.lat), np.interp(d, self.cum_m, self.lon)

    def bearing_at(self, dist_m: npt.ArrayLike) -> FloatArray:
        """Direction-0 bearing (degrees from north) of the segment at each distance."""
        seg_bearing = bearing_deg(self.lat[:-1], self.lon[:-1], self.lat[1:], self.lon[1:])
        d = np.asarray(dist_m, dtype=np.float64)
        idx = np.clip(np.searchsorted(self.cum_m, d, side="right") - 1, 0, len(seg_bearing) - 1)
        return np.asarray(seg_bearing[idx])


def _fail(path: Path, where: str, problem: str) -> RoutesError:
    return RoutesError(f"{path}: {where}: {problem}")


def _checkpoints(
    code: str, route_lat: FloatArray, route_lon: FloatArray, cum: FloatArray, spacing_m: float
) -> tuple[Checkpoint, ...]:
    length = float(cum[-1])
    n = max(1, round(length / spacing_m))
    step = length / n
    dists = (np.arange(n, dtype=np.float64) + 0.5) * step
    lats = np.interp(dists, cum, route_lat)
    lons = np.interp(dists, cum, route_lon)
    return tuple(
        Checkpoint(f"{code}-{i:03d}", code, i, float(d), float(la), float(lo))
        for i, (d, la, lo) in enumerate(zip(dists, lats, lons, strict=True))
    )


def _coordinates(path: Path, where: str, geometry: Any) -> tuple[FloatArray, FloatArray]:
    if not isinstance(geometry, dict) or geometry.get("type") != "LineString":
        got = geometry.get("type") if isinstance(geometry, dict) else type(geometry).__name__
        raise _fail(path, where, f"geometry must be a LineString, got {got!r}")
    coords = geometry.get("coordinates")
    if not isinstance(coords, list) or len(coords) < 2:
        raise _fail(path, where, "a LineString needs at least 2 [lon, lat] positions")
    lat = np.empty(len(coords))
    lon = np.empty(len(coords))
    for i, pos in enumerate(coords):
        ok = (
            isinstance(pos, list)
            and len(pos) in (2, 3)
            and all(isinstance(v, int | float) and not isinstance(v, bool) for v in pos)
            and all(math.isfinite(v) for v in pos)
        )
        if not ok:
            raise _fail(path, where, f"position {i} must be [lon, lat] numbers, got {pos!r}")
        lon[i], lat[i] = float(pos[0]), float(pos[1])
        if not (-180.0 <= lon[i] <= 180.0 and -90.0 <= lat[i] <= 90.0):
            raise _fail(
                path, where, f"position {i} {pos!r} is out of range (GeoJSON order is [lon, lat])"
            )
    return lat, lon


def _route(path: Path, index: int, feature: Any, spacing_m: float) -> Route:
    where = f"feature {index}"
    if not isinstance(feature, dict) or feature.get("type") != "Feature":
        raise _fail(path, where, "expected a GeoJSON Feature object")
    props = feature.get("properties")
    if not isinstance(props, dict):
        raise _fail(path, where, "properties must be an object with code, name and color")
    code = props.get("code")
    if not isinstance(code, str) or not ROUTE_CODE_RE.match(code):
        raise _fail(path, where, f"properties.code must be 1-16 of A-Z a-z 0-9 _ . (got {code!r})")
    where = f"feature {index} (route {code})"
    name = props.get("name")
    if not isinstance(name, str) or not name.strip():
        raise _fail(path, where, "properties.name must be a non-empty string")
    color = props.get("color")
    if not isinstance(color, str) or not COLOR_RE.match(color):
        raise _fail(path, where, f"properties.color must look like '#1f77b4' (got {color!r})")
    headway = props.get("target_headway_s")
    if headway is not None and (
        not isinstance(headway, int | float) or isinstance(headway, bool) or not headway > 0
    ):
        raise _fail(path, where, f"properties.target_headway_s must be > 0 s (got {headway!r})")
    lat, lon = _coordinates(path, where, feature.get("geometry"))
    seg = haversine_m(lat[:-1], lon[:-1], lat[1:], lon[1:])
    if np.any(seg == 0.0):
        i = int(np.argmax(seg == 0.0))
        raise _fail(path, where, f"positions {i} and {i + 1} are identical; remove the repeat")
    cum = np.concatenate(([0.0], np.cumsum(seg)))
    length = float(cum[-1])
    if not MIN_ROUTE_LENGTH_M <= length <= MAX_ROUTE_LENGTH_M:
        raise _fail(
            path,
            where,
            f"route is {length:.0f} m long; expected {MIN_ROUTE_LENGTH_M:.0f}-"
            f"{MAX_ROUTE_LENGTH_M:.0f} m (check the coordinate order [lon, lat])",
        )
    return Route(
        code=code,
        name=name.strip(),
        color=color.lower(),
        lat=lat,
        lon=lon,
        cum_m=cum,
        length_m=length,
        checkpoints=_checkpoints(code, lat, lon, cum, spacing_m),
        target_headway_s=None if headway is None else float(headway),
    )


def load_routes(path: Path | None = None, checkpoint_spacing_m: float = 400.0) -> dict[str, Route]:
    """Load and validate a routes GeoJSON file (default: the bundled Makassar routes).

    Returns routes by code, in file order.  Raises :class:`RoutesError` naming the file,
    the feature index and what is wrong.
    """
    path = path or DEFAULT_ROUTES_PATH
    if not checkpoint_spacing_m > 0:
        raise RoutesError(f"checkpoint spacing must be > 0 m (got {checkpoint_spacing_m})")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise RoutesError(f"{path}: cannot read the routes file: {exc.strerror}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RoutesError(f"{path}: not valid JSON: {exc}") from None
    if not isinstance(doc, dict) or doc.get("type") != "FeatureCollection":
        raise RoutesError(f"{path}: top level must be a GeoJSON FeatureCollection")
    features = doc.get("features")
    if not isinstance(features, list) or not features:
        raise RoutesError(f"{path}: 'features' must be a non-empty list of route LineStrings")
    routes: dict[str, Route] = {}
    for index, feature in enumerate(features):
        route = _route(path, index, feature, checkpoint_spacing_m)
        if route.code in routes:
            raise _fail(path, f"feature {index}", f"duplicate route code {route.code!r}")
        routes[route.code] = route
    return routes


def routes_geojson(routes: Mapping[str, Route]) -> dict[str, Any]:
    """A FeatureCollection: route lines (``kind: route``) and checkpoints (``kind: checkpoint``)."""
    features: list[dict[str, Any]] = []
    for route in routes.values():
        features.append(
            {
                "type": "Feature",
                "id": route.code,
                "properties": {
                    "kind": "route",
                    "code": route.code,
                    "name": route.name,
                    "color": route.color,
                    "length_m": round(route.length_m, 1),
                    "target_headway_s": route.target_headway_s,
                    "checkpoints": len(route.checkpoints),
                },
                "geometry": {
                    "type": "LineString",
                    "coordinates": [
                        [round(float(lo), 6), round(float(la), 6)]
                        for la, lo in zip(route.lat, route.lon, strict=True)
                    ],
                },
            }
        )
    for route in routes.values():
        for cp in route.checkpoints:
            features.append(
                {
                    "type": "Feature",
                    "id": cp.id,
                    "properties": {
                        "kind": "checkpoint",
                        "id": cp.id,
                        "route": cp.route,
                        "seq": cp.seq,
                        "dist_m": round(cp.dist_m, 1),
                    },
                    "geometry": {
                        "type": "Point",
                        "coordinates": [round(cp.lon, 6), round(cp.lat, 6)],
                    },
                }
            )
    return {"type": "FeatureCollection", "features": features}
