"""A paced QoS 1 load generator for the ingest benchmark (one process per call).

Publishes as the gateway service user for ``devices`` vans, ``rate`` fixes/s in total,
one fix per message (or ``per_message`` fixes in a ``{"fixes": [...]}`` batch), with
``ts`` = the publish time in ms, so the worker's lag histogram measures publish → commit.

The generator speaks MQTT 5 directly over a socket (CONNECT, QoS 1 PUBLISH, PUBACK,
honouring the broker's Receive Maximum) because a general-purpose client spends tens
of microseconds per message in Python, and the generator must never be what limits
the measurement.  Only a PUBACK counts a message as acknowledged.
"""

from __future__ import annotations

import socket
import struct
import threading
import time
from dataclasses import dataclass

from fleet.contract import Fix, encode_batch, encode_fix, telemetry_topic

__all__ = ["LoadResult", "LoadSpec", "RawPublisher", "publish_load"]


@dataclass(frozen=True)
class LoadSpec:
    host: str
    port: int
    username: str
    password: str
    device_ids: list[str]
    rate: float  # fixes/s for this process
    duration_s: float
    per_message: int = 1
    as_fast_as_possible: bool = False
    client_id: str = "bench-load"


@dataclass(frozen=True)
class LoadResult:
    fixes_published: int
    fixes_acked: int
    messages: int
    seconds: float


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _utf8(s: str) -> bytes:
    b = s.encode()
    return struct.pack("!H", len(b)) + b


class MqttProtocolError(RuntimeError):
    """The broker refused the connection or broke the protocol."""


class RawPublisher:
    """Minimal MQTT 5 QoS 1 publisher: one socket, a PUBACK reader thread, flow control."""

    def __init__(self, host: str, port: int, username: str, password: str, client_id: str):
        self.sock = socket.create_connection((host, port), timeout=15)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        var = _utf8("MQTT") + bytes([5, 0xC2]) + struct.pack("!H", 60) + _varint(0)
        payload = _utf8(client_id) + _utf8(username) + _utf8(password)
        body = var + payload
        self.sock.sendall(b"\x10" + _varint(len(body)) + body)
        self._buf = b""
        ptype, data = self._read_packet()
        if ptype != 0x20 or data[1] != 0:
            raise MqttProtocolError(f"CONNACK refused (reason code {data[1]:#x})")
        self.receive_maximum = self._receive_maximum(data)
        self.sock.settimeout(None)
        self.window = threading.BoundedSemaphore(self.receive_maximum)
        self.acked = 0
        self._next_id = 0
        self.closed = threading.Event()
        self._reader = threading.Thread(target=self._read_acks, name="puback-reader", daemon=True)
        self._reader.start()

    @staticmethod
    def _receive_maximum(connack: bytes) -> int:
        # properties: varint length, then (id, value) pairs; 0x21 = Receive Maximum (u16)
        i, mult, plen = 2, 1, 0
        while True:
            b = connack[i]
            plen += (b & 0x7F) * mult
            mult *= 128
            i += 1
            if not b & 0x80:
                break
        end = i + plen
        sizes = {0x11: 4, 0x21: 2, 0x22: 2, 0x24: 1, 0x25: 1, 0x27: 4, 0x28: 1, 0x29: 1, 0x2A: 1}
        while i < end:
            pid = connack[i]
            i += 1
            if pid == 0x21:
                return int(struct.unpack_from("!H", connack, i)[0])
            if pid in sizes:
                i += sizes[pid]
            elif pid == 0x13:  # server keep alive
                i += 2
            else:  # string / binary / user property: skip length-prefixed fields
                n = struct.unpack_from("!H", connack, i)[0]
                i += 2 + n
                if pid == 0x26:
                    n = struct.unpack_from("!H", connack, i)[0]
                    i += 2 + n
        return 65535

    def _fill(self, n: int) -> None:
        while len(self._buf) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise MqttProtocolError("broker closed the connection")
            self._buf += chunk

    def _read_packet(self) -> tuple[int, bytes]:
        self._fill(2)
        ptype = self._buf[0] & 0xF0
        length, mult, i = 0, 1, 1
        while True:
            self._fill(i + 1)
            b = self._buf[i]
            length += (b & 0x7F) * mult
            mult *= 128
            i += 1
            if not b & 0x80:
                break
        self._fill(i + length)
        data = self._buf[i : i + length]
        self._buf = self._buf[i + length :]
        return ptype, data

    def _read_acks(self) -> None:
        release = self.window.release
        try:
            while True:
                ptype, _ = self._read_packet()
                if ptype == 0x40:  # PUBACK (reason code 0 or absent = success)
                    if len(_) < 3 or _[2] < 0x80:
                        self.acked += 1
                    release()
                elif ptype == 0xE0:
                    raise MqttProtocolError("broker sent DISCONNECT")
        except (OSError, MqttProtocolError, ValueError):
            self.closed.set()

    def publish_many(self, messages: list[tuple[bytes, bytes]]) -> None:
        """QoS 1 PUBLISH of (topic, payload) pairs, sent in one write when the window allows."""
        out = bytearray()
        acquire = self.window.acquire
        for topic, payload in messages:
            if not acquire(blocking=False):
                if out:
                    self.sock.sendall(out)
                    out.clear()
                if not acquire(timeout=30):
                    raise MqttProtocolError("no PUBACK for 30 s: broker stalled")
            self._next_id = self._next_id % 65535 + 1
            rest = (
                struct.pack("!H", len(topic)) + topic + struct.pack("!H", self._next_id) + b"\x00"
            )
            out += b"\x32" + _varint(len(rest) + len(payload)) + rest + payload
        if out:
            self.sock.sendall(out)

    def wait_acked(self, expected: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while self.acked < expected and time.monotonic() < deadline and not self.closed.is_set():
            time.sleep(0.02)

    def close(self) -> None:
        try:
            self.sock.sendall(b"\xe0\x00")
            self.sock.close()
        except OSError:
            pass


def publish_load(spec: LoadSpec) -> LoadResult:
    pub = RawPublisher(spec.host, spec.port, spec.username, spec.password, spec.client_id)
    topics = [telemetry_topic(d).encode() for d in spec.device_ids]
    last_ts = [0] * len(topics)
    total = int(spec.rate * spec.duration_s)
    per = spec.per_message
    sent = messages = dev = 0
    n_dev = len(topics)
    t0 = time.monotonic()
    while sent < total:
        if spec.as_fast_as_possible:
            due = min(total, sent + 2000 * per)
        else:
            due = min(total, int((time.monotonic() - t0) * spec.rate) + per)
        chunk: list[tuple[bytes, bytes]] = []
        now_ms = int(time.time() * 1000)
        while sent < due:
            ts = max(now_ms, last_ts[dev] + 1)
            lat = -5.14 - dev * 1e-5
            if per == 1:
                payload = encode_fix(Fix(ts=ts, lat=lat, lon=119.42, seq=sent))
            else:
                payload = encode_batch(
                    [Fix(ts=ts + k, lat=lat, lon=119.42, seq=sent + k) for k in range(per)]
                )
            last_ts[dev] = ts + per - 1
            chunk.append((topics[dev], payload))
            sent += per
            messages += 1
            dev = (dev + 1) % n_dev
        if chunk:
            pub.publish_many(chunk)
        if not spec.as_fast_as_possible:
            time.sleep(0.002)
    pub.wait_acked(messages, timeout=max(120.0, spec.duration_s))
    seconds = time.monotonic() - t0
    pub.close()
    return LoadResult(sent, pub.acked * per, messages, seconds)
