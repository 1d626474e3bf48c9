"""The few MQTT 5 packets the platform needs, encoded and decoded directly (OASIS MQTT 5.0).

A general-purpose client (paho-mqtt) reads each packet with several ``recv`` calls and
builds property objects per message, which caps one Python process at a few thousand
messages per second.  This package's clients (:mod:`mqtt5._subscriber`,
:mod:`mqtt5._publisher`) only need CONNECT/CONNACK, SUBSCRIBE/SUBACK, PUBLISH
(QoS 0 and 1), PUBACK, PINGREQ/PINGRESP and DISCONNECT, so they parse them from one
buffered stream with the functions here.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Final

import msgspec

from mqtt5._errors import MqttProtocolError

__all__ = [
    "CONNACK",
    "DISCONNECT",
    "PINGREQ",
    "PINGRESP",
    "PUBACK",
    "PUBLISH",
    "SUBACK",
    "ConnAck",
    "Publish",
    "connect_packet",
    "decode_connack",
    "decode_publish",
    "puback_packet",
    "puback_succeeded",
    "publish_packet",
    "split_packets",
    "subscribe_packet",
]

CONNACK: Final = 0x20
PUBLISH: Final = 0x30
PUBACK: Final = 0x40
SUBACK: Final = 0x90
PINGREQ: Final = 0xC0
PINGRESP: Final = 0xD0
DISCONNECT: Final = 0xE0

PINGREQ_PACKET: Final = b"\xc0\x00"
DISCONNECT_PACKET: Final = b"\xe0\x00"


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _read_varint(buf: bytes | memoryview, i: int) -> tuple[int, int]:
    value, mult = 0, 1
    for _ in range(4):
        b = buf[i]
        i += 1
        value += (b & 0x7F) * mult
        if not b & 0x80:
            return value, i
        mult *= 128
    raise MqttProtocolError("malformed variable byte integer")


def utf8(s: str) -> bytes:
    b = s.encode()
    return struct.pack("!H", len(b)) + b


def connect_packet(
    client_id: str,
    username: str | None,
    password: str | None,
    keepalive: int,
    clean_start: bool,
    session_expiry_s: int,
    receive_maximum: int,
) -> bytes:
    flags = (0x02 if clean_start else 0) | (0x80 if username else 0) | (0x40 if password else 0)
    props = (
        b"\x11" + struct.pack("!I", session_expiry_s) + b"\x21" + struct.pack("!H", receive_maximum)
    )
    var = (
        utf8("MQTT") + bytes([5, flags]) + struct.pack("!H", keepalive) + varint(len(props)) + props
    )
    payload = utf8(client_id)
    if username:
        payload += utf8(username)
    if password:
        payload += utf8(password)
    body = var + payload
    return b"\x10" + varint(len(body)) + body


@dataclass(frozen=True, slots=True)
class ConnAck:
    session_present: bool
    reason_code: int
    receive_maximum: int  # the broker's limit for our QoS 1 publishes


_PROP_FIXED: Final = {0x01: 1, 0x02: 4, 0x11: 4, 0x13: 2, 0x17: 1, 0x19: 1, 0x21: 2, 0x22: 2,
                      0x23: 2, 0x24: 1, 0x25: 1, 0x27: 4, 0x28: 1, 0x29: 1, 0x2A: 1}  # fmt: skip
_PROP_STRINGS: Final = {0x03, 0x08, 0x09, 0x12, 0x15, 0x16, 0x1A, 0x1C, 0x1F}  # len-prefixed


def _properties(buf: bytes, i: int) -> tuple[dict[int, int], int]:
    """Parse a property block; return integer properties and the index after the block."""
    length, i = _read_varint(buf, i)
    end = i + length
    ints: dict[int, int] = {}
    while i < end:
        pid = buf[i]
        i += 1
        if pid in _PROP_FIXED:
            size = _PROP_FIXED[pid]
            ints[pid] = int.from_bytes(buf[i : i + size], "big")
            i += size
        elif pid in _PROP_STRINGS:
            i += 2 + struct.unpack_from("!H", buf, i)[0]
        elif pid == 0x26:  # user property: two strings
            i += 2 + struct.unpack_from("!H", buf, i)[0]
            i += 2 + struct.unpack_from("!H", buf, i)[0]
        elif pid == 0x0B:  # subscription identifier
            _, i = _read_varint(buf, i)
        else:
            raise MqttProtocolError(f"unknown MQTT 5 property {pid:#x}")
    return ints, end


def decode_connack(body: bytes) -> ConnAck:
    ints, _ = _properties(body, 2) if len(body) > 2 else ({}, 2)
    return ConnAck(bool(body[0] & 1), body[1], ints.get(0x21, 65535))


def subscribe_packet(packet_id: int, topics: list[str], qos: int = 1) -> bytes:
    body = struct.pack("!H", packet_id) + b"\x00"
    for t in topics:
        body += utf8(t) + bytes([qos])
    return b"\x82" + varint(len(body)) + body


def suback_reasons(body: bytes) -> list[int]:
    _, i = _properties(body, 2)
    return list(body[i:])


def puback_packet(packet_id: int) -> bytes:
    return b"\x40\x02" + struct.pack("!H", packet_id)


def puback_succeeded(body: bytes) -> bool:
    """A PUBACK without a reason code, or with one below 0x80, acknowledges success."""
    return len(body) < 3 or body[2] < 0x80


def publish_packet(
    topic: bytes, payload: bytes, packet_id: int, *, qos: int = 1, retain: bool = False
) -> bytes:
    """PUBLISH (QoS 0 or 1) without properties; ``packet_id`` is ignored for QoS 0."""
    first = 0x30 | (qos << 1) | (1 if retain else 0)
    rest = struct.pack("!H", len(topic)) + topic
    rest += struct.pack("!H", packet_id) + b"\x00" if qos else b"\x00"
    return bytes((first,)) + varint(len(rest) + len(payload)) + rest + payload


class Publish(msgspec.Struct, frozen=True, gc=False):
    """A received PUBLISH (a C-level struct: one is made for every message read)."""

    topic: str
    payload: bytes
    qos: int
    packet_id: int
    dup: bool


def decode_publish(first: int, body: bytes) -> Publish:
    qos = (first >> 1) & 0x03
    tlen = struct.unpack_from("!H", body, 0)[0]
    topic = body[2 : 2 + tlen].decode("utf-8", "replace")
    i = 2 + tlen
    packet_id = 0
    if qos:
        packet_id = struct.unpack_from("!H", body, i)[0]
        i += 2
    plen, i = _read_varint(body, i)
    return Publish(topic, body[i + plen :], qos, packet_id, bool(first & 0x08))


def split_packets(buf: bytearray) -> tuple[list[tuple[int, bytes]], int]:
    """Complete packets at the start of ``buf`` as (first byte, body); and bytes consumed."""
    out: list[tuple[int, bytes]] = []
    i = 0
    n = len(buf)
    with memoryview(buf) as view:  # one copy per body (a bytearray slice would be two)
        while i + 2 <= n:
            first = buf[i]
            j = i + 1
            length, mult = 0, 1
            while True:
                if j >= n:
                    return out, i
                b = buf[j]
                j += 1
                length += (b & 0x7F) * mult
                if not b & 0x80:
                    break
                mult *= 128
                if mult > 128**3:
                    raise MqttProtocolError("malformed remaining length")
            end = j + length
            if end > n:
                return out, i
            out.append((first, view[j:end].tobytes()))
            i = end
    return out, i
