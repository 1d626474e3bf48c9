"""The congestion reports: per 5-minute bucket and checkpoint-to-checkpoint segment
(samples, vans, median/p85 travel time and speed, free-flow speed — p85 of off-peak
speeds — and congestion level), or per H3 cell (area speeds)."""

from __future__ import annotations

from typing import Final, TypedDict

import h3

from analytics.congestion import congestion_level
from analytics.reports.rows import ReportInput, figure

__all__ = [
    "AREA_SQL",
    "CONGESTION_SQL",
    "AreaRow",
    "SegmentRow",
    "area_rows",
    "congestion_rows",
]

CONGESTION_SQL: Final = """
SELECT bucket, route, direction, from_seq, to_seq, samples, vans, median_travel_s,
       p85_travel_s, median_speed_mps, p85_speed_mps, length_m
FROM segment_speeds
WHERE bucket >= %(lo)s AND bucket < %(hi)s
  AND (%(route)s::text IS NULL OR route = %(route)s)
  AND (%(checkpoint)s::int IS NULL OR from_seq = %(checkpoint)s OR to_seq = %(checkpoint)s)
  AND (%(direction)s::int IS NULL OR direction = %(direction)s)
ORDER BY route, direction, from_seq, bucket
"""

AREA_SQL: Final = """
SELECT bucket, cell, samples, vans, median_speed_mps, p85_speed_mps
FROM area_speeds WHERE bucket >= %(lo)s AND bucket < %(hi)s
ORDER BY cell, bucket
"""


class SegmentRow(TypedDict):
    bucket: str  # ISO 8601 start of the 5-minute bucket
    route: str
    direction: int
    from_seq: int
    to_seq: int
    length_m: float
    samples: int
    vans: int
    median_travel_s: float | None
    p85_travel_s: float | None
    median_speed_kmh: float | None
    p85_speed_kmh: float | None
    freeflow_speed_kmh: float | None
    freeflow_travel_s: float | None
    congestion_level: float | None


class AreaRow(TypedDict):
    bucket: str
    cell: str  # H3 cell (resolution FLEET_ANALYTICS_H3_RESOLUTION)
    lat: float  # the cell's centre
    lon: float
    samples: int
    vans: int
    median_speed_kmh: float | None
    p85_speed_kmh: float | None


def congestion_rows(data: ReportInput) -> list[SegmentRow]:
    out: list[SegmentRow] = []
    for bucket, route, d, fs, ts_, n, vans, med_t, p85_t, med_v, p85_v, length in data.rows:
        ff_speed = data.freeflow.get((route, int(d), int(fs)))
        ff_travel = length / ff_speed if ff_speed else float("nan")
        out.append(
            {
                "bucket": bucket.isoformat(),
                "route": route,
                "direction": int(d),
                "from_seq": int(fs),
                "to_seq": int(ts_),
                "length_m": round(float(length), 1),
                "samples": int(n),
                "vans": int(vans),
                "median_travel_s": figure(med_t),
                "p85_travel_s": figure(p85_t),
                "median_speed_kmh": figure(med_v * 3.6),
                "p85_speed_kmh": figure(p85_v * 3.6),
                "freeflow_speed_kmh": figure(ff_speed * 3.6) if ff_speed else None,
                "freeflow_travel_s": figure(ff_travel),
                "congestion_level": figure(congestion_level(float(med_t), ff_travel)),
            }
        )
    return out


def area_rows(data: ReportInput) -> list[AreaRow]:
    out: list[AreaRow] = []
    for bucket, cell, n, vans, med, p85 in data.rows:
        lat, lon = h3.cell_to_latlng(cell)
        out.append(
            {
                "bucket": bucket.isoformat(),
                "cell": cell,
                "lat": round(lat, 6),
                "lon": round(lon, 6),
                "samples": int(n),
                "vans": int(vans),
                "median_speed_kmh": figure(med * 3.6),
                "p85_speed_kmh": figure(p85 * 3.6),
            }
        )
    return out
