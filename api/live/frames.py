"""Server → client frames of the live websocket (see docs/api.md), encoded with msgspec."""

from __future__ import annotations

from typing import Any, Final

import msgspec

__all__ = [
    "STATUS_OFFLINE",
    "STATUS_ONLINE",
    "STATUS_STALE",
    "DeltaFrame",
    "IncidentFrame",
    "OutFrame",
    "SnapshotFrame",
    "StatusFrame",
    "Vehicle",
    "encode_frame",
    "websocket_text_frame",
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


class IncidentFrame(msgspec.Struct, tag_field="type", tag="incident"):
    """One change of an incident (opened, updated, acknowledged, resolved, ended) by whom,
    with the incident as it is now (I, docs/api.md)."""

    ts: int
    event: str
    actor: str
    incident: dict[str, Any]


_encoder = msgspec.json.Encoder()


class OutFrame:
    """One encoded frame, shared by every client that gets it.

    ``wire`` is the complete websocket text frame (header + JSON): a server's frames are
    not masked, so the very same bytes go to every client; ``text`` is the JSON as str
    for servers whose transport is not reachable.  Both are built at most once.
    """

    __slots__ = ("_text", "_wire", "parts", "payload")

    def __init__(self, payload: bytes, parts: list[OutFrame] | None = None) -> None:
        self.payload = payload
        self.parts = parts
        self._wire: bytes | None = None
        self._text: str | None = None

    @classmethod
    def batch(cls, frames: list[OutFrame]) -> OutFrame:
        """Several frames written as one (still separate websocket frames on the wire)."""
        batch = cls(b"", parts=frames)
        batch._wire = b"".join(f.wire for f in frames)
        return batch

    def texts(self) -> list[str]:
        """The JSON text of each websocket frame this stands for."""
        return [p.text for p in self.parts] if self.parts is not None else [self.text]

    @property
    def wire(self) -> bytes:
        if self._wire is None:
            self._wire = websocket_text_frame(self.payload)
        return self._wire

    @property
    def text(self) -> str:
        if self._text is None:
            self._text = self.payload.decode()
        return self._text


def websocket_text_frame(payload: bytes) -> bytes:
    """RFC 6455 frame: FIN + text opcode, unmasked (server to client), then the payload."""
    n = len(payload)
    if n < 126:
        header = bytes((0x81, n))
    elif n < 1 << 16:
        header = bytes((0x81, 126)) + n.to_bytes(2, "big")
    else:
        header = bytes((0x81, 127)) + n.to_bytes(8, "big")
    return header + payload


def encode_frame(frame: msgspec.Struct) -> OutFrame:
    """Encode a frame once; every client that gets it shares the result."""
    return OutFrame(_encoder.encode(frame))
