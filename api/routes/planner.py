"""``/api/v1/planner/*``: what the planner workspace's charts need beyond the reports.

* ``GET /planner/headway-points``: every headway at one checkpoint (the headways chart);
* ``GET /planner/marey``: a route's passages as lines, one per van and trip (the
  time-space diagram).

The figures come from :mod:`analytics.planner` (the same rules as the headway report);
this module checks the parameters like the reports do (:mod:`api.params`), bounds each
call (:data:`MAX_POINTS_SPAN`, :data:`MAX_MAREY_SPAN`, row caps with ``truncated``) and
serialises. Roles planner and admin (permission ``plan``); the workspace's heat maps and
LOS table read ``/api/v1/reports/*`` directly.
"""

from __future__ import annotations

import asyncio
import json
from datetime import datetime, timedelta
from typing import Annotated, Any, Final, Literal

from fastapi import APIRouter, Depends, Query
from fastapi.responses import Response

from analytics.context import analytics_context
from analytics.planner import (
    HEADWAY_POINTS_SQL,
    MAREY_SQL,
    HeadwayPoint,
    MareyRow,
    headway_points,
    marey_lines,
)
from analytics.reports import MEDIA_TYPES, ReportParams, render
from analytics.reports.headways import MAX_HEADWAY
from analytics.reports.params import CHECKPOINT, DIRECTION, FROM, ROUTE, TO
from api.deps import Pool, requires
from api.errors import ApiError
from api.params import report_params
from api.tokens import Permission
from fleet.routes import Route

__all__ = [
    "MAX_MAREY_ROWS",
    "MAX_MAREY_SPAN",
    "MAX_POINTS",
    "MAX_POINTS_SPAN",
    "router",
]

router = APIRouter(
    prefix="/planner", tags=["planner"], dependencies=[Depends(requires(Permission.PLAN))]
)

MAX_POINTS_SPAN: Final = timedelta(days=31)
MAX_POINTS: Final = 100_000
MAX_MAREY_SPAN: Final = timedelta(days=1)
MAX_MAREY_ROWS: Final = 250_000

Format = Annotated[Literal["json", "csv"], Query(alias="format", description="json or csv.")]
RouteQ = Annotated[str, Query(description=ROUTE.help)]
DirectionQ = Annotated[int | None, Query(description=DIRECTION.help, ge=0, le=1)]
FromQ = Annotated[str | None, Query(alias="from", description=FROM.help)]
ToQ = Annotated[str | None, Query(alias="to", description=TO.help)]


def _params(values: dict[str, Any], max_span: timedelta) -> tuple[ReportParams, Route]:
    ctx = analytics_context()
    p = report_params(values, max_span, ": ask day by day")
    assert p.route is not None  # a required parameter
    route = ctx.routes.get(p.route)
    if route is None:
        raise ApiError(
            404, "not found", f"route {p.route!r} is not one of {', '.join(sorted(ctx.routes))}"
        )
    return p, route


def _csv(rows: list[HeadwayPoint] | list[MareyRow], columns: Any, filename: str) -> Response:
    return Response(
        render(rows, "csv", tuple(columns.__annotations__)),
        media_type=MEDIA_TYPES["csv"],
        headers={"Content-Disposition": f'attachment; filename="{filename}.csv"'},
    )


def _json(body: dict[str, Any]) -> Response:
    text = json.dumps(body, ensure_ascii=False, separators=(",", ":"))
    return Response(text, media_type=MEDIA_TYPES["json"])


def _window(p: ReportParams) -> dict[str, str]:
    return {"from": p.start.isoformat(), "to": p.end.isoformat()}


@router.get(
    "/headway-points",
    summary="Every headway at one checkpoint: time, headway, the two vans, bunched/gapped",
    response_class=Response,
)
async def headway_points_endpoint(
    pool: Pool,
    route: RouteQ,
    checkpoint: Annotated[str, Query(description=CHECKPOINT.help)],
    direction: DirectionQ = None,
    start: FromQ = None,
    end: ToQ = None,
    fmt: Format = "json",
) -> Response:
    """A headway belongs to the window of its later passage (as in the headway report);
    ``bunched``/``gapped`` are judged against the route's target headway, else the
    window's median at that checkpoint and direction (``streams[].reference_s``)."""
    values = {"route": route, "checkpoint": checkpoint, "direction": direction}
    p, r = _params({**values, "start": start, "end": end}, MAX_POINTS_SPAN)
    sql = {
        "route": p.route,
        "checkpoint": p.checkpoint,
        "direction": p.direction,
        "lo": p.start - MAX_HEADWAY,
        "hi": p.end,
        "limit": MAX_POINTS + 1,
    }
    async with pool.connection() as conn:
        rows = await (await conn.execute(HEADWAY_POINTS_SQL, sql)).fetchall()
    truncated = len(rows) > MAX_POINTS
    streams, points = await asyncio.to_thread(
        headway_points, rows[:MAX_POINTS], p.start, p.end, r.target_headway_s
    )
    if fmt == "csv":
        return _csv(points, HeadwayPoint, f"headways-{r.code}-{p.checkpoint}")
    body = {
        "route": r.code,
        "checkpoint_seq": p.checkpoint,
        **_window(p),
        "target_s": r.target_headway_s,
        "streams": streams,
        "points": points,
        "truncated": truncated,
    }
    return _json(body)


@router.get(
    "/marey",
    summary="A route's passages as time-space lines, one per van and trip (column-wise)",
    response_class=Response,
)
async def marey_endpoint(
    pool: Pool,
    route: RouteQ,
    direction: DirectionQ = None,
    start: FromQ = None,
    end: ToQ = None,
    fmt: Format = "json",
) -> Response:
    """Distance along the route (the checkpoints' ``dist_m``) against time for every
    passage of ``route`` in [from, to), at most a day per call. Sorted by van, then time;
    ``trip`` numbers each unbroken line (a van's line breaks after
    ``FLEET_ANALYTICS_MAX_TRAVERSAL_S`` without a passage). JSON is column-wise (``t`` in
    epoch ms); CSV one row per passage."""
    values = {"route": route, "direction": direction, "start": start, "end": end}
    p, r = _params(values, MAX_MAREY_SPAN)
    sql = {
        "route": p.route,
        "direction": p.direction,
        "lo": p.start,
        "hi": p.end,
        "limit": MAX_MAREY_ROWS + 1,
    }
    async with pool.connection() as conn:
        rows = await (await conn.execute(MAREY_SQL, sql)).fetchall()
    truncated = len(rows) > MAX_MAREY_ROWS
    max_gap_s = analytics_context().settings.max_traversal_s
    lines = await asyncio.to_thread(marey_lines, rows[:MAX_MAREY_ROWS], r, max_gap_s)
    if fmt == "csv":
        return _csv(lines.rows(), MareyRow, f"marey-{r.code}-{_day(p.start)}")
    body = {
        "route": r.code,
        **_window(p),
        "length_m": round(r.length_m, 1),
        "checkpoints": [
            {"seq": c.seq, "id": c.id, "dist_m": round(c.dist_m, 1)} for c in r.checkpoints
        ],
        "max_gap_s": max_gap_s,
        "passages": len(lines),
        "truncated": truncated,
        **lines.columns(),
    }
    return _json(body)


def _day(t: datetime) -> str:
    return t.strftime("%Y%m%dT%H%M")
