"""A QoS 0/1 MQTT 5 subscriber on one socket: one reader thread, batches, batched PUBACKs.

One ``recv`` fetches many packets; every complete PUBLISH in it becomes a
:class:`Message` of one batch, delivered to a callback (on the reader thread) or put on
:attr:`MqttSubscriber.inbox`.

Acknowledgement is either *immediate* (the batch's PUBACKs leave in one write once the
callback returned or the batch was queued) or *manual*: a QoS 1 PUBLISH is acknowledged
only when :meth:`MqttSubscriber.ack` is called (ingest does so after the batch holding it
has committed).  Until then the broker counts the message as in flight and redelivers it
after a reconnect (MQTT 5, 4.4); the Receive Maximum we announce bounds how many
unacknowledged messages it sends us, which bounds our memory.  With a persistent session
(Clean Start 0 and a Session Expiry) the broker queues for us while we are away.

Packet ids are only meaningful on the connection that received them: every message is
tagged with the connection's generation, and acks for an older generation are dropped
(the broker redelivers those messages on the new connection).

The subscriber reconnects with jittered exponential backoff and subscribes again on
every connection; :attr:`MqttSubscriber.subscribed` is set once the broker granted every
topic (retained messages follow the SUBACK).
"""

from __future__ import annotations

import itertools
import logging
import queue
import random
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from fleet.mqtt import codec
from fleet.mqtt.handshake import Session, open_session

__all__ = ["Message", "MqttSubscriber", "SubscriberOptions"]

log = logging.getLogger(__name__)

SUBSCRIBE_ID = 1


@dataclass(frozen=True, slots=True)
class Message:
    mid: int
    qos: int
    topic: str
    payload: bytes
    generation: int
    received: float  # time.monotonic()


@dataclass(frozen=True)
class SubscriberOptions:
    host: str
    port: int
    username: str | None
    password: str | None
    client_id: str
    topics: Sequence[str]
    qos: int = 1
    clean_start: bool = True
    session_expiry_s: int = 0
    receive_maximum: int = 65535
    manual_ack: bool = False  # True: QoS 1 messages are acked only by ack()
    keepalive_s: int = 30
    reconnect_max_s: float = 10.0
    refused_hint: str = "check the MQTT user name and password"
    read_chunk: int = 1 << 20
    receive_buffer: int = 4 * 1024 * 1024


BatchHandler = Callable[[list[Message]], None]


