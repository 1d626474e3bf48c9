"""The FastAPI application: ``create_app(settings)``.

The lifespan opens the metrics listener (when configured), the database pool
(explicitly), the live MQTT feed (its own thread), the hub's tick loop, the incident poller
and the start-up database work (seed the live state from ``latest_positions``; the demo
token), and closes them in reverse.

Every HTTP request first passes :class:`~api.http_guards.RequestGuards` (query and body
limits); authentication is :mod:`api.auth` (bearer tokens, page sessions, the
failed-authentication limit).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import mimetypes
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Final
from wsgiref.simple_server import WSGIServer

from fastapi import Depends, FastAPI
from fastapi.staticfiles import StaticFiles
from prometheus_client import start_http_server
from psycopg_pool import AsyncConnectionPool
from starlette.types import ASGIApp, Receive, Scope, Send

from api.auth import Authenticator
from api.auth_limiter import FailedAuthLimiter
from api.commands import CommandSender
from api.deps import requires
from api.errors import install_error_handlers
from api.http_guards import RequestGuards
from api.live.client import RAW_SEND_SCOPE_KEY
from api.live.frames import STATUS_OFFLINE, STATUS_ONLINE, Vehicle
from api.live.hub import LiveHub
from api.live.incidents import IncidentPoller
from api.live.mqtt_feed import MqttFeed
from api.live.state import LiveState
from api.metrics import ApiMetrics
from api.routes import (
    alerts,
    config,
    gtfs,
    health,
    incidents,
    live,
    planner,
    reports,
    routes,
    session,
    vehicles,
)
from api.routes import replay as fleet_replay
from api.routes.live import ConnectionQuota
from api.sessions import SessionCookieWriter
from api.tokens import Permission, Role, seed_token
from fleet.settings import ApiSettings, SettingsError

__all__ = ["create_app"]

log = logging.getLogger(__name__)

# The page is native ES modules: browsers refuse a module served with another MIME type,
# so do not leave it to the host's /etc/mime.types.
mimetypes.add_type("text/javascript", ".js")

STATIC_DIR: Final = Path(__file__).resolve().parent / "static"
API_PREFIX: Final = "/api/v1"  # the REST API's version, for every router under it
STARTUP_RETRY_S: Final = 2.0


class _KeepRawSend:
    """Pure ASGI: remember the server's own ``send`` in the websocket scope.

    A slow client is cut off by writing its close frame straight to the transport
    (see ``api.live.client``); the server's send callable leads to that transport.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            scope[RAW_SEND_SCOPE_KEY] = send
        await self.app(scope, receive, send)


async def _seed_live_state(pool: AsyncConnectionPool, state: LiveState) -> int:
    async with pool.connection() as conn:
        cur = await conn.execute(
            """SELECT vehicle_id, route, (extract(epoch FROM ts) * 1000)::bigint, lat, lon,
                      speed, heading, status, extract(epoch FROM now() - ts)
               FROM latest_positions"""
        )
        rows = await cur.fetchall()
    now = time.monotonic()
    for vid, route, ts, lat, lon, speed, heading, status, age_s in rows:
        db_status = STATUS_OFFLINE if status == STATUS_OFFLINE else STATUS_ONLINE
        van = Vehicle(vid, route, int(ts), lat, lon, speed, heading, db_status)
        state.load(van, float(age_s), now)
    return len(rows)


