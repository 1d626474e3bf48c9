"""Congestion: segment speed rollups, area (H3) speeds, free flow and congestion level.

* Segment rollup per route, direction and checkpoint-to-checkpoint segment per 5-minute
  bucket: sample count, distinct vans, median and 85th-percentile travel time and speed
  (``segment_speeds``: a continuous aggregate on TimescaleDB, a table on plain
  PostgreSQL; :func:`refresh_segment_speeds` refreshes either).
* Area speeds per H3 cell (resolution 9, ≈ 0.1 km²) per 5-minute bucket from the fixes:
  reported speed, else the speed between a van's consecutive fixes.
* Free-flow speed of a segment = 85th percentile of its traversal speeds in off-peak
  hours (local time, configurable); congestion level = travel time / free-flow travel
  time − 1 (0 = free flow, 1 = twice as long).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import h3
import numpy as np
import numpy.typing as npt
import psycopg
from psycopg import sql
from psycopg.pq import TransactionStatus

from analytics.fix_arrays import copy_binary_rows
from fleet.geometry import haversine_m

__all__ = [
    "BUCKET",
    "FREEFLOW_SQL",
    "FreeFlow",
    "RollupError",
    "bucket_start",
    "congestion_level",
    "freeflow_by_segment",
    "freeflow_params",
    "grouped_quantile",
    "gtfs_congestion_level",
    "refresh_area_speeds",
    "refresh_segment_speeds",
    "segment_speeds_is_aggregate",
]

log = logging.getLogger(__name__)

BUCKET: Final = timedelta(minutes=5)
_SEGMENT_ROLLUP_LOCK: Final = 0x5E6_5EED  # pg_advisory_xact_lock: one rebuild at a time
_ORIGIN: Final = datetime(2000, 1, 1, tzinfo=UTC)
FloatArray = npt.NDArray[np.float64]
#: Free-flow speed (m/s) per (route, direction, from_seq) segment.
FreeFlow = dict[tuple[str, int, int], float]


class RollupError(RuntimeError):
    """A rollup refresh asked for where it cannot run (e.g. inside a transaction)."""


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


def segment_speeds_is_aggregate(conn: psycopg.Connection) -> bool:
    """Whether ``segment_speeds`` is TimescaleDB's continuous aggregate (a view), not the
    table plain PostgreSQL gets (migration 2 creates one or the other)."""
    row = conn.execute(
        "SELECT relkind FROM pg_class WHERE oid = to_regclass('segment_speeds')"
    ).fetchone()
    return row is not None and row[0] == "v"


def refresh_segment_speeds(
    conn: psycopg.Connection, ranges: Iterable[tuple[str, datetime, datetime]]
) -> None:
    """Bring the 5-minute segment rollup up to date for (route, lo, hi) ranges of
    changed ``segment_traversals`` — the one refresh the loop, the tests and any other
    writer of traversals use.

    * Plain PostgreSQL: the buckets of each route's range are rebuilt from the
      traversals (``date_bin``) inside the caller's transaction, so the rollup commits
      together with the traversals; the caller commits.
    * TimescaleDB: ``CALL refresh_continuous_aggregate`` over the buckets that cover
      the ranges (late data included, however old; the policy alone re-reads 3 days).
      The call cannot run inside a transaction block: the caller commits first, and it
      runs in autocommit.
    """
    merged: dict[str, tuple[datetime, datetime]] = {}
    for route, lo, hi in ranges:
        a, b = merged.get(route, (lo, hi))
        merged[route] = (min(a, lo), max(b, hi))
    if not merged:
        return
    in_transaction = conn.info.transaction_status != TransactionStatus.IDLE
    if not segment_speeds_is_aggregate(conn):
        _rebuild_segment_speeds(conn, merged)
        return
    if in_transaction:
        raise RollupError(
            "refresh_continuous_aggregate cannot run inside a transaction block: "
            "commit, then refresh segment_speeds"
        )
    if not conn.autocommit:
        conn.commit()  # ends the transaction the look-up above opened, nothing else
    autocommit = conn.autocommit
    conn.autocommit = True
    try:
        for lo, hi in _covering_windows(merged.values()):
            conn.execute(
                sql.SQL("CALL refresh_continuous_aggregate('segment_speeds', {}, {})").format(
                    sql.Literal(lo), sql.Literal(hi)
                )
            )
    finally:
        conn.autocommit = autocommit


def _covering_windows(
    ranges: Iterable[tuple[datetime, datetime]],
) -> list[tuple[datetime, datetime]]:
    """Whole 5-minute buckets covering the ranges, overlapping ones merged (a continuous
    aggregate refreshes only the buckets that lie entirely inside the window)."""
    out: list[tuple[datetime, datetime]] = []
    for lo, hi in sorted((bucket_start(lo), bucket_start(hi) + BUCKET) for lo, hi in ranges):
        if out and lo <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], hi))
        else:
            out.append((lo, hi))
    return out


def _rebuild_segment_speeds(
    conn: psycopg.Connection, ranges: dict[str, tuple[datetime, datetime]]
) -> None:
    # Two writers rebuilding the same bucket would both insert its row: one at a time.
    conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SEGMENT_ROLLUP_LOCK,))
    for route, (lo, hi) in ranges.items():
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


FREEFLOW_SQL: Final = """
SELECT route, direction, from_seq, percentile_cont(0.85) WITHIN GROUP (ORDER BY speed_mps)
FROM segment_traversals
WHERE ts >= %(ff_lo)s AND ts < %(ff_hi)s
  AND (%(route)s::text IS NULL OR route = %(route)s)
  AND extract(hour FROM ts AT TIME ZONE %(tz)s)::int = ANY(%(hours)s::int[])
GROUP BY route, direction, from_seq
"""


def freeflow_params(
    until: datetime,
    route: str | None,
    offpeak_hours: Iterable[int],
    lookback_days: int,
    timezone: str,
) -> dict[str, object]:
    """Parameters of FREEFLOW_SQL: off-peak traversals of the ``lookback_days`` before
    ``until`` (all routes when ``route`` is None)."""
    return {
        "ff_lo": until - timedelta(days=lookback_days),
        "ff_hi": until,
        "route": route,
        "tz": timezone,
        "hours": sorted(offpeak_hours),
    }


def freeflow_by_segment(rows: Iterable[Sequence[Any]]) -> FreeFlow:
    """FREEFLOW_SQL's rows as (route, direction, from_seq) → free-flow speed (m/s)."""
    return {(str(r), int(d), int(s)): float(v) for r, d, s, v in rows if v}
