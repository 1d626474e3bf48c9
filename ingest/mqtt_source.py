"""The MQTT side of ingest: a persistent session whose PUBACKs we send ourselves.

A QoS 1 PUBLISH is acknowledged only when :meth:`MqttSource.ack` is called, which the
worker does after the batch holding it has committed.  Until then the broker counts the
message as in flight and redelivers it after a reconnect (MQTT 5, 4.4); the Receive
Maximum we announce bounds how many unacknowledged messages it sends us, which bounds
our memory.  The session is persistent (Clean Start 0, a long Session Expiry), so while
the worker is down the broker queues for it.

Packet ids are only meaningful on the connection that received them: every message is
tagged with the connection's generation, and acks for an older generation are dropped
(the broker redelivers those messages on the new connection, and the duplicate insert
is a no-op).

The client is a small purpose-built one (:mod:`ingest.mqtt5`): one reader thread, one
buffered ``recv`` for many packets, and all of a batch's PUBACKs in one ``send``.
"""

from __future__ import annotations

import logging
import queue
import random
import socket
import threading
import time
from dataclasses import dataclass

from fleet.settings import IngestSettings
from ingest import mqtt5

__all__ = ["Inbound", "MqttSource"]

log = logging.getLogger(__name__)

SUBSCRIPTIONS = ("fleet/+/telemetry", "fleet/+/status", "owntracks/+/+")
KEEPALIVE_S = 30


@dataclass(frozen=True, slots=True)
class Inbound:
    mid: int
    qos: int
    topic: str
    payload: bytes
    generation: int
    received: float  # time.monotonic()


