"""``/api/v1/reports/*``: headway, congestion and service reports as JSON or CSV."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from fastapi.responses import Response

from analytics import gtfs_realtime, reports
from analytics.congestion import gtfs_congestion_level
from analytics.context import analytics_context
from api.deps import Pool
from api.errors import ApiError
from api.params import checked_checkpoint, checked_route, checked_time
from api.routes.gtfs import freeflow_speeds

__all__ = ["router"]

router = APIRouter(prefix="/api/v1/reports", tags=["reports"])

MAX_REPORT_SPAN = timedelta(days=366)

Route = Annotated[str | None, Query(description="route code, e.g. B")]
Checkpoint = Annotated[
    str | None, Query(description="checkpoint sequence number or id (e.g. 12 or B-012)")
]
Direction = Annotated[int | None, Query(ge=0, le=1, description="0 outbound, 1 return")]
From = Annotated[str | None, Query(alias="from", description="ISO 8601; default: 24 h ago")]
To = Annotated[str | None, Query(description="ISO 8601; default: now")]
Format = Annotated[Literal["json", "csv"], Query(description="json or csv")]


def _time(name: str, value: str | None, default: datetime) -> datetime:
    try:
        parsed = reports.parse_time(value, default)
    except reports.ReportError as exc:
        raise ApiError(400, "bad report parameters", str(exc)) from None
    checked = checked_time(name, parsed) if value else parsed
    assert checked is not None
    return checked


def _params(
    route: str | None,
    checkpoint: str | None,
    direction: int | None,
    start: str | None,
    end: str | None,
    by_hour: bool = False,
) -> reports.ReportParams:
    ctx = analytics_context()
    end_t = _time("to", end, datetime.now(UTC))
    start_t = _time("from", start, end_t - timedelta(days=1))
    if end_t - start_t > MAX_REPORT_SPAN:
        raise ApiError(400, "time range too long", f"at most {MAX_REPORT_SPAN.days} days per call")
    try:
        return reports.ReportParams(
            start=start_t,
            end=end_t,
            route=checked_route("route", route),
            checkpoint=reports.ReportParams.checkpoint_seq(
                checked_checkpoint("checkpoint", checkpoint)
            ),
            direction=direction,
            by_hour=by_hour,
            timezone=ctx.settings.timezone,
            targets=ctx.targets,
        )
    except reports.ReportError as exc:
        raise ApiError(400, "bad report parameters", str(exc)) from None


def _respond(rows: list[dict[str, Any]], fmt: str, name: str) -> Response:
    if fmt == "csv":
        return Response(
            reports.render(rows, "csv"),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="{name}.csv"'},
        )
    return Response(reports.render(rows, "json"), media_type="application/json")


async def _fetch(pool: Pool, query: str, params: dict[str, Any]) -> list[Any]:
    async with pool.connection() as conn:
        cur = await conn.execute(query, params)
        return list(await cur.fetchall())


@router.get("/headways", summary="Headway regularity per route, direction and checkpoint")
async def headways(
    pool: Pool,
    route: Route = None,
    checkpoint: Checkpoint = None,
    direction: Direction = None,
    start: From = None,
    to: To = None,
    by: Annotated[
        Literal["window", "hour"], Query(description="one row per window or per local hour")
    ] = "window",
    format: Format = "json",
) -> Response:
    p = _params(route, checkpoint, direction, start, to, by_hour=by == "hour")
    rows = await _fetch(pool, reports.HEADWAY_PASSAGES_SQL, reports.headway_params(p))
    return _respond(reports.headway_rows(rows, p), format, "headways")


@router.get("/congestion", summary="Segment travel times, speeds and congestion per 5 minutes")
async def congestion(
    pool: Pool,
    route: Route = None,
    checkpoint: Checkpoint = None,
    direction: Direction = None,
    start: From = None,
    to: To = None,
    level: Annotated[
        Literal["segment", "area"], Query(description="route segments or H3 cells")
    ] = "segment",
    format: Format = "json",
) -> Response:
    p = _params(route, checkpoint, direction, start, to)
    s = analytics_context().settings
    if level == "area":
        rows = await _fetch(pool, reports.AREA_SQL, reports.congestion_params(p))
        return _respond(reports.area_rows(rows), format, "area-speeds")
    rows = await _fetch(pool, reports.CONGESTION_SQL, reports.congestion_params(p))
    ff = await _fetch(
        pool,
        reports.FREEFLOW_SQL,
        reports.freeflow_params(p, s.offpeak, s.freeflow_lookback_days),
    )
    return _respond(reports.congestion_rows(rows, ff), format, "congestion")


@router.get(
    "/congestion/live",
    summary="Route segments of the last 15 minutes with their congestion level (GeoJSON)",
)
async def congestion_live(pool: Pool, route: Route = None) -> dict[str, Any]:
    """A map layer: one LineString per segment and direction with recent data."""
    route = checked_route("route", route)
    ctx = analytics_context()
    freeflow = await freeflow_speeds(pool)
    live = await _fetch(pool, gtfs_realtime.LIVE_SEGMENTS_SQL, {})
    levels = gtfs_realtime.segment_levels(live, freeflow)
    features: list[dict[str, Any]] = []
    for code, d, from_seq, med_t, length in live:
        r = ctx.routes.get(code)
        if r is None or (route and code != route):
            continue
        step = 1 if int(d) == 0 else -1
        by_seq = {c.seq: c for c in r.checkpoints}
        a, b = by_seq.get(int(from_seq)), by_seq.get(int(from_seq) + step)
        if a is None or b is None:
            continue
        lo, hi = sorted((a.dist_m, b.dist_m))
        inner = [float(x) for x in r.cum_m if lo < x < hi]
        lat, lon = r.position_at([lo, *inner, hi])
        coords = [[round(float(x), 6), round(float(y), 6)] for x, y in zip(lon, lat, strict=True)]
        level = levels.get((code, int(d), int(from_seq)))
        features.append(
            {
                "type": "Feature",
                "geometry": {"type": "LineString", "coordinates": coords},
                "properties": {
                    "route": code,
                    "direction": int(d),
                    "from_seq": int(from_seq),
                    "to_seq": int(from_seq) + step,
                    "median_speed_kmh": round(length / med_t * 3.6, 1) if med_t else None,
                    "congestion_level": None if level is None else round(level, 3),
                    "gtfs_congestion": gtfs_congestion_level(
                        float("nan") if level is None else level
                    ),
                },
            }
        )
    return {"type": "FeatureCollection", "features": features}


@router.get("/service", summary="Vans in service and vehicle-km per route per hour")
async def service(
    pool: Pool,
    route: Route = None,
    checkpoint: Checkpoint = None,
    direction: Direction = None,
    start: From = None,
    to: To = None,
    format: Format = "json",
) -> Response:
    p = _params(route, checkpoint, direction, start, to)
    rows = await _fetch(pool, reports.SERVICE_SQL, reports.congestion_params(p))
    return _respond(reports.service_rows(rows), format, "service")
