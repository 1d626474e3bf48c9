"""``/healthz`` (process up), ``/readyz`` (broker and database), ``/metrics`` (Prometheus).

``/metrics`` is on ``metrics_router``: included (behind a token, any role) unless
``FLEET_API_METRICS_PORT`` puts the metrics on a listener of their own.
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST

from api.deps import Feed, Metrics, Pool, Viewer

__all__ = ["metrics_router", "router"]

router = APIRouter(tags=["health"])
metrics_router = APIRouter(tags=["health"])

DB_CHECK_TIMEOUT_S = 2.0


@router.get("/healthz", summary="The process is up")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", summary="Connected to the broker and the database")
async def readyz(pool: Pool, feed: Feed) -> Any:
    problems: dict[str, str] = {}
    if not feed.connected.is_set():
        problems["broker"] = feed.last_error or "not connected"
    try:
        async with asyncio.timeout(DB_CHECK_TIMEOUT_S):
            async with pool.connection(timeout=DB_CHECK_TIMEOUT_S) as conn:
                await conn.execute("SELECT 1")
    except Exception as exc:  # any failure means not ready; the reason goes to the caller
        problems["database"] = f"{type(exc).__name__}: {str(exc).strip()[:200]}"
    if problems:
        return JSONResponse({"error": "not ready", "detail": problems}, status_code=503)
    return {"status": "ready"}


@metrics_router.get("/metrics", summary="Prometheus metrics (any API token)")
async def metrics(_: Viewer, metrics: Metrics) -> Response:
    return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)
