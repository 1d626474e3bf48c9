"""uvicorn configured for the live websocket (sans-I/O websockets, no compression)."""

from __future__ import annotations

import uvicorn

from api import log_redaction
from api.app import create_app
from fleet.settings import ApiSettings

__all__ = ["build_server"]


def build_server(settings: ApiSettings) -> uvicorn.Server:
    """A uvicorn server for the app; ``.run()`` blocks, ``.should_exit = True`` stops it.

    Frames are encoded once and shared by many clients, so per-message deflate (which
    compresses per client) is off; the sans-I/O websockets protocol is the one whose
    transport ``api.live.client`` writes a slow client's close frame to.

    No access log, and uvicorn's own lines pass :mod:`api.log_redaction`. The client
    address (the failed-authentication limit counts per address) is the TCP peer unless
    ``FLEET_API_FORWARDED_ALLOW_IPS`` names proxies whose ``X-Forwarded-For`` to believe.
    """
    log_redaction.install()
    forwarded = settings.api_forwarded_allow_ips
    config = uvicorn.Config(
        create_app(settings),
        host=settings.api_bind,
        port=settings.api_port,
        ws="websockets-sansio",
        ws_per_message_deflate=False,
        ws_max_size=64 * 1024,
        lifespan="on",
        log_config=None,
        access_log=False,
        proxy_headers=bool(forwarded),
        forwarded_allow_ips=forwarded or None,
        server_header=False,
        timeout_graceful_shutdown=5,
    )
    return uvicorn.Server(config)
