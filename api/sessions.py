"""Page sessions: a token traded once for an HttpOnly, SameSite=Strict cookie.

The war-room page gets its token from the address bar (``#token=``), sends it once in
``Authorization: Bearer`` to ``POST /api/v1/session`` and forgets it; from then on the
browser sends the ``fleet_session`` cookie, which page scripts cannot read.

The cookie is ``v1.<token id>.<expiry epoch s>.<mac>``, with the MAC an HMAC-SHA256 keyed
by the token's stored SHA-256 digest. So the cookie carries no secret, any API replica
checks it (no session store, no shared key to configure), it dies with its token when
the token is revoked, and it survives API restarts. A session has its token's role
(looked up on every request, so a changed or revoked token takes effect at once). A
request that changes something through a session (an operator acknowledging an
incident) must also come from this server's own page: SameSite=Strict keeps the cookie
from other sites, and :func:`same_origin` refuses other origins of the same site
(another port of the same host), so no cross-site request can act with it.

A session past half its lifetime is renewed on the next authenticated response
(:class:`SessionCookieWriter`), so a war-room screen that stays open stays signed in.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from dataclasses import dataclass
from typing import Final
from urllib.parse import urlsplit

from starlette.datastructures import MutableHeaders
from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = [
    "SESSION_COOKIE",
    "SessionCookieWriter",
    "SessionValue",
    "clear_cookie_header",
    "cookie_header",
    "issue",
    "mac_matches",
    "parse",
    "queue_cookie",
    "same_origin",
]

SESSION_COOKIE: Final = "fleet_session"
VERSION: Final = "v1"
PENDING_SCOPE_KEY: Final = "fleet.session_cookie"
MAX_COOKIE_CHARS: Final = 200
_MAX_ID: Final = 2**63


@dataclass(frozen=True, slots=True)
class SessionValue:
    token_id: int
    expires: int  # epoch seconds
    mac: str


def _mac(token_id: int, expires: int, token_digest: bytes) -> str:
    msg = f"fleet-session|{VERSION}|{token_id}|{expires}".encode()
    raw = hmac.new(token_digest, msg, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def issue(token_id: int, token_digest: bytes, ttl_s: int, now: float | None = None) -> str:
    """A cookie value for the token with this id and stored digest, valid ``ttl_s``."""
    expires = int(now if now is not None else time.time()) + ttl_s
    return f"{VERSION}.{token_id}.{expires}.{_mac(token_id, expires, token_digest)}"


def parse(value: str) -> SessionValue | None:
    """The parts of a well-formed cookie value, or None (nothing is looked up)."""
    if len(value) > MAX_COOKIE_CHARS:
        return None
    parts = value.split(".")
    if len(parts) != 4 or parts[0] != VERSION:
        return None
    _, token_id, expires, mac = parts
    if not (token_id.isdecimal() and expires.isdecimal() and len(expires) <= 12 and mac):
        return None
    if len(token_id) > 19 or int(token_id) >= _MAX_ID:
        return None
    return SessionValue(int(token_id), int(expires), mac)


def mac_matches(session: SessionValue, token_digest: bytes) -> bool:
    expected = _mac(session.token_id, session.expires, token_digest)
    return hmac.compare_digest(expected.encode(), session.mac.encode())


def cookie_header(value: str, max_age_s: int, secure: bool) -> str:
    attrs = f"{SESSION_COOKIE}={value}; Max-Age={max_age_s}; Path=/; HttpOnly; SameSite=Strict"
    return attrs + ("; Secure" if secure else "")


def clear_cookie_header(secure: bool) -> str:
    return cookie_header("", 0, secure)


def queue_cookie(scope: Scope, header_value: str) -> None:
    """Ask :class:`SessionCookieWriter` to add this ``Set-Cookie`` to the response."""
    pending = scope.get(PENDING_SCOPE_KEY)
    if isinstance(pending, list):
        pending.append(header_value)


class SessionCookieWriter:
    """Pure ASGI: adds the ``Set-Cookie`` headers queued during a request to its response.

    Works for every response type (FastAPI merges a dependency's cookies only into
    responses it builds itself, not into a returned ``Response``).
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        pending: list[str] = []
        scope[PENDING_SCOPE_KEY] = pending

        async def send_with_cookies(message: Message) -> None:
            if message["type"] == "http.response.start" and pending:
                headers = MutableHeaders(scope=message)
                for value in pending:
                    headers.append("set-cookie", value)
            await send(message)

        await self.app(scope, receive, send_with_cookies)


def same_origin(conn: HTTPConnection, *, missing_ok: bool = False) -> bool:
    """The browser's ``Origin`` names this server (the Host it was sent to).

    ``missing_ok``: a client that sends no Origin is not a browser page (websocket
    upgrades from scripts); for a request that changes something via a cookie, a
    missing Origin is refused.
    """
    origin = conn.headers.get("origin")
    if origin is None:
        return missing_ok
    return urlsplit(origin).netloc.lower() == conn.headers.get("host", "").lower()
