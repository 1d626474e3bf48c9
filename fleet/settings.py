"""Settings from ``FLEET_*`` environment variables, one object per service, all here.

Every service builds its settings once at start-up through :func:`load`, which turns a
validation failure into one readable line (``SettingsError``) instead of a traceback.
One naming scheme: a setting's variable is ``FLEET_`` plus its field name, and what two
services share has one name (``FLEET_MQTT_CLIENT_ID`` for ingest and the API alike).
The analytics library's tunables (``FLEET_ANALYTICS_*``) live with it, in
``analytics.settings``: the library, not a service, owns them.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from mqtt5 import (
    MqttConnectionLostError,
    MqttConnectRefusedError,
    MqttError,
    MqttSubscribeRefusedError,
)

__all__ = [
    "ApiSettings",
    "BrokerSettings",
    "CommonSettings",
    "DeviceSettings",
    "IngestSettings",
    "SettingsError",
    "load",
    "mqtt_hint",
]


class SettingsError(Exception):
    """A setting is missing or invalid; the message names the variable and the fix."""


class CommonSettings(BaseSettings):
    """Settings every service reads."""

    model_config = SettingsConfigDict(env_prefix="FLEET_", extra="ignore")
    # Old variable names still read by load(), with a warning: old name -> field.
    renamed: ClassVar[dict[str, str]] = {}

    data_dir: Path = Field(
        default=Path(".fleet-data"),
        description="Where embedded services keep state (database, broker persistence).",
    )
    dsn: str | None = Field(
        default=None,
        description="PostgreSQL DSN; when unset an embedded PostgreSQL is used.",
    )
    mqtt_host: str = "127.0.0.1"
    mqtt_port: int = Field(default=1883, ge=1, le=65535)
    mqtt_username: str | None = None
    mqtt_password: str | None = None
    mqtt_admin_password: str | None = Field(
        default=None,
        description="svc-admin's password: `fleet device` then changes accounts on the broker "
        "at FLEET_MQTT_HOST:FLEET_MQTT_PORT (production) instead of in FLEET_DATA_DIR.",
    )
    log_level: str = "INFO"
    log_format: str = Field(default="text", pattern="^(text|json)$")


class BrokerSettings(CommonSettings):
    """``fleet broker``: the Mosquitto process with the project's config."""

    broker_port: int = Field(default=1883, ge=1, le=65535)
    broker_bind: str = Field(
        default="127.0.0.1",
        description="The plaintext listener (services): loopback or an internal network only.",
    )
    broker_tls_port: int = Field(default=8883, ge=1, le=65535)
    broker_tls_bind: str = "0.0.0.0"  # noqa: S104  the devices' listener: TLS only
    broker_tls_cert: Path | None = Field(
        default=None, description="Server certificate (PEM); with the key, enables TLS."
    )
    broker_tls_key: Path | None = None


class IngestSettings(CommonSettings):
    """``fleet ingest``: MQTT → validation → PostgreSQL."""

    renamed: ClassVar[dict[str, str]] = {"FLEET_CLIENT_ID": "mqtt_client_id"}

    mqtt_username: str | None = "svc-ingest"
    mqtt_client_id: str = Field(
        default="fleet-ingest-1",
        description="MQTT client id: one per worker, stable across restarts (its session).",
    )
    share_group: str = "ingest"
    batch_max_fixes: int = Field(default=1000, ge=1, le=100_000)
    batch_max_ms: int = Field(default=50, ge=1, le=60_000)
    receive_maximum: int = Field(default=20_000, ge=10, le=65_535)
    session_expiry_s: int = Field(default=7 * 24 * 3600, ge=0)
    max_future_s: int = Field(default=300, ge=0)
    max_age_s: int = Field(default=7 * 24 * 3600, ge=60)
    metrics_port: int = Field(default=9108, ge=0, le=65535)
    metrics_bind: str = "127.0.0.1"
    db_retry_max_s: float = Field(default=5.0, gt=0)
    inbox_max_mb: int = Field(
        default=64,
        ge=1,
        le=4096,
        description="Received messages held before the worker stops reading from the broker.",
    )
    receipts: bool = Field(
        default=True, description="Send storage receipts on fleet/{vehicle_id}/ack."
    )
    receipt_interval_s: float = Field(
        default=1.0, gt=0, le=60, description="At most one receipt per device per interval."
    )
    rejected_retention_days: int = Field(
        default=30, ge=1, description="Dead letters (rejected_messages) are kept this long."
    )
    analytics: bool = Field(
        default=True,
        description="Run the analytics loop (passages, congestion, alerts) in this process; "
        "with several workers one cycle at a time runs (advisory lock).",
    )


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
    api_demo_token_role: str = Field(default="viewer", pattern="^(viewer|operator|planner|admin)$")
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


