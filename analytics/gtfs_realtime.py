"""GTFS-realtime VehiclePositions from the vans' latest positions.

One ``FeedEntity`` per van seen in the last ``max_age_s``: trip descriptor (route_id,
direction_id from the van's latest passage, trip_id ``<route>-<direction>`` of the
frequency-based trip in the static export, schedule relationship UNSCHEDULED),
vehicle id, position (lat, lon, bearing, speed m/s), timestamp, and congestion level
of the checkpoint-to-checkpoint segment the van is on (the latest 5-minute bucket of
the last 15 minutes against that segment's free-flow travel time, see
:func:`analytics.congestion.gtfs_congestion_level`).

Reference: gtfs.org/realtime/reference (FeedMessage, VehiclePosition, CongestionLevel).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
from google.transit import gtfs_realtime_pb2

from analytics.congestion import congestion_level, gtfs_congestion_level
from analytics.passages import RouteLine

__all__ = [
    "LIVE_SEGMENTS_SQL",
    "VANS_SQL",
    "VanState",
    "build_vehicle_positions",
    "segment_levels",
    "van_states",
]

MAX_AGE_S: Final = 3600

VANS_SQL: Final = """
SELECT v.vehicle_id, v.route, v.lat, v.lon, v.heading, v.speed,
       extract(epoch FROM v.last_ts)::float8, lp.direction
FROM vehicles v
LEFT JOIN LATERAL (
    SELECT p.direction FROM passages p
    WHERE p.vehicle_id = v.vehicle_id AND p.ts > v.last_ts - interval '1 hour'
    ORDER BY p.ts DESC LIMIT 1
) lp ON true
WHERE v.last_ts IS NOT NULL AND v.last_ts > now() - make_interval(secs => %(max_age_s)s)
ORDER BY v.vehicle_id
"""

LIVE_SEGMENTS_SQL: Final = """
SELECT DISTINCT ON (route, direction, from_seq)
       route, direction, from_seq, median_travel_s, length_m
FROM segment_speeds
WHERE bucket > now() - interval '15 minutes'
ORDER BY route, direction, from_seq, bucket DESC
"""


@dataclass(frozen=True)
class VanState:
    vehicle_id: str
    route: str | None
    lat: float
    lon: float
    bearing: float | None
    speed: float | None
    ts: float  # epoch seconds of the fix
    direction: int | None
    congestion: int  # GTFS-rt CongestionLevel value


def segment_levels(
    live: Sequence[Sequence[Any]], freeflow: Mapping[tuple[str, int, int], float]
) -> dict[tuple[str, int, int], float]:
    """(route, direction, from_seq) → congestion level from the live segment rows."""
    out: dict[tuple[str, int, int], float] = {}
    for route, d, fs, med_t, length in live:
        ff = freeflow.get((str(route), int(d), int(fs)))
        if ff:
            out[(str(route), int(d), int(fs))] = congestion_level(float(med_t), length / ff)
    return out


def _segment_of(line: RouteLine, lat: float, lon: float, direction: int) -> int | None:
    """from_seq of the checkpoint-to-checkpoint segment a van is on, if any."""
    along, offset = line.project(np.array([lat]), np.array([lon]))
    if offset[0] > line.params.max_offset_m:
        return None
    behind = int(np.searchsorted(line.checkpoint_dist, along[0]))  # checkpoints below
    n = line.checkpoint_dist.size
    if direction == 0 and 1 <= behind <= n - 1:
        return int(line.checkpoint_seq[behind - 1])
    if direction == 1 and 1 <= behind <= n - 1:
        return int(line.checkpoint_seq[behind])
    return None


def van_states(
    rows: Sequence[Sequence[Any]],
    lines: Mapping[str, RouteLine],
    levels: Mapping[tuple[str, int, int], float],
) -> list[VanState]:
    out: list[VanState] = []
    for vid, route, lat, lon, heading, speed, ts, direction in rows:
        congestion = 0
        line = lines.get(route) if route else None
        if line is not None and direction is not None:
            seg = _segment_of(line, lat, lon, int(direction))
            if seg is not None and (route, int(direction), seg) in levels:
                congestion = gtfs_congestion_level(levels[(route, int(direction), seg)])
        out.append(
            VanState(
                vid,
                route,
                lat,
                lon,
                heading,
                speed,
                ts,
                None if direction is None else int(direction),
                congestion,
            )
        )
    return out


def build_vehicle_positions(vans: Sequence[VanState], now_s: float) -> bytes:
    """A serialized GTFS-realtime 2.0 FeedMessage (FULL_DATASET)."""
    feed = gtfs_realtime_pb2.FeedMessage()
    feed.header.gtfs_realtime_version = "2.0"
    feed.header.incrementality = gtfs_realtime_pb2.FeedHeader.FULL_DATASET
    feed.header.timestamp = int(now_s)
    for van in vans:
        entity = feed.entity.add()
        entity.id = van.vehicle_id
        vp = entity.vehicle
        if van.route:
            vp.trip.route_id = van.route
            vp.trip.schedule_relationship = gtfs_realtime_pb2.TripDescriptor.UNSCHEDULED
            if van.direction is not None:
                vp.trip.direction_id = van.direction
                vp.trip.trip_id = f"{van.route}-{van.direction}"
        vp.vehicle.id = van.vehicle_id
        vp.vehicle.label = van.vehicle_id
        vp.position.latitude = van.lat
        vp.position.longitude = van.lon
        if van.bearing is not None:
            vp.position.bearing = van.bearing
        if van.speed is not None:
            vp.position.speed = van.speed
        vp.timestamp = int(van.ts)
        vp.congestion_level = van.congestion  # type: ignore[assignment]
    return bytes(feed.SerializeToString())
