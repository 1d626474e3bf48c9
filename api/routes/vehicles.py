"""``/api/v1/vehicles``: latest positions (database merged with live state), tracks, commands."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

import msgspec
from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, Field

from api.commands import BrokerUnavailableError
from api.deps import Commander, Commands, Hub, Pool, Viewer
from api.errors import ApiError
from api.live.frames import STATUS_OFFLINE, STATUS_ONLINE, STATUS_STALE
from api.params import checked_time, checked_vehicle_id, json_body
from fleet.contract import Command, cmd_topic

__all__ = ["router"]

router = APIRouter(prefix="/vehicles", tags=["vehicles"])

MAX_TRACK_POINTS = 50_000
MAX_TRACK_SPAN = timedelta(days=7)


class VehicleOut(BaseModel):
    id: str
    route: str | None
    ts: int = Field(description="epoch ms of the latest fix")
    lat: float
    lon: float
    speed: float | None = Field(description="m/s")
    heading: float | None = Field(description="degrees from north")
    status: str = Field(description="online | stale | offline")


class CommandIn(BaseModel):
    cmd: Literal["set_interval"]
    interval_s: float | None = Field(default=None, gt=0, le=3600)


def _ms(t: datetime) -> int:
    return int(t.timestamp() * 1000)


def _db_status(status: str, ts_ms: int, stale_after_s: float) -> str:
    if status == STATUS_OFFLINE:
        return STATUS_OFFLINE
    age_s = time.time() - ts_ms / 1000
    return STATUS_STALE if age_s > stale_after_s else STATUS_ONLINE


@router.get("", response_model=list[VehicleOut], summary="Every van's latest position")
async def list_vehicles(_: Viewer, pool: Pool, hub: Hub) -> list[dict[str, Any]]:
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT vehicle_id, route, ts, lat, lon, speed, heading, status FROM latest_positions"
        )
        rows = await cur.fetchall()
    stale_after = hub.state.stale_after_s
    merged: dict[str, dict[str, Any]] = {}
    for vid, route, ts, lat, lon, speed, heading, status in rows:
        ts_ms = _ms(ts)
        merged[vid] = {
            "id": vid,
            "route": route,
            "ts": ts_ms,
            "lat": lat,
            "lon": lon,
            "speed": speed,
            "heading": heading,
            "status": _db_status(status, ts_ms, stale_after),
        }
    for van in hub.state.snapshot():  # live state is newer unless the database says so
        known = merged.get(van.id)
        if known is None or van.ts >= known["ts"]:
            merged[van.id] = msgspec.structs.asdict(van)
    return sorted(merged.values(), key=lambda v: v["id"])


@router.get("/{vehicle_id}/track", summary="One van's positions between two times")
async def track(
    vehicle_id: str,
    _: Viewer,
    pool: Pool,
    start: Annotated[
        datetime | None, Query(alias="from", description="ISO time (default: to - 1 h)")
    ] = None,
    end: Annotated[datetime | None, Query(alias="to", description="ISO time (now)")] = None,
    fmt: Annotated[Literal["json", "geojson"], Query(alias="format")] = "json",
) -> dict[str, Any]:
    checked_vehicle_id(vehicle_id)
    end = checked_time("to", end) or datetime.now(UTC)
    start = checked_time("from", start) or end - timedelta(hours=1)
    if start >= end:
        raise ApiError(400, "empty time range", f"from ({start.isoformat()}) must be before to")
    if end - start > MAX_TRACK_SPAN:
        raise ApiError(400, "time range too long", f"at most {MAX_TRACK_SPAN.days} days per call")
    async with pool.connection() as conn:
        cur = await conn.execute("SELECT 1 FROM vehicles WHERE vehicle_id = %s", (vehicle_id,))
        if await cur.fetchone() is None:
            raise ApiError(404, "unknown vehicle", vehicle_id)
        cur = await conn.execute(
            """SELECT ts, lat, lon, speed, heading, route FROM positions
               WHERE vehicle_id = %s AND ts >= %s AND ts < %s ORDER BY ts LIMIT %s""",
            (vehicle_id, start, end, MAX_TRACK_POINTS + 1),
        )
        rows = await cur.fetchall()
    truncated = len(rows) > MAX_TRACK_POINTS
    rows = rows[:MAX_TRACK_POINTS]
    if fmt == "geojson":
        return {
            "type": "Feature",
            "geometry": {"type": "LineString", "coordinates": [[r[2], r[1]] for r in rows]},
            "properties": {
                "vehicle_id": vehicle_id,
                "from": start.isoformat(),
                "to": end.isoformat(),
                "times": [_ms(r[0]) for r in rows],
                "truncated": truncated,
            },
        }
    return {
        "vehicle_id": vehicle_id,
        "from": start.isoformat(),
        "to": end.isoformat(),
        "truncated": truncated,
        "points": [
            {
                "ts": _ms(r[0]),
                "lat": r[1],
                "lon": r[2],
                "speed": r[3],
                "heading": r[4],
                "route": r[5],
            }
            for r in rows
        ],
    }


@router.post(
    "/{vehicle_id}/commands",
    status_code=202,
    summary="Send a command (admin)",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": CommandIn.model_json_schema()}},
        }
    },
)
async def send_command(
    vehicle_id: str, request: Request, who: Commander, commands: Commands
) -> dict[str, Any]:
    """Queued for the van once the broker acknowledged it (202): the van's persistent
    session keeps it until the van is online. The body is read here, after the token
    check (FastAPI reads declared bodies first)."""
    checked_vehicle_id(vehicle_id)
    body = await _command_body(request)
    command = Command(cmd=body.cmd, interval_s=body.interval_s, id=f"{who.name}-{time.time_ns()}")
    try:
        await commands.send(cmd_topic(vehicle_id), msgspec.json.encode(command))
    except BrokerUnavailableError as exc:
        raise ApiError(503, "broker unavailable", str(exc)) from None
    return {"topic": cmd_topic(vehicle_id), "command": msgspec.structs.asdict(command)}


async def _command_body(request: Request) -> CommandIn:
    return await json_body(request, CommandIn)
