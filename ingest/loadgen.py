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

import contextlib
import socket
import threading
import time
from dataclasses import dataclass

from fleet.contract import Fix, encode_batch, encode_fix, telemetry_topic
from ingest import mqtt5

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


class RawPublisher:
    """Minimal MQTT 5 QoS 1 publisher: one socket, a PUBACK reader thread, flow control.

    The broker's Receive Maximum bounds the messages in flight; only a successful PUBACK
    counts a message as acknowledged.
    """

    def __init__(self, host: str, port: int, username: str, password: str, client_id: str):
        self.sock = socket.create_connection((host, port), timeout=15)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        connect = mqtt5.connect_packet(
            client_id,
            username,
            password,
            keepalive=60,
            clean_start=True,
            session_expiry_s=0,
            receive_maximum=65535,
        )
        self.sock.sendall(connect)
        buf = bytearray()
        packets: list[tuple[int, bytes]] = []
        used = 0
        while not packets:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise mqtt5.MqttProtocolError("broker closed the connection during CONNECT")
            buf += chunk
            packets, used = mqtt5.split_packets(buf)
        first, body = packets[0]
        ack = mqtt5.decode_connack(body)
        if first & 0xF0 != mqtt5.CONNACK or ack.reason_code >= 0x80:
            raise mqtt5.MqttProtocolError(
                f"broker refused the load generator: {mqtt5.reason_text(ack.reason_code)}",
                ack.reason_code,
            )
        self.receive_maximum = ack.receive_maximum
        self.sock.settimeout(None)
        self.window = threading.BoundedSemaphore(self.receive_maximum)
        self.acked = 0
        self._next_id = 0
        self.closed = threading.Event()
        self._buf = buf[used:]
        self._reader = threading.Thread(target=self._read_acks, name="puback-reader", daemon=True)
        self._reader.start()

    def _read_acks(self) -> None:
        release = self.window.release
        buf = self._buf
        try:
            while True:
                packets, used = mqtt5.split_packets(buf)
                del buf[:used]
                for first, body in packets:
                    ptype = first & 0xF0
                    if ptype == mqtt5.PUBACK:
                        if len(body) < 3 or body[2] < 0x80:  # no reason code = success
                            self.acked += 1
                        release()
                    elif ptype == mqtt5.DISCONNECT:
                        raise mqtt5.MqttProtocolError("broker sent DISCONNECT")
                chunk = self.sock.recv(1 << 20)
                if not chunk:
                    raise mqtt5.MqttProtocolError("broker closed the connection")
                buf += chunk
        except (OSError, mqtt5.MqttProtocolError, ValueError):
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
                    raise mqtt5.MqttProtocolError("no PUBACK for 30 s: broker stalled")
            self._next_id = self._next_id % 65535 + 1
            out += mqtt5.publish_packet(topic, payload, self._next_id)
        if out:
            self.sock.sendall(out)

    def wait_acked(self, expected: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while self.acked < expected and time.monotonic() < deadline and not self.closed.is_set():
            time.sleep(0.02)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.sendall(mqtt5.DISCONNECT_PACKET)
            self.sock.close()


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
