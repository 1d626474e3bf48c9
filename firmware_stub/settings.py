"""``fleet device run`` settings: ``FLEET_*`` environment variables, then CLI options."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from fleet.settings import CommonSettings

__all__ = ["DeviceSettings"]


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
