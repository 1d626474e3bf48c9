"""Request dependencies: the resources opened in the lifespan, and token checks."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Final

from fastapi import Depends, Request
from fastapi.security import APIKeyCookie, HTTPAuthorizationCredentials, HTTPBearer
from psycopg_pool import AsyncConnectionPool

from api.auth import Authenticator, AuthError, Caller, Credentials
from api.commands import CommandSender
from api.errors import ApiError
from api.live.hub import LiveHub
from api.live.mqtt_feed import MqttFeed
from api.metrics import ApiMetrics
from api.sessions import (
    SESSION_COOKIE,
    clear_cookie_header,
    cookie_header,
    queue_cookie,
    same_origin,
)
from api.tokens import Permission, TokenInfo
from fleet.settings import ApiSettings

__all__ = [
    "Admin",
    "AlertWorker",
    "BearerScheme",
    "Commander",
    "Commands",
    "Feed",
    "Hub",
    "Metrics",
    "Planner",
    "Pool",
    "Settings",
    "Viewer",
    "authenticate",
    "client_host",
    "requires",
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


SAFE_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS"})


async def _require(request: Request, needed: Permission) -> TokenInfo:
    caller = await authenticate(request)
    if caller.via_session and request.method not in SAFE_METHODS and not same_origin(request):
        raise ApiError(
            403,
            "cross-origin request",
            "a page session changes things only from this server's own page "
            "(the Origin header must name this server); scripts send Authorization: Bearer",
        )
    if not caller.info.allows(needed):
        raise ApiError(
            403,
            "forbidden",
            f"needs permission '{needed.value}', which role {caller.info.role.value} "
            "does not have (roles: docs/api.md)",
        )
    return caller.info


def requires(needed: Permission) -> Callable[..., Awaitable[TokenInfo]]:
    """A dependency: the caller, when its role grants ``needed`` (else 401/403/429)."""

    async def check(request: Request, _bearer: BearerScheme, _session: SessionScheme) -> TokenInfo:
        return await _require(request, needed)

    check.__name__ = f"require_{needed.name.lower()}"
    return check


Viewer = Annotated[TokenInfo, Depends(requires(Permission.WATCH))]
AlertWorker = Annotated[TokenInfo, Depends(requires(Permission.WORK_ALERTS))]
Commander = Annotated[TokenInfo, Depends(requires(Permission.COMMAND))]
Planner = Annotated[TokenInfo, Depends(requires(Permission.PLAN))]
Admin = Annotated[TokenInfo, Depends(requires(Permission.ADMINISTER))]
