"""A lean MQTT 5 QoS 1 publisher: one non-blocking socket, batched writes, bulk PUBACKs.

paho-mqtt spends tens of microseconds of Python per QoS 1 message (message objects, a
condition variable per message, reason-code objects for every PUBACK), which caps one
process at a few thousand messages a second: too slow to generate load.  This publisher
appends PUBLISH packets to one buffer, writes it with few ``send`` calls and parses
PUBACKs in bulk.

* Window: at most ``min(max_inflight, the broker's Receive Maximum)`` messages are
  unacknowledged; :attr:`Publisher.full` tells a caller to wait (:meth:`Publisher.pump`
  or its own selector), :meth:`Publisher.publish_many` waits by itself.
* Counting: every message carries a ``weight`` (e.g. the fixes in it).  Only a success
  PUBACK counts it (:attr:`~Publisher.acked`, :attr:`~Publisher.weight_acked`); a PUBACK
  with an error reason counts it as :attr:`~Publisher.refused`.
* Reconnect (optional): after a loss, :meth:`Publisher.resume` connects again and sends
  every unacknowledged message again, in the original order (QoS 1: at least once).
* Keepalive: :meth:`Publisher.keepalive` queues a PINGREQ when nothing was sent for half
  the keepalive interval.

The socket is driven either by the caller's selector (:meth:`~Publisher.write`,
:meth:`~Publisher.read`) or by :meth:`~Publisher.pump`.
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import time
from collections.abc import Iterable

from mqtt5 import _codec as codec
from mqtt5._errors import MqttConnectionLostError, MqttProtocolError, MqttTimeoutError
from mqtt5._handshake import open_session

__all__ = ["Publisher"]


class Publisher:
    """One MQTT 5 connection that publishes QoS 1 messages."""

    def __init__(
        self,
        client_id: str,
        username: str | None,
        password: str | None,
        *,
        keepalive_s: int = 60,
        max_inflight: int = 65535,
    ) -> None:
        self.client_id = client_id
        self.username = username
        self.password = password
        self.keepalive_s = keepalive_s
        self.max_inflight = max_inflight
        self.window = max_inflight
        self.sock: socket.socket | None = None
        self.connected = False
        self.published = 0
        self.acked = 0  # messages with a success PUBACK
        self.weight_acked = 0  # their summed weights
        self.refused = 0  # messages the broker answered with an error PUBACK
        self.lost_at: float | None = None  # monotonic time the connection was lost
        self._out = bytearray()
        self._in = bytearray()
        self._next_mid = 1
        self._pending: dict[int, tuple[bytes, int]] = {}  # packet id → (packet, weight)
        self._last_send = time.monotonic()
        self._topics: dict[str, bytes] = {}
        self._selector: selectors.BaseSelector | None = None

    # -- connection -------------------------------------------------------------------

    def connect(self, host: str, port: int, timeout: float = 15.0) -> None:
        """Connect (clean start).

        Raises :class:`OSError` (broker not reachable) or a :class:`~mqtt5.MqttError`
        (:class:`~mqtt5.MqttConnectRefusedError` with the reason code when it refuses us).
        """
        session = open_session(
            host,
            port,
            client_id=self.client_id,
            username=self.username,
            password=self.password,
            keepalive=self.keepalive_s,
            timeout=timeout,
        )
        self.window = max(1, min(self.max_inflight, session.connack.receive_maximum))
        self._in = session.leftover
        session.sock.setblocking(False)
        self.sock = session.sock
        self.connected = True
        self._last_send = time.monotonic()

    def resume(self, host: str, port: int, timeout: float = 5.0) -> None:
        """Reconnect after a loss and send every unacknowledged message again, in order."""
        self.connect(host, port, timeout)
        self.lost_at = None
        for packet, _ in self._pending.values():
            self._out += packet

    def close(self) -> None:
        """Write what is queued plus a DISCONNECT (a clean goodbye), then close."""
        if self.sock is not None:
            if self.connected:
                self._out += codec.DISCONNECT_PACKET
                self.sock.setblocking(True)
                with contextlib.suppress(OSError):
                    self.sock.sendall(self._out)
                self._out.clear()
            self.sock.close()
        if self._selector is not None:
            self._selector.close()
            self._selector = None
        self.sock = None
        self.connected = False

    def _lost(self) -> None:
        self.connected = False
        self.lost_at = time.monotonic()
        if self._selector is not None:
            self._selector.close()
            self._selector = None
        if self.sock is not None:
            self.sock.close()
        self.sock = None
        self._out.clear()
        self._in.clear()

    # -- publishing -------------------------------------------------------------------

    @property
    def outstanding(self) -> int:
        """Messages without a PUBACK yet (including those waiting for a reconnect)."""
        return len(self._pending)

    @property
    def full(self) -> bool:
        return len(self._pending) >= self.window

    def publish(self, topic: str, payload: bytes, weight: int = 0, retain: bool = False) -> bool:
        """Queue one QoS 1 PUBLISH (written by :meth:`write`); False when not connected.

        The caller respects the window (:attr:`full`).
        """
        if not self.connected:
            return False
        t = self._topics.get(topic)
        if t is None:
            t = self._topics[topic] = topic.encode()
        mid = self._next_mid
        self._next_mid = mid % 65535 + 1
        packet = codec.publish_packet(t, payload, mid, retain=retain)
        self._out += packet
        self._pending[mid] = (packet, weight)
        self.published += 1
        return True

    def write(self) -> None:
        """Send as much of the queued bytes as the socket takes now."""
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
        """Read what arrived and count the PUBACKs in it."""
        if self.sock is None:
            return
        try:
            data = self.sock.recv(1 << 20)
        except BlockingIOError:
            return
        except OSError:
            self._lost()
            return
        if not data:
            self._lost()
            return
        self._in += data
        try:
            packets, used = codec.split_packets(self._in)
        except MqttProtocolError:
            self._lost()
            return
        del self._in[:used]
        pending = self._pending
        for first, body in packets:
            ptype = first & 0xF0
            if ptype == codec.PUBACK and len(body) >= 2:
                done = pending.pop((body[0] << 8) | body[1], None)
                if done is None:
                    continue
                if codec.puback_succeeded(body):
                    self.acked += 1
                    self.weight_acked += done[1]
                else:
                    self.refused += 1
            elif ptype == codec.DISCONNECT:
                self._lost()
                return

    def keepalive(self) -> None:
        if self.connected and time.monotonic() - self._last_send > self.keepalive_s / 2:
            self._out += codec.PINGREQ_PACKET

    # -- driving the socket itself (when no caller's selector does) -------------------

    def pump(self, timeout: float) -> None:
        """Write what is queued, wait up to ``timeout`` for the broker, read its answers."""
        sock = self.sock
        if sock is None:
            time.sleep(timeout)
            return
        if self._selector is None:
            self._selector = selectors.DefaultSelector()
            self._selector.register(sock, selectors.EVENT_READ)
        self.write()
        events = selectors.EVENT_READ | (selectors.EVENT_WRITE if self._out else 0)
        if self.sock is None:
            return
        self._selector.modify(sock, events)
        for _, mask in self._selector.select(timeout):
            if mask & selectors.EVENT_READ:
                self.read()
            if mask & selectors.EVENT_WRITE:
                self.write()
        self.keepalive()

    def publish_many(self, messages: Iterable[tuple[str, bytes]], timeout: float = 30.0) -> None:
        """Publish (topic, payload) pairs, waiting for room in the window as needed.

        Raises :class:`~mqtt5.MqttConnectionLostError` when the connection is lost and
        :class:`~mqtt5.MqttTimeoutError` when no PUBACK makes room for ``timeout`` seconds.
        """
        for topic, payload in messages:
            if self.full:
                deadline = time.monotonic() + timeout
                while self.full and self.connected:
                    if time.monotonic() > deadline:
                        raise MqttTimeoutError(
                            f"no PUBACK for {timeout:.0f} s: broker stalled", timeout_s=timeout
                        )
                    self.pump(0.05)
            if not self.publish(topic, payload, 1):
                raise MqttConnectionLostError("connection to the broker lost")
        self.write()

    def wait_acked(self, timeout: float) -> bool:
        """Pump until every message is answered (or ``timeout``); True when all were."""
        deadline = time.monotonic() + timeout
        while self._pending and self.connected and time.monotonic() < deadline:
            self.pump(min(0.05, max(0.0, deadline - time.monotonic())))
        return not self._pending