class MqttSubscriber:
    """Subscribe on a reader thread; deliver batches to ``on_batch`` or :attr:`inbox`."""

    def __init__(self, options: SubscriberOptions, on_batch: BatchHandler | None = None) -> None:
        self.options = options
        self.on_batch = on_batch
        self.inbox: queue.SimpleQueue[list[Message]] = queue.SimpleQueue()
        self.generation = 0
        self.connected = threading.Event()  # CONNACK received
        self.subscribed = threading.Event()  # ... and every topic granted
        self.last_error: str | None = "not connected yet"
        self._stop = threading.Event()
        self._send_lock = threading.Lock()
        self._conn_lock = threading.Lock()  # generation and _sock change together
        self._sock: socket.socket | None = None
        self._publish_ids = itertools.count()  # next() is atomic: publish() from any thread
        self._thread = threading.Thread(target=self._run, name="mqtt-reader", daemon=True)

    # -- lifecycle ----------------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        sock = self._sock
        if sock is not None:
            # A normal DISCONNECT: a persistent session stays on the broker (Session
            # Expiry) and its unacknowledged messages are redelivered later.
            try:
                with self._send_lock:
                    sock.sendall(codec.DISCONNECT_PACKET)
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    # -- sending --------------------------------------------------------------------------

    def ack(self, messages: Sequence[Message]) -> int:
        """PUBACK the QoS 1 messages of the current connection in one write; return how many."""
        # The generation and the socket are read together: a PUBACK must never leave on a
        # newer connection than the one that received its PUBLISH (packet ids are reused).
        with self._conn_lock:
            gen, sock = self.generation, self._sock
        out = b"".join(
            codec.puback_packet(m.mid) for m in messages if m.qos == 1 and m.generation == gen
        )
        return len(out) // 4 if out and self._send(out, "PUBACKs", sock) else 0

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> bool:
        """Send one PUBLISH on this connection (fire and forget); False when not connected."""
        if not self.connected.is_set():
            return False
        packet_id = next(self._publish_ids) % 65534 + 2  # 1 is SUBSCRIBE's
        packet = codec.publish_packet(topic.encode(), payload, packet_id, qos=qos, retain=retain)
        return self._send(packet, "PUBLISH", self._sock)

    def _send(self, data: bytes, what: str, sock: socket.socket | None) -> bool:
        if sock is None:
            return False
        try:
            with self._send_lock:
                sock.sendall(data)
        except OSError as exc:
            log.warning("could not send %s (%s); the connection is being replaced", what, exc)
            return False
        return True

    # -- connection handling (reader thread) -----------------------------------------------

    def _connect(self) -> Session:
        o = self.options
        try:
            session = open_session(
                o.host,
                o.port,
                client_id=o.client_id,
                username=o.username,
                password=o.password,
                keepalive=o.keepalive_s,
                clean_start=o.clean_start,
                session_expiry_s=o.session_expiry_s,
                receive_maximum=o.receive_maximum,
            )
        except codec.MqttProtocolError as exc:
            if exc.reason_code is None:
                raise
            raise codec.MqttProtocolError(f"{exc}; {o.refused_hint}", exc.reason_code) from None
        sock = session.sock
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, o.receive_buffer)
        with self._conn_lock:
            self.generation += 1
            self._sock = sock
        log.info(
            "connected to broker",
            extra={
                "broker": f"{o.host}:{o.port}",
                "session_present": session.connack.session_present,
                "generation": self.generation,
            },
        )
        try:
            sock.sendall(codec.subscribe_packet(SUBSCRIBE_ID, list(o.topics), qos=o.qos))
        except OSError:
            with self._conn_lock:
                self._sock = None
            sock.close()
            raise
        sock.settimeout(o.keepalive_s / 2)
        return session

    def _run(self) -> None:
        o = self.options
        delay = 0.5
        while not self._stop.is_set():
            try:
                session = self._connect()
            except (OSError, codec.MqttProtocolError) as exc:
                self.last_error = f"cannot connect to broker {o.host}:{o.port}: {exc}"
                refused = isinstance(exc, codec.MqttProtocolError)
                level = logging.ERROR if refused else logging.WARNING
                log.log(level, "%s; retrying in %.1f s", self.last_error, delay)
                if self._stop.wait(delay * random.uniform(0.8, 1.2)):
                    return
                delay = min(delay * 2, o.reconnect_max_s)
                continue
            delay = 0.5
            sock = session.sock
            self.last_error = "connected; waiting for the subscription to be granted"
            self.connected.set()
            try:
                self._read_loop(session)
            except (OSError, codec.MqttProtocolError) as exc:
                if not self._stop.is_set():
                    self.last_error = f"disconnected from broker: {exc}"
                    log.warning("disconnected from broker: %s; reconnecting", exc)
            except Exception:
                # A packet we cannot parse must not silently end consumption: drop the
                # connection (nothing unacknowledged is lost) and start over.
                self.last_error = "unexpected error reading from the broker"
                log.exception("unexpected error reading from the broker; reconnecting")
            finally:
                self.connected.clear()
                self.subscribed.clear()
                with self._conn_lock:
                    self._sock = None
                sock.close()

    def _read_loop(self, session: Session) -> None:
        sock = session.sock
        buf = session.leftover
        self._handle(session.packets)
        idle_timeouts = 0
        chunk_size = self.options.read_chunk
        while not self._stop.is_set():
            try:
                chunk = sock.recv(chunk_size)
            except TimeoutError:
                idle_timeouts += 1
                if idle_timeouts > 2:
                    raise codec.MqttProtocolError(
                        "no PINGRESP from broker: connection dead"
                    ) from None
                with self._send_lock:
                    sock.sendall(codec.PINGREQ_PACKET)
                continue
            if not chunk:
                raise codec.MqttProtocolError("broker closed the connection")
            idle_timeouts = 0
            buf += chunk
            packets, used = codec.split_packets(buf)
            del buf[:used]
            self._handle(packets)

    def _handle(self, packets: list[tuple[int, bytes]]) -> None:
        now = time.monotonic()
        gen = self.generation
        batch: list[Message] = []
        decode = codec.decode_publish
        for first, body in packets:
            ptype = first & 0xF0
            if ptype == codec.PUBLISH:
                p = decode(first, body)
                batch.append(Message(p.packet_id, p.qos, p.topic, p.payload, gen, now))
            elif ptype == codec.SUBACK:
                self._on_suback(body)
            elif ptype == codec.DISCONNECT:
                code = body[0] if body else 0
                raise codec.MqttProtocolError(
                    f"broker disconnected us: {codec.reason_text(code)}", code
                )
            # PUBACK (of our publish), PINGRESP and anything else: nothing to do
        if batch:
            self._deliver(batch)

    def _on_suback(self, body: bytes) -> None:
        refused = [
            f"{topic} ({codec.reason_text(rc)})"
            for topic, rc in zip(self.options.topics, codec.suback_reasons(body), strict=False)
            if rc >= 0x80
        ]
        if refused:
            self.last_error = f"broker refused the subscription: {', '.join(refused)}"
            log.error("%s; check the broker ACL", self.last_error)
            return
        self.last_error = None
        self.subscribed.set()
        log.info("subscribed", extra={"topics": list(self.options.topics)})

    def _deliver(self, batch: list[Message]) -> None:
        if self.on_batch is None:
            self.inbox.put(batch)
        else:
            try:
                self.on_batch(batch)
            except Exception:
                log.exception("message handler failed; %d messages skipped", len(batch))
        if not self.options.manual_ack:
            self.ack(batch)
