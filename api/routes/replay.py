"""``/api/v1/fleet``: the fleet as it was — at one moment, and as a stream of positions.

* ``GET /fleet/at?t=`` — each van's last stored position at or before ``t`` (within a
  bounded look-back), its status at that moment by the live state's stale rule, and the
  alerts open at ``t``.
* ``GET /fleet/replay?from=&to=`` — stored positions in time order, paged with a cursor,
  bounded in rows per page and in span.

Every query is bounded by ``ts`` on both sides, so TimescaleDB excludes the chunks
outside the window (``positions`` is a hypertable partitioned by ``ts`` there); on plain
PostgreSQL the replay stream reads the ``positions_ts`` b-tree (docs/benchmarks.md,
"Fleet replay queries").
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Final

import psycopg
from fastapi import APIRouter, Query
from psycopg.errors import UndefinedTable

from api.deps import Pool, Settings, Viewer
from api.errors import ApiError
from api.live.alerts import alert_view
from api.live.frames import STATUS_OFFLINE, STATUS_ONLINE, STATUS_STALE
from api.params import checked_route, checked_time

__all__ = ["alerts_at", "fleet_at", "router"]

router = APIRouter(prefix="/fleet", tags=["replay"])

DEFAULT_LOOKBACK_S: Final = 900
MAX_LOOKBACK_S: Final = 3600
MAX_ROUTES: Final = 50
MAX_REPLAY_SPAN: Final = timedelta(hours=6)
DEFAULT_PAGE_ROWS: Final = 10_000
MAX_PAGE_ROWS: Final = 50_000
MAX_ALERTS: Final = 500
# An alert opened longer ago than this is not looked for (it bounds the alerts scan).
ALERT_LOOKBACK: Final = timedelta(days=7)
REPLAY_FIELDS: Final = ("ts", "id", "lat", "lon", "speed", "heading", "route")
CURSOR_RE: Final = re.compile(r"^(\d{1,17})~([A-Za-z0-9][A-Za-z0-9_.-]{0,63})\Z")

RouteList = Annotated[
    list[str] | None,
    Query(description="route codes (repeat, or comma-separated); none: every route"),
]


def _ms(t: datetime) -> int:
    return int(t.timestamp() * 1000)


def _routes(values: list[str] | None) -> list[str] | None:
    if not values:
        return None
    codes = [c for v in values for c in v.split(",") if c]
    if len(codes) > MAX_ROUTES:
        raise ApiError(400, "invalid route code", f"at most {MAX_ROUTES} routes per call")
    checked = [checked_route("route", c) for c in codes]
    return sorted({c for c in checked if c is not None}) or None


def status_at(
    t: datetime, ts: datetime, status: str, status_since: datetime | None, stale_s: float
) -> str:
    """The van's status at ``t`` given its fix at ``ts``: the live state's rule.

    ``offline`` when its last will (the stored ``offline`` status) came after that fix
    and by ``t``; else ``stale`` when the fix is older than ``FLEET_STALE_AFTER_S``;
    else ``online``.  Only a van's latest status change is stored, so an earlier offline
    period shows as ``stale``.
    """
    if status == STATUS_OFFLINE and status_since is not None and ts <= status_since <= t:
        return STATUS_OFFLINE
    return STATUS_STALE if (t - ts).total_seconds() > stale_s else STATUS_ONLINE


_FLEET_AT: Final = """
SELECT * FROM (
    SELECT v.vehicle_id,
           -- a fix without a route code: the van's route by its latest fix that had one
           coalesce(p.route, (
               SELECT q.route FROM positions q
               WHERE q.vehicle_id = v.vehicle_id AND q.ts <= %(t)s AND q.ts > %(since)s
                 AND q.route IS NOT NULL
               ORDER BY q.ts DESC LIMIT 1), v.route) AS route,
           p.ts, p.lat, p.lon, p.speed, p.heading, v.status, v.status_at
    FROM vehicles v
    CROSS JOIN LATERAL (
        SELECT ts, lat, lon, speed, heading, route FROM positions p
        WHERE p.vehicle_id = v.vehicle_id AND p.ts <= %(t)s AND p.ts > %(since)s
        ORDER BY p.ts DESC LIMIT 1
    ) p
) at_t
WHERE %(routes)s::text[] IS NULL OR route = ANY(%(routes)s::text[])
ORDER BY vehicle_id
"""


async def fleet_at(
    conn: psycopg.AsyncConnection[Any],
    t: datetime,
    lookback: timedelta,
    routes: list[str] | None,
    stale_s: float,
) -> list[dict[str, Any]]:
    """Every van with a fix in ``(t - lookback, t]``: V (docs/api.md) at ``t``."""
    cur = await conn.execute(_FLEET_AT, {"t": t, "since": t - lookback, "routes": routes})
    return [
        {
            "id": vid,
            "route": route,
            "ts": _ms(ts),
            "lat": lat,
            "lon": lon,
            "speed": speed,
            "heading": heading,
            "status": status_at(t, ts, status, at, stale_s),
        }
        for vid, route, ts, lat, lon, speed, heading, status, at in await cur.fetchall()
    ]


async def alerts_at(
    conn: psycopg.AsyncConnection[Any], t: datetime, routes: list[str] | None
) -> list[dict[str, Any]]:
    """The alerts open at ``t`` (created by then, not resolved by then), newest first.

    The one place that knows where past alerts live: the ``alerts`` table (created_at,
    resolved_at); without it, none.
    """
    try:
        cur = await conn.execute(
            """SELECT to_jsonb(a) FROM alerts a
               WHERE a.created_at <= %(t)s AND a.created_at > %(since)s
                 AND (a.resolved_at IS NULL OR a.resolved_at > %(t)s)
                 AND (%(routes)s::text[] IS NULL OR a.route = ANY(%(routes)s::text[]))
               ORDER BY a.created_at DESC LIMIT %(limit)s""",
            {"t": t, "since": t - ALERT_LOOKBACK, "routes": routes, "limit": MAX_ALERTS},
        )
        rows = await cur.fetchall()
    except UndefinedTable:
        return []
    return [alert_view(r[0]) for r in rows]


@router.get("/at", summary="The whole fleet (or some routes) at a past moment")
async def at(
    _: Viewer,
    pool: Pool,
    settings: Settings,
    t: Annotated[datetime, Query(description="ISO time")],
    route: RouteList = None,
    lookback_s: Annotated[
        int,
        Query(ge=1, le=MAX_LOOKBACK_S, description="how far back a van's last fix may be"),
    ] = DEFAULT_LOOKBACK_S,
) -> dict[str, Any]:
    moment = checked_time("t", t)
    assert moment is not None
    routes = _routes(route)
    async with pool.connection() as conn:
        vehicles = await fleet_at(
            conn, moment, timedelta(seconds=lookback_s), routes, settings.stale_after_s
        )
        alerts = await alerts_at(conn, moment, routes)
    return {
        "t": _ms(moment),
        "lookback_s": lookback_s,
        "stale_after_s": settings.stale_after_s,
        "routes": routes,
        "vehicles": vehicles,
        "alerts": alerts,
    }


def _cursor(value: str | None, start: datetime, end: datetime) -> tuple[datetime, str] | None:
    if value is None or value == "":
        return None
    m = CURSOR_RE.match(value)
    when = None
    if m:
        when = datetime.fromtimestamp(0, UTC) + timedelta(microseconds=int(m.group(1)))
    if m is None or when is None or not start <= when < end:
        raise ApiError(
            400,
            "invalid cursor",
            "give the `next` of the previous page of the same from/to (it is opaque)",
        )
    return when, m.group(2)


def _cursor_of(ts: datetime, vehicle_id: str) -> str:
    delta = ts - datetime.fromtimestamp(0, UTC)
    micros = (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
    return f"{micros}~{vehicle_id}"


_REPLAY: Final = """
SELECT ts, vehicle_id, lat, lon, speed, heading, route FROM positions
WHERE ts >= %(lo)s AND ts < %(hi)s
  AND (ts, vehicle_id) > (%(after_ts)s, %(after_id)s)
  AND (%(routes)s::text[] IS NULL OR route = ANY(%(routes)s::text[]))
