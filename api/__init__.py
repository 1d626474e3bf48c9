"""The fleet API: REST under ``/api/v1``, the live websocket ``/ws/live``, health, metrics.

``create_app(settings)`` builds the FastAPI application; ``fleet api`` serves it with
uvicorn.  The live path (MQTT → in-memory latest positions → coalesced websocket
frames) never waits on the database.
"""

from __future__ import annotations

__all__: list[str] = []
