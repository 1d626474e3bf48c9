"""Settings from ``FLEET_*`` environment variables, one object per service.

Every service builds its settings once at start-up through :func:`load`, which turns a
validation failure into one readable line (``SettingsError``) instead of a traceback.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from mqtt5 import (
    MqttConnectionLostError,
    MqttConnectRefusedError,
    MqttError,
    MqttSubscribeRefusedError,
)

__all__ = [
    "BrokerSettings",
    "CommonSettings",
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

    mqtt_username: str | None = "svc-ingest"
    client_id: str = "fleet-ingest-1"
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


S = TypeVar("S", bound=BaseSettings)


def load(cls: type[S], **overrides: Any) -> S:
    """Build settings from the environment (plus explicit overrides) or raise SettingsError."""
    try:
        return cls(**overrides)
    except ValidationError as exc:
        prefix = cls.model_config.get("env_prefix", "")
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
