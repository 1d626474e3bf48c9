"""``/api/v1/alerts``: bunching, gap, stopped and offline alerts from analytics."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from api.deps import Pool, Viewer
from api.live.alerts import fetch_alerts

__all__ = ["router"]

router = APIRouter(prefix="/alerts", tags=["alerts"])


@router.get("", summary="Alerts, newest first (empty until analytics creates the table)")
async def alerts(
    _: Viewer,
    pool: Pool,
    active: Annotated[bool, Query(description="only alerts that are still active")] = False,
    limit: Annotated[int, Query(ge=1, le=5000)] = 200,
) -> list[dict[str, Any]]:
    found = await fetch_alerts(pool, active, limit)
    return found if found is not None else []
