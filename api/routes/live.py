"""``/ws/live``: the live websocket (protocol in docs/api.md and team/LIVE_PROTOCOL.md)."""

from __future__ import annotations

import logging
from collections import Counter
from typing import Final

import msgspec
import psycopg
from fastapi import APIRouter, WebSocket
from psycopg_pool import PoolTimeout

from api.auth import Authenticator, AuthError, Caller, Credentials
from api.live.client import CLOSE_TRY_AGAIN_LATER, LiveClient
from api.live.filters import FilterError, LiveFilter, parse_filter_message
from api.live.frames import encode_frame
from api.live.hub import LiveHub, now_ms
from api.sessions import same_origin
from fleet.settings import ApiSettings

__all__ = ["CLOSE_FORBIDDEN", "CLOSE_POLICY", "CLOSE_RATE_LIMITED", "ConnectionQuota", "router"]

log = logging.getLogger(__name__)

router = APIRouter(tags=["live"])

CLOSE_POLICY: Final = 4401  # no or invalid token (or a token in the URL)
CLOSE_FORBIDDEN: Final = 4403  # a session cookie sent from another origin
CLOSE_RATE_LIMITED: Final = 4429  # too many failed authentications from this address
CLOSE_SERVER_ERROR: Final = 1011
CLOSE_REASON_MAX: Final = 120  # bytes a close reason may have (125 minus the code)


class _ErrorFrame(msgspec.Struct, tag_field="type", tag="error"):
    ts: int
    error: str
    detail: str


class ConnectionQuota:
    """Live connections held per token (event loop only: no lock needed)."""

    def __init__(self, per_token: int) -> None:
        self.per_token = per_token
        self.held: Counter[int] = Counter()

    def take(self, token_id: int) -> bool:
        if self.held[token_id] >= self.per_token:
            return False
        self.held[token_id] += 1
        return True

    def give_back(self, token_id: int) -> None:
        self.held[token_id] -= 1
        if self.held[token_id] <= 0:
            del self.held[token_id]


def _close_reason(exc: AuthError) -> str:
    if exc.error in ("token in URL", "token required"):
        reason = f"{exc.error}: send Authorization: Bearer <token>, or a page session cookie"
    else:
        reason = f"{exc.error}: {exc.detail}"
    return reason.encode()[:CLOSE_REASON_MAX].decode(errors="ignore")


async def _authenticate(websocket: WebSocket) -> Caller | None:
    """The caller, or None after closing the socket with the reason (4401, 4429, 1013)."""
    auth: Authenticator = websocket.app.state.auth
    creds = Credentials.of(websocket.headers, websocket.query_params, websocket.cookies)
    host = websocket.client.host if websocket.client else None
    try:
        caller = await auth.authenticate(websocket.app.state.pool, creds, host)
    except AuthError as exc:
        # Accept, then close: a browser sees the close code (a refused HTTP upgrade would
        # reach it only as 1006) and no frame is sent before the close.
        await websocket.accept()
        code = CLOSE_RATE_LIMITED if exc.status == 429 else CLOSE_POLICY
        await websocket.close(code, _close_reason(exc))
        return None
    except (psycopg.Error, PoolTimeout) as exc:
        log.warning("websocket refused: token check failed", extra={"error": str(exc)[:200]})
        await websocket.accept()
        await websocket.close(CLOSE_TRY_AGAIN_LATER, "database unavailable for the token check")
        return None
    # SameSite=Strict keeps the cookie from other sites, but another port of the same
    # host is the same site: a cookie-authenticated socket must also be same-origin.
    if caller.via_session and not same_origin(websocket, missing_ok=True):
        await websocket.accept()
        await websocket.close(CLOSE_FORBIDDEN, "session cookie from another origin")
        return None
    return caller


@router.websocket("/ws/live")
async def live(websocket: WebSocket) -> None:
    hub: LiveHub = websocket.app.state.hub
    settings: ApiSettings = websocket.app.state.settings
    quota: ConnectionQuota = websocket.app.state.ws_quota
    caller = await _authenticate(websocket)
    if caller is None:
        return
    await websocket.accept()
    if len(hub.clients) >= settings.ws_max_clients:
        await websocket.close(CLOSE_TRY_AGAIN_LATER, "too many live clients")
        return
    token_id = caller.info.id
    if not quota.take(token_id):
        hub.metrics.ws_refused_per_token.inc()
        await websocket.close(
            CLOSE_TRY_AGAIN_LATER,
            f"this token already holds {quota.per_token} live connections (per-token cap)",
        )
        return
    try:
        await _serve(websocket, hub, settings)
    finally:
        quota.give_back(token_id)


async def _serve(websocket: WebSocket, hub: LiveHub, settings: ApiSettings) -> None:
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
