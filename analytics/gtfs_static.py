"""GTFS static export: routes, checkpoints as stops, shapes, frequency-based trips.

Pete-pete have no timetable, so each route has one trip per direction whose
``stop_times`` are *relative* travel times (from observed median checkpoint-to-checkpoint
travel times, else ``DEFAULT_SPEED_MPS``) and whose service is described by
``frequencies.txt`` with ``exact_times=0`` (frequency-based service): one row per local
hour with the observed median headway of that hour (route, direction, all checkpoints
pooled, last ``days`` days).  Routes without observations get their target headway
(else ``DEFAULT_HEADWAY_S``) from 05:00 to 21:00.

Reference: GTFS Schedule reference (gtfs.org/schedule/reference), files agency, stops,
routes, trips, stop_times, calendar, shapes, frequencies, feed_info.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, Final

import psycopg

from fleet.routes import Route

__all__ = [
    "DEFAULT_HEADWAY_S",
    "DEFAULT_SPEED_MPS",
    "GTFS_COLUMNS",
    "Observed",
    "export_gtfs",
    "fetch_observed",
]

DEFAULT_SPEED_MPS: Final = 5.0  # 18 km/h, a van's average including stops
DEFAULT_HEADWAY_S: Final = 600
DEFAULT_SERVICE_HOURS: Final = range(5, 21)
AGENCY_ID: Final = "PETEPETE"

#: Columns written per file (required ones first, as in the GTFS reference).
GTFS_COLUMNS: Final[dict[str, tuple[str, ...]]] = {
    "agency.txt": ("agency_id", "agency_name", "agency_url", "agency_timezone", "agency_lang"),
    "stops.txt": ("stop_id", "stop_name", "stop_lat", "stop_lon", "location_type"),
    "routes.txt": (
        "route_id",
        "agency_id",
        "route_short_name",
        "route_long_name",
        "route_type",
        "route_color",
    ),
    "trips.txt": (
        "route_id",
        "service_id",
        "trip_id",
        "trip_headsign",
        "direction_id",
        "shape_id",
    ),
    "stop_times.txt": (
        "trip_id",
        "arrival_time",
        "departure_time",
        "stop_id",
        "stop_sequence",
        "timepoint",
        "shape_dist_traveled",
    ),
    "calendar.txt": (
        "service_id",
        "monday",
        "tuesday",
        "wednesday",
        "thursday",
        "friday",
        "saturday",
        "sunday",
        "start_date",
        "end_date",
    ),
    "shapes.txt": (
        "shape_id",
        "shape_pt_lat",
        "shape_pt_lon",
        "shape_pt_sequence",
        "shape_dist_traveled",
    ),
    "frequencies.txt": ("trip_id", "start_time", "end_time", "headway_secs", "exact_times"),
    "feed_info.txt": (
        "feed_publisher_name",
        "feed_publisher_url",
        "feed_lang",
        "feed_start_date",
        "feed_end_date",
        "feed_version",
    ),
}


@dataclass(frozen=True)
class Observed:
    """What the passages say about service: headways per hour, segment travel times."""

    headway_s: Mapping[tuple[str, int, int], float]  # (route, direction, local hour) → median
    travel_s: Mapping[tuple[str, int, int], float]  # (route, direction, from_seq) → median


def fetch_observed(conn: psycopg.Connection, end: datetime, days: int, timezone: str) -> Observed:
    lo = end - timedelta(days=days)
    head = conn.execute(
        """
        WITH h AS (
            SELECT route, direction,
                   extract(hour FROM ts AT TIME ZONE %(tz)s)::int AS hr,
                   extract(epoch FROM ts - lag(ts) OVER (
                       PARTITION BY route, direction, checkpoint_seq ORDER BY ts)) AS hs
            FROM passages WHERE ts >= %(lo)s AND ts < %(hi)s
        )
        SELECT route, direction, hr, percentile_cont(0.5) WITHIN GROUP (ORDER BY hs)
        FROM h WHERE hs > 0 AND hs < 3 * 3600
        GROUP BY route, direction, hr
        """,
        {"tz": timezone, "lo": lo, "hi": end},
    ).fetchall()
    travel = conn.execute(
        """
        SELECT route, direction, from_seq, percentile_cont(0.5) WITHIN GROUP (ORDER BY travel_s)
        FROM segment_traversals WHERE ts >= %s AND ts < %s
        GROUP BY route, direction, from_seq
        """,
        (lo, end),
    ).fetchall()
    return Observed(
        {(str(r), int(d), int(h)): float(v) for r, d, h, v in head},
        {(str(r), int(d), int(s)): float(v) for r, d, s, v in travel},
    )


def _hms(seconds: float) -> str:
    s = round(seconds)
    return f"{s // 3600:02d}:{s % 3600 // 60:02d}:{s % 60:02d}"


def _write(out_dir: Path, name: str, rows: Sequence[Sequence[Any]]) -> None:
    with (out_dir / name).open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(GTFS_COLUMNS[name])
        writer.writerows(rows)


def _stop_times(route: Route, direction: int, observed: Observed) -> list[list[Any]]:
    cps = sorted(route.checkpoints, key=lambda c: c.dist_m, reverse=direction == 1)
    trip_id = f"{route.code}-{direction}"
    rows: list[list[Any]] = []
    t = 0.0
    for i, cp in enumerate(cps):
        if i > 0:
            prev = cps[i - 1]
            seconds = observed.travel_s.get((route.code, direction, prev.seq))
            t += seconds if seconds else abs(cp.dist_m - prev.dist_m) / DEFAULT_SPEED_MPS
        along = cp.dist_m if direction == 0 else route.length_m - cp.dist_m  # as in shapes
        rows.append([trip_id, _hms(t), _hms(t), cp.id, i + 1, 0, round(along, 1)])
    return rows


def _frequencies(route: Route, direction: int, observed: Observed) -> list[list[Any]]:
    trip_id = f"{route.code}-{direction}"
    hours = sorted(h for (r, d, h) in observed.headway_s if r == route.code and d == direction)
    if hours:
        return [
            [
                trip_id,
                _hms(h * 3600),
                _hms((h + 1) * 3600),
                max(60, round(observed.headway_s[(route.code, direction, h)])),
                0,
            ]
            for h in hours
        ]
    headway = round(route.target_headway_s or DEFAULT_HEADWAY_S)
    return [
        [
            trip_id,
            _hms(DEFAULT_SERVICE_HOURS.start * 3600),
            _hms(DEFAULT_SERVICE_HOURS.stop * 3600),
            headway,
            0,
        ]
    ]


def export_gtfs(
    out_dir: Path,
    routes: Mapping[str, Route],
    observed: Observed,
    timezone: str = "Asia/Makassar",
    today: date | None = None,
) -> list[Path]:
    """Write the feed's .txt files into ``out_dir`` (created); return their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    today = today or datetime.now(UTC).date()
    start, end = today.strftime("%Y%m%d"), (today + timedelta(days=365)).strftime("%Y%m%d")
    _write(
        out_dir,
        "agency.txt",
        [[AGENCY_ID, "Pete-pete Makassar", "https://makassarkota.go.id/", timezone, "id"]],
    )
    stops: list[list[Any]] = []
    route_rows: list[list[Any]] = []
    trips: list[list[Any]] = []
    stop_times: list[list[Any]] = []
    shapes: list[list[Any]] = []
    freqs: list[list[Any]] = []
    for route in routes.values():
        route_rows.append(
            [route.code, AGENCY_ID, route.code, route.name, 3, route.color.lstrip("#").upper()]
        )
        for cp in route.checkpoints:
            stops.append(
                [cp.id, f"{route.code} checkpoint {cp.seq}", round(cp.lat, 6), round(cp.lon, 6), 0]
            )
        names = route.name.split(" – ")
        for direction in (0, 1):
            trip_id = shape_id = f"{route.code}-{direction}"
            headsign = names[-1] if direction == 0 else names[0]
            trips.append([route.code, "DAILY", trip_id, headsign, direction, shape_id])
            idx = range(len(route.lat)) if direction == 0 else range(len(route.lat) - 1, -1, -1)
            for n, i in enumerate(idx):
                dist = route.cum_m[i] if direction == 0 else route.length_m - route.cum_m[i]
                shapes.append(
                    [
                        shape_id,
                        round(float(route.lat[i]), 6),
                        round(float(route.lon[i]), 6),
                        n + 1,
                        round(float(dist), 1),
                    ]
                )
            stop_times += _stop_times(route, direction, observed)
            freqs += _frequencies(route, direction, observed)
    _write(out_dir, "stops.txt", stops)
    _write(out_dir, "routes.txt", route_rows)
    _write(out_dir, "trips.txt", trips)
    _write(out_dir, "stop_times.txt", stop_times)
    _write(out_dir, "shapes.txt", shapes)
    _write(out_dir, "frequencies.txt", freqs)
    _write(out_dir, "calendar.txt", [["DAILY", 1, 1, 1, 1, 1, 1, 1, start, end]])
    _write(
        out_dir,
        "feed_info.txt",
        [
            [
                "Makassar fleet telemetry",
                "https://makassarkota.go.id/",
                "id",
                start,
                end,
                today.isoformat(),
            ]
        ],
    )
    return [out_dir / name for name in GTFS_COLUMNS]