class DeviceSettings(CommonSettings):
    """The reference device agent. The MQTT username is the vehicle id."""

    device_id: str | None = Field(
        default=None, description="Vehicle id (default FLEET_MQTT_USERNAME)."
    )
    device_interval_s: float = Field(default=5.0, ge=1.0, le=3600.0)
    device_max_hdop: float = Field(default=5.0, gt=0)
    device_route: str | None = None
    device_queue: Path | None = Field(
        default=None, description="Queue file (default <data_dir>/device/<id>/queue.sqlite3)."
    )
    device_queue_max_fixes: int = Field(default=1_000_000, ge=1)
    device_backoff_initial_s: float = Field(default=1.0, gt=0)
    device_backoff_max_s: float = Field(default=60.0, gt=0)
    device_keepalive_s: int = Field(default=30, ge=5, le=65535)
    device_tls: bool = Field(default=False, description="MQTT over TLS (system CA store).")
    device_tls_ca: Path | None = Field(
        default=None, description="CA certificate to verify the broker with (implies TLS)."
    )
    device_receipts: bool = Field(
        default=True,
        description="Keep fixes until a storage receipt covers them (off: until the PUBACK).",
    )
    device_receipt_timeout_s: float = Field(
        default=15.0,
        gt=0,
        le=120.0,
        description="Resend from the oldest unsettled fix when no receipt came this long "
        "after the PUBACK (doubling per timeout in a row, up to 120 s).",
    )


S = TypeVar("S", bound=BaseSettings)


def load(cls: type[S], **overrides: Any) -> S:
    """Build settings from the environment (plus explicit overrides) or raise SettingsError.

    A variable renamed since (``renamed``) still counts when its new name is not set,
    with a :class:`FutureWarning` naming the new one.
    """
    prefix = cls.model_config.get("env_prefix", "")
    for old, field in getattr(cls, "renamed", {}).items():
        if old not in os.environ:
            continue
        new = f"{prefix}{field.upper()}"
        if new in os.environ or field in overrides:
            warnings.warn(f"{old} is ignored: {new} is set; unset {old}", FutureWarning, 2)
        else:
            warnings.warn(f"{old} is deprecated: rename it {new}", FutureWarning, 2)
            overrides[field] = os.environ[old]
    try:
        return cls(**overrides)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            name = ".".join(str(p) for p in err["loc"])
            problems.append(f"{prefix}{name.upper()}: {err['msg']} (got {err.get('input')!r})")
        raise SettingsError("invalid settings: " + "; ".join(problems)) from None


# MQTT 5 reason codes (section 2.4) a setting can fix.
_CREDENTIALS = {0x86, 0x87}  # bad user name or password, not authorized
_CLIENT_ID = {0x85, 0x8E}  # client identifier not valid, session taken over


def mqtt_hint(exc: MqttError | OSError) -> str | None:
    """Which ``FLEET_MQTT_*`` setting to check when a service's MQTT client fails."""
    if isinstance(exc, OSError):
        return "is the broker running? check FLEET_MQTT_HOST / FLEET_MQTT_PORT"
    code = (
        exc.reason_code
        if isinstance(exc, MqttConnectRefusedError | MqttConnectionLostError)
        else None
    )
    if code in _CREDENTIALS:
        return "check FLEET_MQTT_USERNAME / FLEET_MQTT_PASSWORD"
    if code in _CLIENT_ID:
        return "check FLEET_MQTT_CLIENT_ID (one per process: another client may use it)"
    if isinstance(exc, MqttSubscribeRefusedError):
        return "check the broker role of FLEET_MQTT_USERNAME (broker/roles.json)"
    return None