ORDER BY ts, vehicle_id
LIMIT %(limit)s
"""


@router.get("/replay", summary="Stored positions in time order, paged")
async def replay(
    _: Viewer,
    pool: Pool,
    start: Annotated[datetime, Query(alias="from", description="ISO time (inclusive)")],
    end: Annotated[datetime, Query(alias="to", description="ISO time (exclusive)")],
    route: RouteList = None,
    after: Annotated[
        str | None, Query(description="`next` of the previous page (opaque)", max_length=100)
    ] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE_ROWS)] = DEFAULT_PAGE_ROWS,
) -> dict[str, Any]:
    lo, hi = checked_time("from", start), checked_time("to", end)
    assert lo is not None and hi is not None
    if lo >= hi:
        raise ApiError(400, "empty time range", f"from ({lo.isoformat()}) must be before to")
    if hi - lo > MAX_REPLAY_SPAN:
        hours = int(MAX_REPLAY_SPAN.total_seconds() // 3600)
        raise ApiError(400, "time range too long", f"at most {hours} hours per replay")
    routes = _routes(route)
    cursor = _cursor(after, lo, hi)
    after_ts, after_id = cursor if cursor else (lo - timedelta(microseconds=1), "")
    async with pool.connection() as conn:
        cur = await conn.execute(
            _REPLAY,
            {
                "lo": max(lo, after_ts),
                "hi": hi,
                "after_ts": after_ts,
                "after_id": after_id,
                "routes": routes,
                "limit": limit + 1,
            },
        )
        rows = await cur.fetchall()
    more = len(rows) > limit
    rows = rows[:limit]
    return {
        "from": _ms(lo),
        "to": _ms(hi),
        "routes": routes,
        "fields": list(REPLAY_FIELDS),
        "rows": [[_ms(ts), vid, lat, lon, sp, hd, rt] for ts, vid, lat, lon, sp, hd, rt in rows],
        "next": _cursor_of(rows[-1][0], rows[-1][1]) if more else None,
    }
