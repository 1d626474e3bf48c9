"""Checks every HTTP request passes before any route sees it (pure ASGI middleware).

* The path and the query string: at most ``MAX_QUERY_BYTES`` of query, valid UTF-8 once
  percent-decoded, no control characters (``route=A%00B``) → 400 with a message. The
  routes validate their own parameters further (:mod:`api.params`).
* The request body: a declared ``Content-Length`` over the limit is refused with 413 at
  once, without reading a byte; a body without a declared length is counted as it is
  read and refused (413) as soon as it passes the limit. Routes authenticate before
  they read a body (``POST .../commands`` reads it itself, after the token check).
"""

from __future__ import annotations

import re
import unicodedata
from typing import Final
from urllib.parse import parse_qsl, unquote

from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["MAX_QUERY_BYTES", "BodyTooLarge", "RequestGuards", "control_character_in"]

MAX_QUERY_BYTES: Final = 4096
_CONTROL: Final = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def control_character_in(text: str) -> str | None:
    """The first control character of ``text`` (``U+0000``, ``U+2028 LINE SEPARATOR``)."""
    found = _CONTROL.search(text)
    if found is None:
        return None
    ch = found.group()
    name = unicodedata.name(ch, "")
    return f"U+{ord(ch):04X} {name}" if name else f"U+{ord(ch):04X}"


class BodyTooLarge(HTTPException):
    def __init__(self, limit: int) -> None:
        super().__init__(413, f"at most {limit} bytes")


def _refusal(status: int, error: str, detail: str) -> JSONResponse:
    return JSONResponse({"error": error, "detail": detail}, status_code=status)


def _query_problem(raw: bytes) -> str | None:
    if len(raw) > MAX_QUERY_BYTES:
        return f"query string of {len(raw)} bytes; at most {MAX_QUERY_BYTES}"
    try:
        pairs = parse_qsl(
            raw.decode("ascii"), keep_blank_values=True, encoding="utf-8", errors="strict"
        )
    except UnicodeDecodeError:
        return "query string is not percent-encoded UTF-8"
    for name, value in pairs:
        bad = control_character_in(name) or control_character_in(value)
        if bad is not None:
            return f"parameter {name[:40]!r} contains a control character ({bad})"
    return None


def _path_problem(scope: Scope) -> str | None:
    raw = scope.get("raw_path")
    try:
        path = unquote(raw.decode("ascii"), errors="strict") if raw else scope["path"]
    except UnicodeDecodeError:
        return "path is not percent-encoded UTF-8"
    bad = control_character_in(path)
    return None if bad is None else f"path contains a control character ({bad})"


class RequestGuards:
    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        problem = _path_problem(scope) or _query_problem(scope.get("query_string", b""))
        if problem is not None:
            await _refusal(400, "invalid request", problem)(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length")
        if declared is not None:
            if not declared.isdigit():
                await _refusal(400, "invalid request", "Content-Length is not a number")(
                    scope, receive, send
                )
                return
            if int(declared) > self.max_body_bytes:
                response = _refusal(
                    413, "request body too large", f"at most {self.max_body_bytes} bytes"
                )
                response.headers["Connection"] = "close"  # the unread body is not drained
                await response(scope, receive, send)
                return
        await self.app(scope, self._counting(receive), send)

    def _counting(self, receive: Receive) -> Receive:
        limit = self.max_body_bytes
        total = 0

        async def counted() -> Message:
            nonlocal total
            message = await receive()
            if message["type"] == "http.request":
                total += len(message.get("body", b""))
                if total > limit:
                    raise BodyTooLarge(limit)
            return message

        return counted
