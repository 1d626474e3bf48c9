"""Congestion: segment speed rollups, area (H3) speeds, free flow and congestion level.

* Segment rollup per route, direction and checkpoint-to-checkpoint segment per 5-minute
  bucket: sample count, distinct vans, median and 85th-percentile travel time and speed
  (``segment_speeds``: a continuous aggregate on TimescaleDB, a table refreshed here
  with ``date_bin`` on plain PostgreSQL).
* Area speeds per H3 cell (resolution 9, ≈ 0.1 km²) per 5-minute bucket from the fixes:
  reported speed, else the speed between a van's consecutive fixes.
* Free-flow speed of a segment = 85th percentile of its traversal speeds in off-peak
  hours (local time, configurable); congestion level = travel time / free-flow travel
  time − 1 (0 = free flow, 1 = twice as long).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Final

import h3
import numpy as np
import numpy.typing as npt
import psycopg
from psycopg import sql

from analytics.fix_arrays import copy_binary_rows
from fleet.geometry import haversine_m

__all__ = [
    "BUCKET",
    "bucket_start",
    "congestion_level",
    "freeflow_speeds",
    "grouped_quantile",
    "gtfs_congestion_level",
    "refresh_area_speeds",
    "refresh_segment_speeds",
]

log = logging.getLogger(__name__)

BUCKET: Final = timedelta(minutes=5)
_ORIGIN: Final = datetime(2000, 1, 1, tzinfo=UTC)
FloatArray = npt.NDArray[np.float64]


def bucket_start(ts: datetime) -> datetime:
    """Start of the 5-minute bucket holding ``ts`` (same origin as ``date_bin`` below)."""
    return ts - (ts - _ORIGIN) % BUCKET


def congestion_level(travel_s: float, freeflow_travel_s: float) -> float:
    """Travel time over free-flow travel time − 1 (NaN when either is unknown)."""
    if not (freeflow_travel_s > 0 and travel_s > 0):
        return float("nan")
    return travel_s / freeflow_travel_s - 1.0


def gtfs_congestion_level(level: float) -> int:
    """GTFS-realtime ``VehiclePosition.CongestionLevel`` for a congestion level.

    UNKNOWN (0) without data; RUNNING_SMOOTHLY (1) below 0.25; STOP_AND_GO (2) below
    0.75; CONGESTION (3) below 1.5; SEVERE_CONGESTION (4) from 1.5 (travel time 2.5 ×
    free flow).
    """
    if not np.isfinite(level):
        return 0
    if level < 0.25:
        return 1
    if level < 0.75:
        return 2
    if level < 1.5:
        return 3
    return 4


def grouped_quantile(
    starts: npt.NDArray[np.int64], counts: npt.NDArray[np.int64], values: FloatArray, q: float
) -> FloatArray:
    """Linear-interpolated quantile (numpy's default) of each group of sorted values.

    ``values`` must be sorted within each group; group g spans
    ``values[starts[g] : starts[g] + counts[g]]``.
    """
    pos = (counts - 1) * q
    lo = np.floor(pos).astype(np.int64)
    hi = np.minimum(lo + 1, counts - 1)
    frac = pos - lo
    return np.asarray(values[starts + lo] * (1 - frac) + values[starts + hi] * frac)


def refresh_segment_speeds(
    conn: psycopg.Connection, ranges: Iterable[tuple[str, datetime, datetime]], timescale: bool
) -> None:
    """Rebuild the 5-minute segment rollup for (route, lo, hi) ranges (plain PostgreSQL).

    On TimescaleDB the continuous aggregate's policy and real-time aggregation keep
    ``segment_speeds`` current, so nothing is done here.
    """
    if timescale:
        return
    merged: dict[str, tuple[datetime, datetime]] = {}
    for route, lo, hi in ranges:
        if route in merged:
            a, b = merged[route]
            merged[route] = (min(a, lo), max(b, hi))
        else:
            merged[route] = (lo, hi)
    for route, (lo, hi) in merged.items():
        b_lo, b_hi = bucket_start(lo), bucket_start(hi) + BUCKET
        conn.execute(
            "DELETE FROM segment_speeds WHERE route = %s AND bucket >= %s AND bucket < %s",
            (route, b_lo, b_hi),
        )
        conn.execute(
            """
            INSERT INTO segment_speeds
                (bucket, route, direction, from_seq, to_seq, samples, vans,
                 median_travel_s, p85_travel_s, median_speed_mps, p85_speed_mps, length_m)
            SELECT date_bin(%s, ts, %s) AS bucket, route, direction, from_seq, to_seq,
                   count(*), count(DISTINCT vehicle_id),
                   percentile_cont(0.5) WITHIN GROUP (ORDER BY travel_s),
                   percentile_cont(0.85) WITHIN GROUP (ORDER BY travel_s),
                   percentile_cont(0.5) WITHIN GROUP (ORDER BY speed_mps),
                   percentile_cont(0.85) WITHIN GROUP (ORDER BY speed_mps),
                   avg(length_m)
            FROM segment_traversals
            WHERE route = %s AND ts >= %s AND ts < %s
            GROUP BY 1, route, direction, from_seq, to_seq
            """,
            (BUCKET, _ORIGIN, route, b_lo, b_hi),
        )


def _cells(lat: FloatArray, lon: FloatArray, resolution: int) -> npt.NDArray[np.str_]:
    to_cell = np.frompyfunc(lambda a, b: h3.latlng_to_cell(a, b, resolution), 2, 1)
    return np.asarray(to_cell(lat, lon), dtype=str)


def refresh_area_speeds(
    conn: psycopg.Connection, buckets: Iterable[datetime], resolution: int = 9
) -> int:
    """Recompute ``area_speeds`` for whole 5-minute buckets from all fixes in them."""
    starts = sorted({bucket_start(b) for b in buckets})
    if not starts:
        return 0
    query = sql.SQL(
        """
        SELECT hashtext(p.vehicle_id)::int4, extract(epoch FROM p.ts)::float8, p.lat, p.lon,
               coalesce(p.speed, 'NaN')::float8
        FROM unnest({starts}::timestamptz[]) AS b(start)
        JOIN positions p ON p.ts >= b.start - interval '1 minute' AND p.ts < b.start + {step}
        ORDER BY 1, 2
        """
    ).format(starts=sql.Literal(starts), step=sql.Literal(BUCKET))
    rows = copy_binary_rows(
        conn, query, [("v", ">i4"), ("t", ">f8"), ("lat", ">f8"), ("lon", ">f8"), ("s", ">f8")]
    )
    van = rows["v"].astype(np.int64)
    t = rows["t"].astype(np.float64)
    lat, lon = rows["lat"].astype(np.float64), rows["lon"].astype(np.float64)
    speed = rows["s"].astype(np.float64)
    # Derived speed from the previous fix of the same van where none was reported.
    derived = np.full(t.size, np.nan)
    if t.size > 1:
        same = (van[1:] == van[:-1]) & (t[1:] > t[:-1]) & (t[1:] - t[:-1] <= 120)
        dist = haversine_m(lat[:-1], lon[:-1], lat[1:], lon[1:])
        derived[1:] = np.where(same, dist / np.maximum(t[1:] - t[:-1], 1e-3), np.nan)
    speed = np.where(np.isfinite(speed), speed, derived)
    step = BUCKET.total_seconds()
    origin = _ORIGIN.timestamp()
    bucket = origin + np.floor((t - origin) / step) * step
    wanted = np.isin(bucket, np.array([s.timestamp() for s in starts])) & np.isfinite(speed)
    van, bucket, speed = van[wanted], bucket[wanted], speed[wanted]
    conn.execute("DELETE FROM area_speeds WHERE bucket = ANY(%s)", (starts,))
    if speed.size == 0:
        return 0
    cells = _cells(lat[wanted], lon[wanted], resolution)
    cell_codes, cell_idx = np.unique(cells, return_inverse=True)
    bucket_codes, bucket_idx = np.unique(bucket, return_inverse=True)
    key = bucket_idx.astype(np.int64) * cell_codes.size + cell_idx
    order = np.lexsort((speed, key))
    key, speed, van = key[order], speed[order], van[order]
    uniq, starts_i, counts = np.unique(key, return_index=True, return_counts=True)
    median = grouped_quantile(starts_i, counts, speed, 0.5)
    p85 = grouped_quantile(starts_i, counts, speed, 0.85)
    pair = np.unique(np.stack([key, van]), axis=1)
    vans = np.bincount(np.searchsorted(uniq, pair[0]), minlength=uniq.size)
    with (
        conn.cursor() as cur,
        cur.copy(
            "COPY area_speeds (bucket, cell, samples, vans, median_speed_mps, p85_speed_mps)"
            " FROM STDIN"
        ) as copy,
    ):
        for k, n, nv, med, p in zip(
            uniq.tolist(),
            counts.tolist(),
            vans.tolist(),
            median.tolist(),
            p85.tolist(),
            strict=True,
        ):
            b, c = divmod(k, cell_codes.size)
            copy.write_row(
                (
                    datetime.fromtimestamp(float(bucket_codes[b]), UTC),
                    str(cell_codes[c]),
                    n,
                    nv,
                    med,
                    p,
                )
            )
    return int(uniq.size)


def freeflow_speeds(
    conn: psycopg.Connection,
    routes: list[str] | None,
    until: datetime,
    lookback_days: int,
    offpeak_hours: Iterable[int],
    timezone: str,
) -> dict[tuple[str, int, int], float]:
    """(route, direction, from_seq) → free-flow speed (m/s): p85 of off-peak speeds."""
    rows = conn.execute(
        """
        SELECT route, direction, from_seq,
               percentile_cont(0.85) WITHIN GROUP (ORDER BY speed_mps)
        FROM segment_traversals
        WHERE ts >= %s AND ts < %s
          AND (%s::text[] IS NULL OR route = ANY(%s::text[]))
          AND extract(hour FROM ts AT TIME ZONE %s)::int = ANY(%s::int[])
        GROUP BY route, direction, from_seq
        """,
        (
            until - timedelta(days=lookback_days),
            until,
            routes,
            routes,
            timezone,
            sorted(offpeak_hours),
        ),
    ).fetchall()
    return {(str(r), int(d), int(s)): float(v) for r, d, s, v in rows if v}
