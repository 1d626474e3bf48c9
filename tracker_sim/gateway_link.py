"""Gateway mode transport: a lean MQTT 3.1.1 QoS 1 publisher for load generation.

paho-mqtt spends ~50-100 µs of Python per QoS 1 message (message objects, a condition
variable per message, reason-code decoding of every PUBACK), which caps one process
at ~5,000 messages/s — too slow to load-test ingest.  A gateway only ever *publishes*,
so this module speaks just the packets it needs (CONNECT/CONNACK, PUBLISH QoS 1,
PUBACK, PINGREQ/PINGRESP, DISCONNECT) on a non-blocking socket: PUBLISH packets are
appended to one buffer and written with few ``send`` calls, PUBACKs are parsed in
bulk.  Every fix is still its own PUBLISH and counted only when its PUBACK arrives.
The per-device mode keeps paho (:mod:`tracker_sim.links`): realistic clients, LWT.
"""

from __future__ import annotations

import contextlib
import logging
import selectors
import socket
import struct
import threading
import time
from collections.abc import Sequence
from typing import Final

from tracker_sim.links import MAX_INFLIGHT_PER_LINK, Credentials, LinkError, Sender

__all__ = ["GatewayLink", "GatewayPool"]

log = logging.getLogger(__name__)

KEEPALIVE_S: Final = 60
RECONNECT_EVERY_S: Final = 2.0
_CONNACK_ERRORS: Final = {
    1: "unacceptable protocol version",
    2: "client id rejected",
    3: "server unavailable",
    4: "bad user name or password",
    5: "not authorized",
}


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | 0x80 if n else byte)
        if not n:
            return bytes(out)


def _utf8(text: str) -> bytes:
    raw = text.encode()
    return struct.pack("!H", len(raw)) + raw


class GatewayLink:
    """One MQTT 3.1.1 connection that publishes QoS 1 messages for many vans."""

    def __init__(self, client_id: str, creds: Credentials) -> None:
        self.client_id = client_id
        self.creds = creds
        self.device: str | None = None
        self.sock: socket.socket | None = None
        self.connected = False
        self.published = 0
        self.acked = 0
        self.fixes_acked = 0
        self._out = bytearray()
        self._in = bytearray()
        self._next_mid = 1
        self._pending: dict[int, tuple[bytes, int]] = {}  # packet id → (packet, fixes)
        self.lost_at: float | None = None  # monotonic time the connection was lost
        self._last_send = time.monotonic()
        self._topics: dict[str, bytes] = {}

    # ------------------------------------------------------------ connection

    def connect(self, host: str, port: int, timeout: float) -> None:
        try:
            sock = socket.create_connection((host, port), timeout=timeout)
        except OSError as exc:
            raise LinkError(
                f"cannot reach the MQTT broker at {host}:{port}: {exc.strerror or exc}"
                " (is `fleet broker` running? check --host/--port or FLEET_MQTT_HOST/PORT)"
            ) from None
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        body = (
            _utf8("MQTT")
            + bytes([4, 0xC2])  # level 4 (3.1.1); flags: user name, password, clean session
            + struct.pack("!H", KEEPALIVE_S)
            + _utf8(self.client_id)
            + _utf8(self.creds.username)
            + _utf8(self.creds.password)
        )
        sock.sendall(b"\x10" + _varint(len(body)) + body)
        ack = b""
        try:
            while len(ack) < 4:
                chunk = sock.recv(4 - len(ack))
                if not chunk:
                    break
                ack += chunk
        except OSError as exc:
            sock.close()
            raise LinkError(f"no CONNACK from {host}:{port}: {exc}") from None
        if len(ack) < 4 or ack[0] != 0x20:
            sock.close()
            raise LinkError(f"no CONNACK from {host}:{port} for {self.client_id}")
        if ack[3] != 0:
            sock.close()
            reason = _CONNACK_ERRORS.get(ack[3], f"code {ack[3]}")
            raise LinkError(
                f"the broker refused {self.creds.username} ({reason}); check the gateway "
                "credentials (--password, FLEET_MQTT_PASSWORD or --data-dir)"
            )
        sock.setblocking(False)
        self.sock = sock
        self.connected = True

    def close(self) -> None:
        if self.sock is not None:
            if self.connected:
                self._out += b"\xe0\x00"  # DISCONNECT: no will, a clean goodbye
                self.sock.setblocking(True)
                with contextlib.suppress(OSError):
                    self.sock.sendall(self._out)
                self._out.clear()
            self.sock.close()
        self.sock = None
        self.connected = False

    # ------------------------------------------------------------ publishing

    @property
    def outstanding(self) -> int:
        return self.published - self.acked

    @property
    def full(self) -> bool:
        return self.published - self.acked >= MAX_INFLIGHT_PER_LINK

    def publish(self, topic: str, payload: bytes, fixes: int = 0, retain: bool = False) -> bool:
        """Queue one QoS 1 PUBLISH; written by :meth:`write` (the pool calls it)."""
        if not self.connected:
            return False
        t = self._topics.get(topic)
        if t is None:
            t = self._topics[topic] = _utf8(topic)
        mid = self._next_mid
        self._next_mid = mid % 65535 + 1
        n = len(t) + 2 + len(payload)
        if n < 128:
            length = bytes((n,))
        elif n < 16384:
            length = bytes(((n & 0x7F) | 0x80, n >> 7))
        else:
            length = _varint(n)
        packet = b"".join(
            (b"\x33" if retain else b"\x32", length, t, mid.to_bytes(2, "big"), payload)
        )
        self._out += packet
        self._pending[mid] = (packet, fixes)
        self.published += 1
        return True

    def write(self) -> None:
        if self.sock is None or not self._out:
            return
        try:
            sent = self.sock.send(self._out)
        except BlockingIOError:
            return
        except OSError:
            self._lost()
            return
        del self._out[:sent]
        self._last_send = time.monotonic()

    def read(self) -> None:
        if self.sock is None:
            return
        try:
            data = self.sock.recv(65536)
        except BlockingIOError:
            return
        except OSError:
            self._lost()
            return
        if not data:
            self._lost()
            return
        buf = self._in
        buf += data
        pos = 0
        n = len(buf)
        while n - pos >= 2:
            kind = buf[pos]
            length = buf[pos + 1]  # PUBACK / PINGRESP: remaining length < 128
            if n - pos < 2 + length:
                break
            if kind == 0x40 and length == 2:
                mid = (buf[pos + 2] << 8) | buf[pos + 3]
                done = self._pending.pop(mid, None)
                if done is not None:
                    self.acked += 1
                    self.fixes_acked += done[1]
            pos += 2 + length
        del buf[:pos]

    def keepalive(self) -> None:
        if self.connected and time.monotonic() - self._last_send > KEEPALIVE_S / 2:
            self._out += b"\xc0\x00"  # PINGREQ

    def _lost(self) -> None:
        self.connected = False
        self.lost_at = time.monotonic()
        if self.sock is not None:
            self.sock.close()
        self.sock = None
        self._out.clear()
        self._in.clear()

    def resume(self, host: str, port: int, timeout: float) -> None:
        """Reconnect after a loss and send every unacknowledged message again, in the
        original order (QoS 1: at least once; the platform deduplicates)."""
        self.connect(host, port, timeout)
        self.lost_at = None
        for packet, _ in self._pending.values():
            self._out += packet


