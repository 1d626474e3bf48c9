"""What can go wrong, one class each, with the broker's reason code where it sent one.

``OSError`` is not wrapped: a broker that cannot be reached (refused, unreachable, timed
out) surfaces as the socket's own error, so a caller can tell "not there" from "said no".
"""

from __future__ import annotations

from typing import Final

__all__ = [
    "MqttConnectRefusedError",
    "MqttConnectionLostError",
    "MqttError",
    "MqttProtocolError",
    "MqttSubscribeRefusedError",
    "MqttTimeoutError",
    "reason_text",
]

# MQTT 5 reason codes worth naming in a message (section 2.4).
REASONS: Final = {
    0x00: "normal disconnection",
    0x80: "unspecified error",
    0x81: "malformed packet",
    0x82: "protocol error",
    0x84: "unsupported protocol version",
    0x85: "client identifier not valid",
    0x86: "bad user name or password",
    0x87: "not authorized",
    0x88: "server unavailable",
    0x89: "server busy",
    0x8A: "banned",
    0x8B: "server shutting down",
    0x8D: "keep alive timeout",
    0x8E: "session taken over",
    0x8F: "topic filter invalid",
    0x93: "receive maximum exceeded",
    0x95: "packet too large",
    0x97: "quota exceeded",
    0x9E: "shared subscriptions not supported",
}


def reason_text(code: int) -> str:
    """``0x86 (bad user name or password)``."""
    return f"{code:#04x} ({REASONS.get(code, 'see MQTT 5 spec 2.4')})"


class MqttError(Exception):
    """Base class of every error this package raises."""


class MqttProtocolError(MqttError):
    """The peer sent something that is not valid MQTT 5 here (malformed or unexpected)."""

    def __init__(self, message: str, *, packet_type: int | None = None) -> None:
        super().__init__(message)
        self.packet_type = packet_type  # the MQTT packet type (1-15) at fault, when known


class MqttConnectRefusedError(MqttError):
    """The broker answered CONNECT with a CONNACK refusing us."""

    def __init__(self, reason_code: int) -> None:
        super().__init__(f"broker refused the connection: {reason_text(reason_code)}")
        self.reason_code = reason_code


class MqttConnectionLostError(MqttError):
    """An established connection ended: closed, silent past the keepalive, or a DISCONNECT
    from the broker (then with its reason code)."""

    def __init__(self, message: str, *, reason_code: int | None = None) -> None:
        super().__init__(message)
        self.reason_code = reason_code


class MqttSubscribeRefusedError(MqttError):
    """The broker's SUBACK refused one or more topic filters."""

    def __init__(self, refused: dict[str, int]) -> None:
        listed = ", ".join(f"{topic} ({reason_text(rc)})" for topic, rc in refused.items())
        super().__init__(f"broker refused the subscription: {listed}")
        self.refused = refused  # topic filter → reason code


class MqttTimeoutError(MqttError):
    """The broker did not answer in time (e.g. no PUBACK made room in the window)."""

    def __init__(self, message: str, *, timeout_s: float) -> None:
        super().__init__(message)
        self.timeout_s = timeout_s
