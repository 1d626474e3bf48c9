"""The MQTT side of ingest: a persistent session whose PUBACKs we send ourselves.

paho-mqtt 2.x with ``manual_ack=True`` does not acknowledge a QoS 1 PUBLISH until
:meth:`MqttSource.ack` is called, which the worker does only after the batch holding
that message has committed.  Until then the broker counts the message as in flight
and redelivers it after a reconnect; the MQTT 5 Receive Maximum bounds how many such
unacknowledged messages the broker sends us, which bounds our memory.

Packet ids are only meaningful on the connection that received them: every message is
tagged with the connection's generation, and acks for an older generation are dropped
(the broker redelivers those messages on the new connection, and the duplicate insert
is a no-op).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from fleet.settings import IngestSettings

__all__ = ["Inbound", "MqttSource"]

log = logging.getLogger(__name__)

SUBSCRIPTIONS = ("fleet/+/telemetry", "fleet/+/status", "owntracks/+/+")


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
        self.inbox: queue.SimpleQueue[Inbound] = queue.SimpleQueue()
        self.generation = 0
        self.connected = threading.Event()
        self._lock = threading.Lock()
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=settings.client_id,
            protocol=mqtt.MQTTv5,
            manual_ack=True,
        )
        if settings.mqtt_username:
            client.username_pw_set(settings.mqtt_username, settings.mqtt_password)
        client.max_inflight_messages_set(100)
        client.reconnect_delay_set(min_delay=1, max_delay=10)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_subscribe = self._on_subscribe
        self.client = client

    def topics(self) -> list[str]:
        group = self.settings.share_group
        return [f"$share/{group}/{t}" if group else t for t in SUBSCRIPTIONS]

    def start(self) -> None:
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = self.settings.session_expiry_s
        props.ReceiveMaximum = self.settings.receive_maximum
        self.client.connect_async(
            self.settings.mqtt_host,
            self.settings.mqtt_port,
            keepalive=30,
            clean_start=False,
            properties=props,
        )
        self.client.loop_start()

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def ack(self, messages: list[Inbound]) -> int:
        """PUBACK messages of the current connection; returns how many were acked."""
        acked = 0
        with self._lock:
            gen = self.generation
        for m in messages:
            if m.qos > 0 and m.generation == gen:
                self.client.ack(m.mid, m.qos)
                acked += 1
        return acked

    # paho callbacks (network thread) -------------------------------------------------

    def _on_connect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.ConnectFlags,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if reason.is_failure:
            log.error(
                "broker refused the connection: %s (check FLEET_MQTT_USERNAME/PASSWORD)",
                reason,
                extra={"host": self.settings.mqtt_host, "port": self.settings.mqtt_port},
            )
            return
        with self._lock:
            self.generation += 1
        log.info(
            "connected to broker",
            extra={"session_present": flags.session_present, "generation": self.generation},
        )
        client.subscribe([(t, 1) for t in self.topics()])
        self.connected.set()

    def _on_subscribe(
        self,
        client: mqtt.Client,
        userdata: Any,
        mid: int,
        reasons: list[ReasonCode],
        properties: Properties | None,
    ) -> None:
        for topic, rc in zip(self.topics(), reasons, strict=False):
            if rc.is_failure:
                log.error("subscription refused: %s (%s); check the broker ACL", topic, rc)

    def _on_disconnect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.DisconnectFlags,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        self.connected.clear()
        log.warning("disconnected from broker: %s; reconnecting", reason)

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        self.inbox.put(
            Inbound(
                msg.mid, msg.qos, msg.topic, bytes(msg.payload), self.generation, time.monotonic()
            )
        )
