"""Request dependencies: the resources opened in the lifespan, and token checks."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from psycopg_pool import AsyncConnectionPool

from api.errors import ApiError
from api.live.hub import LiveHub
from api.live.mqtt_feed import MqttFeed
from api.metrics import ApiMetrics
from api.settings import ApiSettings
from api.tokens import Role, TokenInfo, verify

__all__ = [
    "Admin",
    "Feed",
    "Hub",
    "Metrics",
    "Pool",
    "Settings",
    "Viewer",
    "bearer_token",
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


def get_settings(request: Request) -> ApiSettings:
    settings: ApiSettings = request.app.state.settings
    return settings


def get_metrics(request: Request) -> ApiMetrics:
    metrics: ApiMetrics = request.app.state.metrics
    return metrics


Pool = Annotated[AsyncConnectionPool, Depends(get_pool)]
Hub = Annotated[LiveHub, Depends(get_hub)]
Feed = Annotated[MqttFeed, Depends(get_feed)]
Settings = Annotated[ApiSettings, Depends(get_settings)]
Metrics = Annotated[ApiMetrics, Depends(get_metrics)]


def bearer_token(authorization: str | None, query_token: str | None) -> str | None:
    """The token from ``Authorization: Bearer <t>`` or, for websockets, ``?token=<t>``."""
    if authorization:
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    return query_token or None


async def _authenticate(request: Request, needed: Role) -> TokenInfo:
    secret = bearer_token(request.headers.get("authorization"), request.query_params.get("token"))
    if secret is None:
        raise ApiError(
            401, "token required", "send 'Authorization: Bearer <token>' (fleet token create)"
        )
    info = await verify(get_pool(request), secret)
    if info is None:
        raise ApiError(401, "invalid token", "unknown or revoked token")
    if not info.allows(needed):
        raise ApiError(403, "forbidden", f"needs role {needed.value}; token has {info.role.value}")
    return info


async def require_viewer(request: Request) -> TokenInfo:
    return await _authenticate(request, Role.VIEWER)


async def require_admin(request: Request) -> TokenInfo:
    return await _authenticate(request, Role.ADMIN)


Viewer = Annotated[TokenInfo, Depends(require_viewer)]
Admin = Annotated[TokenInfo, Depends(require_admin)]
