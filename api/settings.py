"""``fleet api`` settings (``FLEET_*`` environment variables)."""

from __future__ import annotations

from pydantic import Field

from fleet.settings import CommonSettings

__all__ = ["ApiSettings"]


class ApiSettings(CommonSettings):
    """The API process: HTTP listener, live websocket tuning, tokens, map tiles."""

    mqtt_username: str | None = "svc-api"
    api_port: int = Field(default=8000, ge=0, le=65535, description="HTTP listener port.")
    api_bind: str = Field(default="127.0.0.1", description="HTTP listener address.")
    ws_interval_ms: int = Field(
        default=250, ge=10, le=10_000, description="Coalescing interval of live deltas."
    )
    stale_after_s: int = Field(
        default=60, ge=1, le=86_400, description="A van without a fix this long is stale."
    )
    ws_slow_client_s: float = Field(
        default=2.0, gt=0, le=60, description="A send blocked this long closes the client (1013)."
    )
    ws_queue_max: int = Field(
        default=8, ge=1, le=1000, description="Frames queued per client before it is closed."
    )
    ws_max_clients: int = Field(default=2000, ge=1, description="Live websocket clients allowed.")
    ws_max_per_token: int = Field(
        default=20, ge=1, description="Live websocket connections one token may hold at once."
    )
    tile_url: str | None = Field(
        default=None, description="Map tile URL template ({z}/{x}/{y}); none = plain background."
    )
    api_demo_token: str | None = Field(
        default=None, description="A token seeded at start-up (demo mode only)."
    )
    api_demo_token_role: str = Field(default="viewer", pattern="^(viewer|admin)$")
    db_pool_max: int = Field(default=8, ge=1, le=100)
    alerts_poll_s: float = Field(default=1.0, gt=0, le=60)
    live_qos: int = Field(default=1, ge=0, le=1, description="QoS of the live subscription.")
    mqtt_client_id: str | None = Field(
        default=None, description="MQTT client id (default fleet-api-<random>; one per replica)."
    )
    # -- what keeps an internet-facing API standing (docs/api.md, "Security")
    api_max_body_bytes: int = Field(
        default=16 * 1024, ge=256, le=16 * 1024 * 1024, description="Largest request body."
    )
    api_auth_max_failures: int = Field(
        default=10, ge=1, le=10_000, description="Failed authentications per address per window."
    )
    api_auth_window_s: float = Field(
        default=60.0, gt=0, le=86_400, description="Window of the failed-authentication limit."
    )
    api_session_ttl_s: int = Field(
        default=12 * 3600, ge=60, le=7 * 86_400, description="Lifetime of a page session cookie."
    )
    api_metrics_port: int | None = Field(
        default=None,
        ge=0,
        le=65535,
        description="Serve /metrics on its own listener (no token) instead of behind a token.",
    )
    api_metrics_bind: str = Field(default="127.0.0.1", description="Address of that listener.")
    api_forwarded_allow_ips: str | None = Field(
        default=None,
        description="Proxies whose X-Forwarded-For/-Proto are believed (comma list, or *).",
    )
