"""The service report: per route and hour, vans in service (with at least one checkpoint
passage), vehicle-km (sum of checkpoint-to-checkpoint traversals) and passages."""

from __future__ import annotations

from typing import Final, TypedDict

from analytics.reports.rows import ReportInput

__all__ = ["SERVICE_SQL", "ServiceRow", "service_rows"]

SERVICE_SQL: Final = """
WITH pas AS (
    SELECT route, date_trunc('hour', ts) AS hour, count(DISTINCT vehicle_id) AS vans,
           count(*) AS passages
    FROM passages
    WHERE ts >= %(lo)s AND ts < %(hi)s AND (%(route)s::text IS NULL OR route = %(route)s)
      AND (%(checkpoint)s::int IS NULL OR checkpoint_seq = %(checkpoint)s)
      AND (%(direction)s::int IS NULL OR direction = %(direction)s)
    GROUP BY 1, 2
), km AS (
    SELECT route, date_trunc('hour', ts) AS hour, sum(length_m) / 1000.0 AS vehicle_km
    FROM segment_traversals
    WHERE ts >= %(lo)s AND ts < %(hi)s AND (%(route)s::text IS NULL OR route = %(route)s)
      AND (%(direction)s::int IS NULL OR direction = %(direction)s)
    GROUP BY 1, 2
)
SELECT pas.route, pas.hour, pas.vans, coalesce(km.vehicle_km, 0), pas.passages
FROM pas LEFT JOIN km USING (route, hour)
ORDER BY pas.route, pas.hour
"""


class ServiceRow(TypedDict):
    route: str
    hour: str  # ISO 8601 start of the hour
    active_vans: int
    vehicle_km: float
    passages: int


def service_rows(data: ReportInput) -> list[ServiceRow]:
    return [
        {
            "route": r,
            "hour": hour.isoformat(),
            "active_vans": int(vans),
            "vehicle_km": round(float(km), 3),
            "passages": int(n),
        }
        for r, hour, vans, km, n in data.rows
    ]
