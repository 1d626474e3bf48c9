"""``/api/v1/session``: the war-room page trades its token for a session cookie, once.

``POST`` with ``Authorization: Bearer <token>`` sets ``fleet_session`` (HttpOnly,
SameSite=Strict, Secure over https) and returns when it expires; the page then drops
the token. ``DELETE`` clears the cookie. See :mod:`api.sessions`.
"""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response

from api.auth import Authenticator, Caller
from api.deps import BearerScheme, authenticate
from api.errors import ApiError
from api.sessions import clear_cookie_header, cookie_header, queue_cookie

__all__ = ["router"]

router = APIRouter(prefix="/session", tags=["session"])


async def _bearer_caller(request: Request, _bearer: BearerScheme) -> Caller:
    return await authenticate(request)


@router.post("", summary="Trade a token (Authorization: Bearer) for a page session cookie")
async def create_session(
    request: Request, response: Response, caller: Annotated[Caller, Depends(_bearer_caller)]
) -> dict[str, Any]:
    if caller.via_session:
        raise ApiError(
            400, "token required", "send the token itself in 'Authorization: Bearer <token>'"
        )
    auth: Authenticator = request.app.state.auth
    value = auth.new_session(caller)
    secure = request.url.scheme == "https"
    queue_cookie(request.scope, cookie_header(value, auth.session_ttl_s, secure))
    response.headers["Cache-Control"] = "no-store"
    return {
        "role": caller.info.role.value,
        "permissions": caller.info.permissions,
        "expires_at": int(time.time()) + auth.session_ttl_s,
    }


@router.delete("", status_code=204, summary="End the page session (clears the cookie)")
async def end_session(request: Request) -> Response:
    queue_cookie(request.scope, clear_cookie_header(request.url.scheme == "https"))
    return Response(status_code=204)
