"""Incidents for clients: the view ``I`` (docs/api.md), the history query, and an
operator's acknowledge and resolve.

The analytics loop opens, updates and auto-resolves incidents (:mod:`analytics.incidents`);
here a human acknowledges or resolves one. Each change is a row of ``incident_events`` in
the same transaction, which the live poller (:mod:`api.live.incidents`) pushes to every
page.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, Literal

from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from api.errors import ApiError
from api.tokens import TokenInfo

__all__ = [
    "CSV_COLUMNS",
    "INCIDENT_COLUMNS",
    "IncidentQuery",
    "act_on_incident",
    "fetch_incident",
    "fetch_incidents",
    "incident_csv_row",
    "incident_view",
]

#: The columns :func:`incident_view` reads, in order (``i`` is ``incidents``).
INCIDENT_COLUMNS: Final = """
    i.id, i.kind, i.route, i.direction, i.vehicle_id, i.vans, i.active_vans, i.lat, i.lon,
    i.started_at, i.ended_at,
    extract(epoch FROM coalesce(i.ended_at, now()) - i.started_at)::float8,
    i.acknowledged_at, i.acknowledged_by, i.acknowledge_note,
    i.resolved_at, i.resolved_by, i.resolved_by_token, i.resolve_note"""
N_COLUMNS: Final = 19

CSV_COLUMNS: Final = (
    "id",
    "kind",
    "route",
    "direction",
    "vehicle_id",
    "vans",
    "state",
    "started_at",
    "ended_at",
    "duration_s",
    "acknowledged_at",
    "acknowledged_by",
    "acknowledge_note",
    "resolved_at",
    "resolved_by",
    "auto_resolved",
    "resolve_note",
)


def _ms(t: datetime | None) -> int | None:
    return None if t is None else int(t.timestamp() * 1000)


def incident_view(row: tuple[Any, ...]) -> dict[str, Any]:
    """I from one row of :data:`INCIDENT_COLUMNS` (times epoch ms)."""
    (
        iid,
        kind,
        route,
        direction,
        vehicle_id,
        vans,
        active_vans,
        lat,
        lon,
        started,
        ended,
        duration_s,
        acked_at,
        acked_by,
        ack_note,
        resolved_at,
        resolved_by,
        resolved_by_token,
        resolve_note,
    ) = row[:N_COLUMNS]
    state = "resolved" if resolved_at else "acknowledged" if acked_at else "open"
    return {
        "id": iid,
        "kind": kind,
        "route": route,
        "direction": direction,
        "vehicle_id": vehicle_id,
        "vans": list(vans),
        "active_vans": list(active_vans),
        "state": state,
        "started_at": _ms(started),
        "ended_at": _ms(ended),
        "duration_s": round(duration_s),
        "lat": lat,
        "lon": lon,
        "acknowledged_at": _ms(acked_at),
        "acknowledged_by": acked_by,
        "acknowledge_note": ack_note,
        "resolved_at": _ms(resolved_at),
        "resolved_by": resolved_by,
        "auto_resolved": resolved_at is not None and resolved_by_token is None,
        "resolve_note": resolve_note,
    }


def incident_csv_row(view: dict[str, Any]) -> dict[str, Any]:
    """One CSV row: times ISO 8601 (UTC), the vans space-separated."""
    row: dict[str, Any] = {k: view[k] for k in CSV_COLUMNS if k in view}
    for k in ("started_at", "ended_at", "acknowledged_at", "resolved_at"):
        ms = view[k]
        row[k] = None if ms is None else _utc_iso(ms)
    row["vans"] = " ".join(view["vans"])
    return row


def _utc_iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="seconds")


@dataclass(frozen=True)
class IncidentQuery:
    active: bool = False
    route: str | None = None
    kind: str | None = None
    start: datetime | None = None  # incidents that lasted into [start, end)
    end: datetime | None = None
    limit: int = 200


async def fetch_incidents(pool: AsyncConnectionPool, q: IncidentQuery) -> list[dict[str, Any]]:
    """Newest first; ``start``/``end`` keep the incidents whose condition overlapped them."""
    where = ["TRUE"]
    args: list[Any] = []
    if q.active:
        where.append("i.resolved_at IS NULL")
    if q.route is not None:
        where.append("i.route = %s")
        args.append(q.route)
    if q.kind is not None:
        where.append("i.kind = %s")
        args.append(q.kind)
    if q.end is not None:
        where.append("i.started_at < %s")
        args.append(q.end)
    if q.start is not None:
        where.append("(i.ended_at IS NULL OR i.ended_at >= %s)")
        args.append(q.start)
    sql = (
        f"SELECT {INCIDENT_COLUMNS} FROM incidents i WHERE {' AND '.join(where)}"
        " ORDER BY i.started_at DESC, i.id DESC LIMIT %s"
    )
    async with pool.connection() as conn:
        cur = await conn.execute(sql.encode(), [*args, q.limit])
        return [incident_view(r) for r in await cur.fetchall()]


async def _one(conn: AsyncConnection[Any], incident_id: int) -> dict[str, Any] | None:
    cur = await conn.execute(
        f"SELECT {INCIDENT_COLUMNS} FROM incidents i WHERE i.id = %s".encode(), (incident_id,)
    )
    row = await cur.fetchone()
    return None if row is None else incident_view(row)


async def fetch_incident(pool: AsyncConnectionPool, incident_id: int) -> dict[str, Any]:
    """I with its ``events`` (the history, oldest first) and ``alerts`` (the evidence: one
    row per van or van pair, as ``/api/v1/alerts`` gives them); 404 if unknown."""
    async with pool.connection() as conn:
        view = await _one(conn, incident_id)
        if view is None:
            raise ApiError(404, "unknown incident", incident_id)
        cur = await conn.execute(
            "SELECT id, at, event, actor, note, vans FROM incident_events"
            " WHERE incident_id = %s ORDER BY id",
            (incident_id,),
        )
        view["events"] = [
            {"id": i, "at": _ms(at), "event": e, "actor": who, "note": note, "vans": list(vans)}
            for i, at, e, who, note, vans in await cur.fetchall()
        ]
        cur = await conn.execute(
            """SELECT id, kind, route, direction, vehicle_id, other_vehicle_id, lat, lon,
                      created_at, resolved_at, detail
               FROM alerts WHERE incident_id = %s ORDER BY id""",
            (incident_id,),
        )
        view["alerts"] = [
            {
                "id": aid,
                "kind": kind,
                "route": route,
                "direction": direction,
                "vehicle_id": vid,
                "other_vehicle_id": other,
                "lat": lat,
                "lon": lon,
                "created_at": _ms(created),
                "resolved_at": _ms(resolved),
                "detail": detail,
            }
            for aid, kind, route, direction, vid, other, lat, lon, created, resolved, detail in (
                await cur.fetchall()
            )
        ]
    return view


Action = Literal["acknowledge", "resolve"]


async def act_on_incident(
    pool: AsyncConnectionPool,
    incident_id: int,
    action: Action,
    who: TokenInfo,
    note: str | None,
) -> dict[str, Any]:
    """An operator acknowledges or resolves; 404 unknown, 409 when already done."""
    async with pool.connection() as conn, conn.transaction():
        cur = await conn.execute(
            """SELECT acknowledged_at, acknowledged_by, resolved_at, resolved_by
               FROM incidents WHERE id = %s FOR UPDATE""",
            (incident_id,),
        )
        row = await cur.fetchone()
        if row is None:
            raise ApiError(404, "unknown incident", incident_id)
        acked_at, acked_by, resolved_at, resolved_by = row
        if resolved_at is not None:
            raise ApiError(
                409,
                "incident already resolved",
                f"resolved by {resolved_by} at {resolved_at.isoformat(timespec='seconds')}",
            )
        if action == "acknowledge" and acked_at is not None:
            raise ApiError(
                409,
                "incident already acknowledged",
                f"acknowledged by {acked_by} at {acked_at.isoformat(timespec='seconds')}",
            )
        if action == "acknowledge":
            sql = """UPDATE incidents SET acknowledged_at = now(), acknowledged_by = %s,
                            acknowledged_by_token = %s, acknowledge_note = %s
                     WHERE id = %s RETURNING active_vans"""
            event = "acknowledged"
        else:
            sql = """UPDATE incidents SET resolved_at = now(), resolved_by = %s,
                            resolved_by_token = %s, resolve_note = %s
                     WHERE id = %s RETURNING active_vans"""
            event = "resolved"
        cur = await conn.execute(sql.encode(), (who.name, who.id, note, incident_id))
        vans = await cur.fetchone()
        await conn.execute(
            "INSERT INTO incident_events (incident_id, event, actor, note, vans)"
            " VALUES (%s, %s, %s, %s, %s)",
            (incident_id, event, who.name, note, vans[0] if vans else []),
        )
        view = await _one(conn, incident_id)
    assert view is not None
    return view
