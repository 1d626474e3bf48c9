"""``/ws/live``: the live websocket (protocol in docs/api.md and team/LIVE_PROTOCOL.md)."""

from __future__ import annotations

import logging

import msgspec
import psycopg
from fastapi import APIRouter, WebSocket
from psycopg_pool import PoolTimeout

from api.deps import bearer_token
from api.live.client import CLOSE_TRY_AGAIN_LATER, LiveClient
from api.live.filters import FilterError, LiveFilter, parse_filter_message
from api.live.frames import encode_frame
from api.live.hub import LiveHub, now_ms
from api.settings import ApiSettings
from api.tokens import verify

__all__ = ["CLOSE_POLICY", "router"]

log = logging.getLogger(__name__)

router = APIRouter(tags=["live"])

CLOSE_POLICY = 4401  # no or invalid token
CLOSE_SERVER_ERROR = 1011


class _ErrorFrame(msgspec.Struct, tag_field="type", tag="error"):
    ts: int
    error: str
    detail: str


@router.websocket("/ws/live")
async def live(websocket: WebSocket) -> None:
    hub: LiveHub = websocket.app.state.hub
    settings: ApiSettings = websocket.app.state.settings
    secret = bearer_token(
        websocket.headers.get("authorization"), websocket.query_params.get("token")
    )
    try:
        info = await verify(websocket.app.state.pool, secret) if secret else None
    except (psycopg.Error, PoolTimeout) as exc:
        log.warning("websocket refused: token check failed", extra={"error": str(exc)[:200]})
        await websocket.accept()
        await websocket.close(CLOSE_TRY_AGAIN_LATER, "database unavailable for the token check")
        return
    # Accept, then close with 4401: a browser sees the close code (a refused HTTP upgrade
    # would reach it only as 1006) and no frame is sent before the close.
    await websocket.accept()
    if info is None:
        reason = "token required (?token=...)" if not secret else "invalid or revoked token"
        await websocket.close(CLOSE_POLICY, reason)
        return
    if len(hub.clients) >= settings.ws_max_clients:
        await websocket.close(CLOSE_TRY_AGAIN_LATER, "too many live clients")
        return
    client = LiveClient(
        websocket,
        LiveFilter(),
        queue_max=settings.ws_queue_max,
        slow_after_s=settings.ws_slow_client_s,
        on_cut_off=hub.client_cut_off,
        on_sent=hub.frames_sent,
    )
    client.start()
    hub.add(client)
    try:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                break
            raw = message.get("text") or message.get("bytes") or b""
            try:
                hub.set_filter(client, parse_filter_message(raw))
            except FilterError as exc:
                client.offer(
                    encode_frame(_ErrorFrame(ts=now_ms(), error="bad filter", detail=str(exc)))
                )
    except (RuntimeError, OSError):
        pass  # closed underneath us (e.g. cut off as a slow client)
    finally:
        hub.remove(client)
        client.stop()
