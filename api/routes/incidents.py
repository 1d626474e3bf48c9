"""``/api/v1/incidents``: the history (JSON, CSV), one incident, acknowledge and resolve.

Reading needs ``watch``; acknowledging and resolving ``work alerts`` (operator, admin),
recorded with the token's name. The body (an optional note) is read after the token check.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Final, Literal

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import Response
from psycopg_pool import AsyncConnectionPool
from pydantic import BaseModel, Field, field_validator

from analytics.reports import MEDIA_TYPES, render
from api.deps import AlertWorker, Pool, Viewer
from api.errors import ApiError
from api.incidents import (
    CSV_COLUMNS,
    Action,
    IncidentQuery,
    act_on_incident,
    fetch_incident,
    fetch_incidents,
    incident_csv_row,
)
from api.params import checked_route, checked_time, json_body
from api.tokens import TokenInfo

__all__ = ["router"]

router = APIRouter(prefix="/incidents", tags=["incidents"])

KINDS: Final = ("bunching", "gap", "stopped", "offline")
MAX_NOTE_CHARS: Final = 500
MAX_ID: Final = 2**63 - 1

IncidentId = Annotated[int, Path(ge=1, le=MAX_ID, description="the incident's id")]


class ActionIn(BaseModel):
    note: str | None = Field(default=None, max_length=MAX_NOTE_CHARS)

    @field_validator("note")
    @classmethod
    def _printable(cls, value: str | None) -> str | None:
        if value is not None and any(ord(c) < 32 and c not in "\n\t" for c in value):
            raise ValueError("control characters are not allowed (newline and tab are)")
        return value.strip() or None if value is not None else None


@router.get("", summary="Incidents, newest first (JSON or CSV)", response_model=None)
async def list_incidents(
    _: Viewer,
    pool: Pool,
    active: Annotated[bool, Query(description="only incidents nobody resolved yet")] = False,
    route: Annotated[str | None, Query(description="route code")] = None,
    kind: Annotated[Literal[KINDS] | None, Query(description="alert kind")] = None,  # type: ignore[valid-type]
    start: Annotated[
        datetime | None, Query(alias="from", description="ISO time: still going at or after it")
    ] = None,
    end: Annotated[
        datetime | None, Query(alias="to", description="ISO time: begun before it")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=5000)] = 200,
    fmt: Annotated[Literal["json", "csv"], Query(alias="format")] = "json",
) -> Response:
    q = IncidentQuery(
        active=active,
        route=checked_route("route", route),
        kind=kind,
        start=checked_time("from", start),
        end=checked_time("to", end),
        limit=limit,
    )
    if q.start is not None and q.end is not None and q.start >= q.end:
        raise ApiError(400, "empty time range", f"from ({q.start.isoformat()}) must be before to")
    found = await fetch_incidents(pool, q)
    if fmt == "csv":
        return Response(
            render([incident_csv_row(i) for i in found], "csv", CSV_COLUMNS),
            media_type=MEDIA_TYPES["csv"],
            headers={"Content-Disposition": 'attachment; filename="incidents.csv"'},
        )
    return Response(render(found, "json"), media_type=MEDIA_TYPES["json"])


@router.get("/{incident_id}", summary="One incident with its history and evidence")
async def get_incident(incident_id: IncidentId, _: Viewer, pool: Pool) -> dict[str, Any]:
    return await fetch_incident(pool, incident_id)


async def _act(
    action: Action, incident_id: int, request: Request, who: TokenInfo, pool: AsyncConnectionPool
) -> dict[str, Any]:
    body = await _action_body(request)
    return await act_on_incident(pool, incident_id, action, who, body.note)


_BODY_DOC: Final[dict[str, Any]] = {
    "requestBody": {
        "required": False,
        "content": {"application/json": {"schema": ActionIn.model_json_schema()}},
    }
}


@router.post(
    "/{incident_id}/acknowledge",
    summary="Acknowledge: someone is on it (operator)",
    openapi_extra=_BODY_DOC,
)
async def acknowledge(
    incident_id: IncidentId, request: Request, who: AlertWorker, pool: Pool
) -> dict[str, Any]:
    """409 when it is already acknowledged or resolved (the detail says by whom)."""
    return await _act("acknowledge", incident_id, request, who, pool)


@router.post(
    "/{incident_id}/resolve",
    summary="Resolve: dealt with (operator); a later reoccurrence opens a new incident",
    openapi_extra=_BODY_DOC,
)
async def resolve(
    incident_id: IncidentId, request: Request, who: AlertWorker, pool: Pool
) -> dict[str, Any]:
    """409 when it is already resolved (by a person, or by the system when it cleared)."""
    return await _act("resolve", incident_id, request, who, pool)


async def _action_body(request: Request) -> ActionIn:
    return await json_body(request, ActionIn, empty=ActionIn())