class MqttSource:
    def __init__(self, settings: IngestSettings) -> None:
        self.settings = settings
        self.inbox: queue.SimpleQueue[list[Inbound]] = queue.SimpleQueue()
        self.generation = 0
        self.connected = threading.Event()
        self._stop = threading.Event()
        self._send_lock = threading.Lock()
        self._sock: socket.socket | None = None
        self._leftover = b""
        self._pending_after_connack: list[tuple[int, bytes]] = []
        self._thread = threading.Thread(target=self._run, name="mqtt-reader", daemon=True)

    def topics(self) -> list[str]:
        group = self.settings.share_group
        return [f"$share/{group}/{t}" if group else t for t in SUBSCRIPTIONS]

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        sock = self._sock
        if sock is not None:
            # Close without DISCONNECT semantics beyond the packet itself: the session
            # stays on the broker (Session Expiry), unacked messages are redelivered.
            try:
                with self._send_lock:
                    sock.sendall(mqtt5.DISCONNECT_PACKET)
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._thread.join(timeout=5)

    def ack(self, messages: list[Inbound]) -> int:
        """PUBACK messages of the current connection in one write; return how many."""
        gen = self.generation
        out = b"".join(
            mqtt5.puback_packet(m.mid) for m in messages if m.qos == 1 and m.generation == gen
        )
        if not out:
            return 0
        sock = self._sock
        if sock is None:
            return 0
        try:
            with self._send_lock:
                sock.sendall(out)
        except OSError as exc:
            log.warning("could not send PUBACKs (%s); the broker will redeliver", exc)
            return 0
        return len(out) // 4

    # connection handling (reader thread) ---------------------------------------------

    def _connect(self) -> socket.socket:
        s = self.settings
        sock = socket.create_connection((s.mqtt_host, s.mqtt_port), timeout=10)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
        sock.sendall(
            mqtt5.connect_packet(
                s.client_id,
                s.mqtt_username,
                s.mqtt_password,
                KEEPALIVE_S,
                clean_start=False,
                session_expiry_s=s.session_expiry_s,
                receive_maximum=s.receive_maximum,
            )
        )
        buf = bytearray()
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                raise mqtt5.MqttProtocolError("broker closed the connection during CONNECT")
            buf += chunk
            packets, used = mqtt5.split_packets(buf)
            if packets:
                break
        first, body = packets[0]
        if first & 0xF0 != mqtt5.CONNACK:
            raise mqtt5.MqttProtocolError(f"expected CONNACK, got packet type {first >> 4}")
        ack = mqtt5.decode_connack(body)
        if ack.reason_code >= 0x80:
            raise mqtt5.MqttProtocolError(
                f"broker refused the connection: {mqtt5.reason_text(ack.reason_code)}; "
                "check FLEET_MQTT_USERNAME / FLEET_MQTT_PASSWORD",
                ack.reason_code,
            )
        self.generation += 1
        log.info(
            "connected to broker",
            extra={"session_present": ack.session_present, "generation": self.generation},
        )
        sock.sendall(mqtt5.subscribe_packet(1, self.topics(), qos=1))
        # Whatever arrived after the CONNACK is handled by the read loop.
        self._leftover = bytes(buf[used:])
        self._pending_after_connack = packets[1:]
        sock.settimeout(KEEPALIVE_S / 2)
        return sock

    def _run(self) -> None:
        delay = 0.5
        while not self._stop.is_set():
            try:
                sock = self._connect()
            except (OSError, mqtt5.MqttProtocolError) as exc:
                level = (
                    logging.ERROR if isinstance(exc, mqtt5.MqttProtocolError) else logging.WARNING
                )
                log.log(
                    level,
                    "cannot connect to broker %s:%s: %s; retrying in %.1f s",
                    self.settings.mqtt_host,
                    self.settings.mqtt_port,
                    exc,
                    delay,
                )
                if self._stop.wait(delay * random.uniform(0.8, 1.2)):
                    return
                delay = min(delay * 2, 10.0)
                continue
            delay = 0.5
            self._sock = sock
            self.connected.set()
            try:
                self._read_loop(sock)
            except (OSError, mqtt5.MqttProtocolError) as exc:
                if not self._stop.is_set():
                    log.warning("disconnected from broker: %s; reconnecting", exc)
            except Exception:
                # A packet we cannot parse must not silently end consumption: drop the
                # connection (nothing of it was acked past commits) and start over.
                log.exception("unexpected error reading from the broker; reconnecting")
            finally:
                self.connected.clear()
                self._sock = None
                sock.close()

    def _read_loop(self, sock: socket.socket) -> None:
        buf = bytearray(self._leftover)
        self._handle(self._pending_after_connack)
        idle_timeouts = 0
        while not self._stop.is_set():
            try:
                chunk = sock.recv(1 << 20)
            except TimeoutError:
                idle_timeouts += 1
                if idle_timeouts > 2:
                    raise mqtt5.MqttProtocolError(
                        "no PINGRESP from broker: connection dead"
                    ) from None
                with self._send_lock:
                    sock.sendall(mqtt5.PINGREQ_PACKET)
                continue
            if not chunk:
                raise mqtt5.MqttProtocolError("broker closed the connection")
            idle_timeouts = 0
            buf += chunk
            packets, used = mqtt5.split_packets(buf)
            del buf[:used]
            self._handle(packets)

    def _handle(self, packets: list[tuple[int, bytes]]) -> None:
        now = time.monotonic()
        gen = self.generation
        batch: list[Inbound] = []
        decode = mqtt5.decode_publish
        for first, body in packets:
            ptype = first & 0xF0
            if ptype == mqtt5.PUBLISH:
                p = decode(first, body)
                batch.append(Inbound(p.packet_id, p.qos, p.topic, p.payload, gen, now))
            elif ptype == mqtt5.SUBACK:
                for topic, rc in zip(self.topics(), mqtt5.suback_reasons(body), strict=False):
                    if rc >= 0x80:
                        log.error(
                            "subscription to %s refused: %s; check the broker ACL",
                            topic,
                            mqtt5.reason_text(rc),
                        )
            elif ptype == mqtt5.DISCONNECT:
                code = body[0] if body else 0
                raise mqtt5.MqttProtocolError(
                    f"broker disconnected us: {mqtt5.reason_text(code)}", code
                )
            # PINGRESP and anything else: nothing to do
        if batch:
            self.inbox.put(batch)
