"""Open a TCP connection to the broker and complete the MQTT 5 CONNECT/CONNACK exchange."""

from __future__ import annotations

import socket
from dataclasses import dataclass

from mqtt5 import _codec as codec
from mqtt5._errors import MqttConnectionLostError, MqttConnectRefusedError, MqttProtocolError

__all__ = ["Session", "open_session"]


@dataclass(slots=True)
class Session:
    sock: socket.socket
    connack: codec.ConnAck
    leftover: bytearray  # bytes after the CONNACK that do not yet form a packet
    packets: list[tuple[int, bytes]]  # complete packets that arrived right after it


def open_session(
    host: str,
    port: int,
    *,
    client_id: str,
    username: str | None,
    password: str | None,
    keepalive: int,
    clean_start: bool = True,
    session_expiry_s: int = 0,
    receive_maximum: int = 65535,
    timeout: float = 10.0,
) -> Session:
    """Connect and wait for the CONNACK.

    Raises :class:`OSError` when the broker cannot be reached,
    :class:`~mqtt5.MqttConnectRefusedError` (with the reason code) when it refuses us,
    :class:`~mqtt5.MqttConnectionLostError` when it hangs up first and
    :class:`~mqtt5.MqttProtocolError` when it answers something else; the socket is
    closed in every case.
    """
    sock = socket.create_connection((host, port), timeout=timeout)
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.sendall(
            codec.connect_packet(
                client_id,
                username,
                password,
                keepalive,
                clean_start=clean_start,
                session_expiry_s=session_expiry_s,
                receive_maximum=receive_maximum,
            )
        )
        buf = bytearray()
        packets: list[tuple[int, bytes]] = []
        used = 0
        while not packets:
            chunk = sock.recv(65536)
            if not chunk:
                raise MqttConnectionLostError("broker closed the connection during CONNECT")
            buf += chunk
            packets, used = codec.split_packets(buf)
        first, body = packets[0]
        if first & 0xF0 != codec.CONNACK:
            raise MqttProtocolError(
                f"expected CONNACK, got packet type {first >> 4}", packet_type=first >> 4
            )
        ack = codec.decode_connack(body)
        if ack.reason_code >= 0x80:
            raise MqttConnectRefusedError(ack.reason_code)
    except BaseException:
        sock.close()
        raise
    return Session(sock, ack, buf[used:], packets[1:])
