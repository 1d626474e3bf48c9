"""``/api/v1/routes``: route lines and checkpoints as a GeoJSON FeatureCollection."""

from __future__ import annotations

import importlib
from functools import cache
from typing import Any

from fastapi import APIRouter

from api.deps import Viewer
from api.errors import ApiError

__all__ = ["router"]

router = APIRouter(prefix="/routes", tags=["routes"])


@cache
def _routes_geojson() -> dict[str, Any]:
    # fleet.routes: load_routes() -> dict[str, Route]; routes_geojson(routes) -> dict
    module = importlib.import_module("fleet.routes")
    geojson: dict[str, Any] = module.routes_geojson(module.load_routes())
    return geojson


@router.get("", summary="Route lines and checkpoints (GeoJSON FeatureCollection)")
async def routes(_: Viewer) -> dict[str, Any]:
    try:
        return _routes_geojson()
    except ModuleNotFoundError as exc:
        raise ApiError(503, "route definitions unavailable", str(exc)) from None
