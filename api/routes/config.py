"""``/api/v1/config``: what the war-room page needs to know about this server."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from api.deps import Settings, Viewer

__all__ = ["router"]

router = APIRouter(tags=["config"])


@router.get("/config", summary="Map tiles and live-push timing for clients")
async def config(who: Viewer, settings: Settings) -> dict[str, Any]:
    return {
        "tile_url": settings.tile_url,
        "stale_after_s": settings.stale_after_s,
        "ws_interval_ms": settings.ws_interval_ms,
        "role": who.role.value,
        "permissions": who.permissions,
    }
