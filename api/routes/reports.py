"""``/api/v1/reports/*``: headway, congestion and service reports as JSON or CSV."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from fastapi.responses import Response

from api.deps import Pool
from api.errors import ApiError
from ingest.analytics import reports
from ingest.analytics.context import analytics_context

__all__ = ["router"]

router = APIRouter(prefix="/api/v1/reports", tags=["reports"])

Route = Annotated[str | None, Query(description="route code, e.g. B")]
Checkpoint = Annotated[
    str | None, Query(description="checkpoint sequence number or id (e.g. 12 or B-012)")
]
Direction = Annotated[int | None, Query(ge=0, le=1, description="0 outbound, 1 return")]
From = Annotated[str | None, Query(alias="from", description="ISO 8601; default: 24 h ago")]
To = Annotated[str | None, Query(description="ISO 8601; default: now")]
Format = Annotated[Literal["json", "csv"], Query(description="json or csv")]


def _params(
    route: str | None,
    checkpoint: str | None,
    direction: int | None,
    start: str | None,
    end: str | None,
    by_hour: bool = False,
) -> reports.ReportParams:
    ctx = analytics_context()
    now = datetime.now(UTC)
    try:
        end_t = reports.parse_time(end, now)
        return reports.ReportParams(
            start=reports.parse_time(start, end_t - timedelta(days=1)),
            end=end_t,
            route=route,
            checkpoint=reports.ReportParams.checkpoint_seq(checkpoint),
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
