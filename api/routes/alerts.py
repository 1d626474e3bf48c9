"""``/api/v1/alerts``: the evidence behind the incidents, one row per van or van pair."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from api.deps import Pool, Viewer
from api.live.alerts import fetch_alerts

__all__ = ["router"]

router = APIRouter(prefix="/alerts", tags=["alerts"])


@router.get(
    "",
    summary="Alert conditions, newest first (the evidence; operators work /incidents)",
)
async def alerts(
    _: Viewer,
    pool: Pool,
    active: Annotated[bool, Query(description="only conditions that still hold")] = False,
    limit: Annotated[int, Query(ge=1, le=5000)] = 200,
) -> list[dict[str, Any]]:
    return await fetch_alerts(pool, active, limit)