async def _startup_database_work(
    pool: AsyncConnectionPool, state: LiveState, settings: ApiSettings
) -> None:
    """Retry until the database answers: the live path runs meanwhile."""
    while True:
        try:
            if settings.api_demo_token:
                role = Role(settings.api_demo_token_role)
                await seed_token(pool, settings.api_demo_token, "demo", role)
            loaded = await _seed_live_state(pool, state)
            log.info("live state seeded from the database", extra={"vans": loaded})
            return
        except Exception as exc:
            log.warning(
                "database not ready for start-up work; retrying",
                extra={"error": str(exc)[:200], "retry_s": STARTUP_RETRY_S},
            )
            await asyncio.sleep(STARTUP_RETRY_S)


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: ApiSettings = app.state.settings
    metrics: ApiMetrics = app.state.metrics
    assert settings.dsn is not None
    metrics_listener = _start_metrics_listener(app, settings, metrics)
    pool = AsyncConnectionPool(
        settings.dsn,
        min_size=1,
        max_size=settings.db_pool_max,
        open=False,
        timeout=5.0,
        kwargs={"autocommit": True},
        name="fleet-api",
    )
    await pool.open(wait=False)
    state = LiveState(settings.stale_after_s)
    hub = LiveHub(state, settings.ws_interval_ms / 1000, metrics)
    feed = MqttFeed(
        settings.mqtt_host,
        settings.mqtt_port,
        username=settings.mqtt_username,
        password=settings.mqtt_password,
        loop=asyncio.get_running_loop(),
        on_batch=hub.apply_batch,
        qos=settings.live_qos,
        client_id=settings.mqtt_client_id,
    )
    commands = CommandSender(
        settings.mqtt_host,
        settings.mqtt_port,
        settings.mqtt_username,
        settings.mqtt_password,
        client_id=f"{settings.mqtt_client_id}-cmd" if settings.mqtt_client_id else None,
    )
    app.state.pool, app.state.hub, app.state.feed = pool, hub, feed
    app.state.commands = commands
    app.state.incident_poller = poller = IncidentPoller(pool, hub, settings.alerts_poll_s)
    metrics.mqtt_connected.set_function(lambda: 1.0 if feed.connected.is_set() else 0.0)
    feed.start()
    commands.start()
    tasks = [
        asyncio.create_task(hub.run(), name="live-hub"),
        asyncio.create_task(_startup_database_work(pool, state, settings), name="db-startup"),
        asyncio.create_task(poller.run(), name="incident-poller"),
    ]
    try:
        yield
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await hub.close_all()
        await commands.stop()
        await asyncio.to_thread(feed.stop)
        await pool.close()
        if metrics_listener is not None:
            await asyncio.to_thread(metrics_listener.shutdown)
            metrics_listener.server_close()


def _start_metrics_listener(
    app: FastAPI, settings: ApiSettings, metrics: ApiMetrics
) -> WSGIServer | None:
    """``/metrics`` on its own address (no token) when FLEET_API_METRICS_PORT is set."""
    if settings.api_metrics_port is None:
        return None
    bind, port = settings.api_metrics_bind, settings.api_metrics_port
    try:
        server, _thread = start_http_server(port, addr=bind, registry=metrics.registry)
    except OSError as exc:
        raise SettingsError(
            f"cannot listen for metrics on {bind}:{port} ({exc.strerror}); "
            "check FLEET_API_METRICS_PORT / FLEET_API_METRICS_BIND"
        ) from None
    app.state.metrics_port = server.server_port
    log.info("metrics listener up", extra={"bind": bind, "port": server.server_port})
    return server


def create_app(settings: ApiSettings) -> FastAPI:
    """The API for ``settings`` (``settings.dsn`` must be set: see ``resolve_dsn``)."""
    if not settings.dsn:
        raise SettingsError("FLEET_DSN is required by the API (or start it with `fleet api`)")
    app = FastAPI(
        title="Makassar fleet API",
        version="1",
        summary="Live positions, tracks, routes, alerts and reports of Makassar's pete-pete.",
        lifespan=_lifespan,
    )
    app.state.settings = settings
    app.state.metrics = metrics = ApiMetrics()
    limiter = FailedAuthLimiter(settings.api_auth_max_failures, settings.api_auth_window_s)
    app.state.auth = Authenticator(limiter, metrics, settings.api_session_ttl_s)
    app.state.ws_quota = ConnectionQuota(settings.ws_max_per_token)
    install_error_handlers(app)
    routers = (session, config, vehicles, routes, alerts, incidents, reports, planner, fleet_replay)
    for module in routers:
        app.include_router(module.router, prefix=API_PREFIX)
    # Outside the versioned API: probes, the websocket, the GTFS feed's conventional path.
    app.include_router(health.router)
    app.include_router(live.router)
    app.include_router(gtfs.router, dependencies=[Depends(requires(Permission.WATCH))])
    if settings.api_metrics_port is None:  # else on a listener of its own (lifespan)
        app.include_router(health.metrics_router)
    if (STATIC_DIR / "index.html").exists():
        app.mount("/", StaticFiles(directory=STATIC_DIR, html=True), name="war-room")
    app.add_middleware(_KeepRawSend)
    app.add_middleware(SessionCookieWriter)
    app.add_middleware(RequestGuards, max_body_bytes=settings.api_max_body_bytes)  # outermost
    return app
