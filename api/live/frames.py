"""Server → client frames of the live websocket (see docs/api.md), encoded with msgspec."""

from __future__ import annotations

from typing import Any, Final

import msgspec

__all__ = [
    "STATUS_OFFLINE",
    "STATUS_ONLINE",
    "STATUS_STALE",
    "AlertFrame",
    "DeltaFrame",
    "SnapshotFrame",
    "StatusFrame",
    "Vehicle",
    "encode_frame",
]

STATUS_ONLINE: Final = "online"
STATUS_STALE: Final = "stale"
STATUS_OFFLINE: Final = "offline"


class Vehicle(msgspec.Struct, gc=False):
    """V: one van's latest position and status (speed m/s, heading degrees, ts epoch ms)."""

    id: str
    route: str | None
    ts: int
    lat: float
    lon: float
    speed: float | None
    heading: float | None
    status: str


class SnapshotFrame(msgspec.Struct, tag_field="type", tag="snapshot"):
    ts: int
    vehicles: list[Vehicle]


class DeltaFrame(msgspec.Struct, tag_field="type", tag="delta"):
    ts: int
    vehicles: list[Vehicle]


class StatusFrame(msgspec.Struct, tag_field="type", tag="status"):
    ts: int
    vehicle_id: str
    status: str


class AlertFrame(msgspec.Struct, tag_field="type", tag="alert"):
    ts: int
    alert: dict[str, Any]


_encoder = msgspec.json.Encoder()


def encode_frame(frame: SnapshotFrame | DeltaFrame | StatusFrame | AlertFrame) -> str:
    """JSON text of a frame; encoded once and shared by every client that gets it."""
    return _encoder.encode(frame).decode()
