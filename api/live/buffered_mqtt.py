"""A paho-mqtt client that reads its socket in large chunks and batches its PUBACKs.

Stock paho 2.x reads one packet per ``select()`` and each packet with several small
``recv()`` calls (one byte of header, the length bytes, then the body), and sends every
PUBACK as its own write (plus a wake-up byte to its own loop).  At thousands of messages
a second that costs more than the messages themselves.  This client keeps a receive
buffer: one ``recv()`` fetches up to 256 KiB, and :meth:`loop_read` parses every complete
packet in it before going back to ``select()``; the PUBACKs of that burst (each still
after its handler returned) leave as one write; with a raw publish handler, MQTT 3.1.1
PUBLISHes skip paho's per-message objects.  Four private hooks of paho are overridden
(``_sock_recv``, ``_send_puback``, ``_handle_publish`` and ``loop_read``); the tests run
against the real broker, so a paho change that breaks them shows up there.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Callable

import paho.mqtt.client as mqtt
from paho.mqtt.enums import MQTTErrorCode

__all__ = ["BufferedClient", "RawPublishHandler"]

log = logging.getLogger(__name__)

READ_CHUNK = 256 * 1024
PUBACK = 0x40


RawPublishHandler = Callable[[str, bytes], None]


class BufferedClient(mqtt.Client):
    _rx: bytearray
    _acks: list[int]
    _raw_handler: RawPublishHandler | None = None

    def set_raw_publish_handler(self, handler: RawPublishHandler) -> None:
        """Deliver MQTT 3.1.1 QoS 0/1 PUBLISHes as ``handler(topic, payload)``.

        Skips paho's per-message ``MQTTMessage`` (with its condition variable), debug
        formatting and topic-filter matching; ``on_message`` still gets anything else.
        """
        self._raw_handler = handler

    def _handle_publish(self) -> MQTTErrorCode:
        handler = self._raw_handler
        command = self._in_packet["command"]
        qos = (command & 0x06) >> 1
        if handler is None or qos > 1 or self._protocol == mqtt.MQTTv5:
            return super()._handle_publish()
        packet = self._in_packet["packet"]
        topic_len = int.from_bytes(packet[0:2], "big")
        topic = bytes(packet[2 : 2 + topic_len]).decode("utf-8", "replace")
        pos = 2 + topic_len
        mid = 0
        if qos:
            mid = int.from_bytes(packet[pos : pos + 2], "big")
            pos += 2
        try:
            handler(topic, bytes(packet[pos:]))
        except Exception:
            log.exception("live message handler failed; message skipped")
        if qos:
            return self._send_puback(mid)
        return MQTTErrorCode.MQTT_ERR_SUCCESS

    def _sock_recv(self, bufsize: int) -> bytes:
        rx = getattr(self, "_rx", None)
        if rx is None:
            rx = self._rx = bytearray()
        if not rx:
            sock = self._sock
            if sock is None:
                raise ConnectionError("not connected")
            data = sock.recv(READ_CHUNK)  # BlockingIOError when nothing is there: paho's cue
            if not data:
                return b""  # peer closed
            rx += data
        out = bytes(rx[:bufsize])
        del rx[:bufsize]
        return out

    def _send_puback(self, mid: int) -> MQTTErrorCode:
        acks = getattr(self, "_acks", None)
        if acks is None:
            acks = self._acks = []
        acks.append(mid)
        return MQTTErrorCode.MQTT_ERR_SUCCESS

    def _flush_acks(self) -> None:
        acks = getattr(self, "_acks", None)
        if acks:
            self._acks = []
            packet = b"".join([struct.pack("!BBH", PUBACK, 2, mid) for mid in acks])
            self._packet_queue(PUBACK, packet, 0, 0)

    def loop_read(self, max_packets: int = 1) -> MQTTErrorCode:
        """Parse every packet that is already buffered, then return to the select loop."""
        try:
            while True:
                if self._sock is None:
                    return MQTTErrorCode.MQTT_ERR_NO_CONN
                rc = self._packet_read()
                if rc == MQTTErrorCode.MQTT_ERR_AGAIN:
                    return MQTTErrorCode.MQTT_ERR_SUCCESS
                if rc > 0:
                    return self._loop_rc_handle(rc)
        finally:
            if self._sock is not None:
                self._flush_acks()
