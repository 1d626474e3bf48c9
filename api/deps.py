"""Request dependencies: the resources opened in the lifespan, and token checks."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import APIKeyCookie, HTTPAuthorizationCredentials, HTTPBearer
from psycopg_pool import AsyncConnectionPool

from api.auth import Authenticator, AuthError, Caller, Credentials
from api.commands import CommandSender
from api.errors import ApiError
from api.live.hub import LiveHub
from api.live.mqtt_feed import MqttFeed
from api.metrics import ApiMetrics
from api.sessions import SESSION_COOKIE, clear_cookie_header, cookie_header, queue_cookie
from api.tokens import Role, TokenInfo
from fleet.settings import ApiSettings

__all__ = [
    "Admin",
    "BearerScheme",
    "Commands",
    "Feed",
    "Hub",
    "Metrics",
    "Pool",
    "Settings",
    "Viewer",
    "authenticate",
    "client_host",
    "require_admin",
    "require_viewer",
]


def get_pool(request: Request) -> AsyncConnectionPool:
    pool: AsyncConnectionPool = request.app.state.pool
    return pool


def get_hub(request: Request) -> LiveHub:
    hub: LiveHub = request.app.state.hub
    return hub


def get_feed(request: Request) -> MqttFeed:
    feed: MqttFeed = request.app.state.feed
    return feed


def get_commands(request: Request) -> CommandSender:
    commands: CommandSender = request.app.state.commands
    return commands


def get_settings(request: Request) -> ApiSettings:
    settings: ApiSettings = request.app.state.settings
    return settings


def get_metrics(request: Request) -> ApiMetrics:
    metrics: ApiMetrics = request.app.state.metrics
    return metrics


Pool = Annotated[AsyncConnectionPool, Depends(get_pool)]
Hub = Annotated[LiveHub, Depends(get_hub)]
Feed = Annotated[MqttFeed, Depends(get_feed)]
Commands = Annotated[CommandSender, Depends(get_commands)]
Settings = Annotated[ApiSettings, Depends(get_settings)]
Metrics = Annotated[ApiMetrics, Depends(get_metrics)]


_bearer_scheme = HTTPBearer(auto_error=False, description="an API token (fleet token create)")
_session_scheme = APIKeyCookie(
    name=SESSION_COOKIE, auto_error=False, description="page session (POST /api/v1/session)"
)
BearerScheme = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer_scheme)]
SessionScheme = Annotated[str | None, Depends(_session_scheme)]


def client_host(request: Request) -> str | None:
    return request.client.host if request.client else None


async def authenticate(request: Request) -> Caller:
    """The caller, or an ``ApiError`` (400 token in URL, 401, 429 with ``Retry-After``)."""
    auth: Authenticator = request.app.state.auth
    secure = request.url.scheme == "https"
    creds = Credentials.of(request.headers, request.query_params, request.cookies)
    try:
        caller = await auth.authenticate(get_pool(request), creds, client_host(request))
    except AuthError as exc:
        if exc.clear_session:
            queue_cookie(request.scope, clear_cookie_header(secure))
        headers = {"Retry-After": str(exc.retry_after_s)} if exc.retry_after_s else None
        raise ApiError(exc.status, exc.error, exc.detail, headers=headers) from None
    if caller.renewed_session is not None:
        queue_cookie(
            request.scope, cookie_header(caller.renewed_session, auth.session_ttl_s, secure)
        )
    return caller


async def _require(request: Request, needed: Role) -> TokenInfo:
    caller = await authenticate(request)
    if not caller.info.allows(needed):
        detail = f"needs role {needed.value}; token has {caller.info.role.value}"
        if caller.via_session:
            detail = "a page session only reads: send the admin token in Authorization: Bearer"
        raise ApiError(403, "forbidden", detail)
    return caller.info


async def require_viewer(
    request: Request, _bearer: BearerScheme, _session: SessionScheme
) -> TokenInfo:
    return await _require(request, Role.VIEWER)


async def require_admin(request: Request, _bearer: BearerScheme) -> TokenInfo:
    return await _require(request, Role.ADMIN)


Viewer = Annotated[TokenInfo, Depends(require_viewer)]
Admin = Annotated[TokenInfo, Depends(require_admin)]