class GatewayPool:
    """The same driving interface as :class:`tracker_sim.links.LinkPool`."""

    def __init__(
        self,
        host: str,
        port: int,
        max_outstanding: int = 5000,
        stopping: threading.Event | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.max_outstanding = max_outstanding
        self.stopping = stopping or threading.Event()
        self.links: list[GatewayLink] = []
        self._selector = selectors.DefaultSelector()
        self._registered = 0

    def connect(self, links: Sequence[GatewayLink], timeout: float = 20.0) -> None:
        for link in links:
            link.connect(self.host, self.port, timeout)
            assert link.sock is not None
            self._selector.register(link.sock, selectors.EVENT_READ, link)
            self._registered += 1
            self.links.append(link)

    def pump(self, timeout: float) -> None:
        for link in self.links:
            link.write()
        for key, _ in self._selector.select(timeout) if self._registered else ():
            link = key.data
            link.read()
            if not link.connected:
                self._selector.unregister(key.fileobj)
                self._registered -= 1
                log.warning(
                    "gateway connection %s lost; reconnecting (%d messages to resend)",
                    link.client_id,
                    link.outstanding,
                )
        if not self._registered and timeout > 0:
            time.sleep(timeout)
        now = time.monotonic()
        for link in self.links:
            if link.connected:
                link.keepalive()
            elif link.lost_at is not None and now - link.lost_at >= RECONNECT_EVERY_S:
                try:
                    link.resume(self.host, self.port, timeout=5.0)
                except LinkError as exc:
                    link.lost_at = now
                    log.debug("reconnect of %s failed: %s", link.client_id, exc)
                    continue
                assert link.sock is not None
                self._selector.register(link.sock, selectors.EVENT_READ, link)
                self._registered += 1
                log.warning("gateway connection %s restored", link.client_id)

    def wait_for_room(self, link: Sender) -> None:
        """Back-pressure: wait while ``link`` has too much in flight or is reconnecting
        (unless the simulator is stopping)."""
        while (link.full or not link.connected) and not self.stopping.is_set():
            self.pump(0.01)

    def outstanding(self) -> int:
        """Unacknowledged messages, including those waiting for a reconnect."""
        return sum(lk.outstanding for lk in self.links)

    def throttle(self) -> None:
        while self.outstanding() > self.max_outstanding:
            self.pump(0.01)

    def flush(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while self.outstanding() > 0 and time.monotonic() < deadline:
            self.pump(0.02)
        return self.outstanding() == 0

    def close(self, timeout: float = 10.0) -> None:
        self.flush(timeout)
        for link in self.links:
            if link.sock is not None and link.connected:
                self._selector.unregister(link.sock)
            link.close()
        self.links = []

    def totals(self) -> tuple[int, int]:
        return sum(lk.acked for lk in self.links), sum(lk.fixes_acked for lk in self.links)
