"""GTFS feeds: ``/gtfs-rt/vehicle-positions.pb`` (GTFS-realtime VehiclePositions)."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Final

from fastapi import APIRouter
from fastapi.responses import Response

from analytics import gtfs_realtime
from analytics.congestion import FREEFLOW_SQL, FreeFlow, freeflow_by_segment, freeflow_params
from analytics.context import analytics_context
from api.deps import Pool

__all__ = ["freeflow_speeds", "router"]

router = APIRouter(tags=["gtfs"])

PROTOBUF: Final = "application/x-protobuf"
FREEFLOW_TTL_S: Final = 600.0
_freeflow_cache: dict[int, tuple[float, FreeFlow]] = {}


async def freeflow_speeds(pool: Pool) -> FreeFlow:
    """Free-flow speeds per segment, recomputed at most every 10 minutes (per pool)."""
    cached = _freeflow_cache.get(id(pool))
    if cached is not None and time.monotonic() - cached[0] < FREEFLOW_TTL_S:
        return cached[1]
    s = analytics_context().settings
    params = freeflow_params(
        datetime.now(UTC), None, s.offpeak, s.freeflow_lookback_days, s.timezone
    )
    async with pool.connection() as conn:
        cur = await conn.execute(FREEFLOW_SQL, params)
        value = freeflow_by_segment(await cur.fetchall())
    _freeflow_cache[id(pool)] = (time.monotonic(), value)
    return value


@router.get(
    "/gtfs-rt/vehicle-positions.pb",
    summary="GTFS-realtime VehiclePositions (protobuf) of the vans seen in the last hour",
    response_class=Response,
)
async def vehicle_positions(pool: Pool) -> Response:
    ctx = analytics_context()
    freeflow = await freeflow_speeds(pool)
    async with pool.connection() as conn:
        cur = await conn.execute(
            gtfs_realtime.VANS_SQL,
            {"max_age_s": gtfs_realtime.MAX_AGE_S},
        )
        vans = await cur.fetchall()
        cur = await conn.execute(gtfs_realtime.LIVE_SEGMENTS_SQL)
        live = await cur.fetchall()
    levels = gtfs_realtime.segment_levels(live, freeflow)
    states = gtfs_realtime.van_states(vans, ctx.lines, levels)
    body = gtfs_realtime.build_vehicle_positions(states, time.time())
    return Response(body, media_type=PROTOBUF)
