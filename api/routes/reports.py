"""``/api/v1/reports/*``: the planner reports of :mod:`analytics.reports` as JSON or CSV.

One endpoint per report of the registry (``analytics.reports.PUBLISHED``; roles planner
and admin), with its filters, variant and format as query parameters;
``/congestion/live`` is the war room's map layer (any role).
Values are checked here as the API checks any untrusted input (:mod:`api.params`: the
data horizon, bounded checkpoint numbers, route codes) and a call covers at most
:data:`MAX_REPORT_SPAN`.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import timedelta
from typing import Annotated, Any, Final, Literal

from fastapi import APIRouter, Depends, Query
from fastapi.responses import Response

from analytics import gtfs_realtime
from analytics.congestion import gtfs_congestion_level
from analytics.context import analytics_context
from analytics.reports import (
    MEDIA_TYPES,
    PUBLISHED,
    Report,
    ReportParams,
    render,
    run_report_async,
)
from analytics.reports.params import FILTERS, FORMAT, ROUTE, Parameter
from api.deps import Pool, Viewer, requires
from api.params import checked_route, report_params
from api.routes.gtfs import freeflow_speeds
from api.tokens import Permission

__all__ = ["MAX_REPORT_SPAN", "router"]

router = APIRouter(prefix="/reports", tags=["reports"])

MAX_REPORT_SPAN: Final = timedelta(days=366)
API_FORMAT: Final = "json"


def _params(values: Mapping[str, Any]) -> ReportParams:
    return report_params(values, MAX_REPORT_SPAN)


def _respond(report: Report, rows: Sequence[Mapping[str, Any]], fmt: str) -> Response:
    if fmt == "csv":
        return Response(
            render(rows, "csv", report.columns),
            media_type=MEDIA_TYPES["csv"],
            headers={"Content-Disposition": f'attachment; filename="{report.filename}.csv"'},
        )
    return Response(render(rows, "json"), media_type=MEDIA_TYPES["json"])


def _query(key: str, annotation: Any, default: Any) -> inspect.Parameter:
    return inspect.Parameter(
        key, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation
    )


def _filter(param: Parameter) -> inspect.Parameter:
    """A filter of the registry as a query parameter (same name, help and bounds)."""
    query = Query(alias=param.name, description=param.help, ge=param.minimum, le=param.maximum)
    return _query(param.key, Annotated[param.type | None, query], None)


def _choice(values: Sequence[str], name: str, help: str) -> Any:
    return Annotated[Literal[tuple(values)], Query(alias=name, description=help)]


def _endpoint(report: Report) -> Callable[..., Awaitable[Response]]:
    """``GET /<name>``: the registry's filters, the report's variant and ``format``."""

    async def endpoint(pool: Any, **values: Any) -> Response:
        fmt = values.pop(FORMAT.key)
        variant = report.variant
        chosen = variant.report if variant and values.pop("variant") == variant.value else report
        p = _params(values)
        s = analytics_context().settings
        async with pool.connection() as conn:
            rows = await run_report_async(conn, chosen, p, s.offpeak, s.freeflow_lookback_days)
        return _respond(chosen, rows, fmt)

    params = [_query("pool", Pool, inspect.Parameter.empty)]
    params += [_filter(param) for param in FILTERS]
    if report.variant is not None:
        v = report.variant
        params.append(_query("variant", _choice((v.default, v.value), v.param, v.help), v.default))
    params.append(_query(FORMAT.key, _choice(FORMAT.choices, FORMAT.name, FORMAT.help), API_FORMAT))
    endpoint.__signature__ = inspect.Signature(params, return_annotation=Response)  # type: ignore[attr-defined]
    return endpoint


for _report in PUBLISHED:
    router.add_api_route(
        f"/{_report.name}",
        _endpoint(_report),
        methods=["GET"],
        summary=_report.summary,
        response_class=Response,
        dependencies=[Depends(requires(Permission.PLAN))],
    )


@router.get(
    "/congestion/live",
    summary="Route segments of the last 15 minutes with their congestion level (GeoJSON)",
)
async def congestion_live(
    _: Viewer, pool: Pool, route: Annotated[str | None, Query(description=ROUTE.help)] = None
) -> dict[str, Any]:
    """A map layer: one LineString per segment and direction with recent data."""
    route = checked_route("route", route)
    ctx = analytics_context()
    freeflow = await freeflow_speeds(pool)
    async with pool.connection() as conn:
        live = await (await conn.execute(gtfs_realtime.LIVE_SEGMENTS_SQL)).fetchall()
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
