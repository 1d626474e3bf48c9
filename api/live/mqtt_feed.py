"""The API's MQTT subscription: paho-mqtt in its own thread, handing batches to the loop.

The paho network thread decodes each message (``fleet.contract.decode_telemetry``) and
keeps only the newest fix per van in a pending map (bounded by the number of vans, so a
busy event loop never makes it drop or queue without bound).  The first message after a
hand-over wakes the loop once (``loop.call_soon_threadsafe``), which drains everything
pending ``HANDOVER_S`` later into :class:`~api.live.state.LiveState`.  Clean session, non-shared
subscription: every API replica sees every fix.  The client reads its socket in large
chunks (:class:`~api.live.buffered_mqtt.BufferedClient`): stock paho falls behind at a few
thousand messages a second.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from api.live.buffered_mqtt import BufferedClient
from api.live.state import normalise_status
from fleet.contract import Fix, TopicKind, Validation, decode_telemetry, parse_topic

__all__ = ["LIVE_TOPICS", "FeedBatch", "MqttFeed"]

log = logging.getLogger(__name__)

HANDOVER_S = 0.02  # at most ~50 hand-overs a second, whatever the message rate
LIVE_TOPICS = ("fleet/+/telemetry", "fleet/+/status", "owntracks/+/+")

# (latest fix per van, statuses in arrival order, fixes decoded, fixes rejected)
FeedBatch = tuple[dict[str, Fix], list[tuple[str, str]], int, int]


class MqttFeed:
    """Subscribe to live telemetry and status; deliver batches to ``on_batch`` on the loop."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        username: str | None,
        password: str | None,
        loop: asyncio.AbstractEventLoop,
        on_batch: Callable[[FeedBatch], None],
        qos: int = 1,
        client_id: str | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.loop = loop
        self.on_batch = on_batch
        self.qos = qos
        self.rules = Validation()
        self.connected = threading.Event()
        self.last_error: str | None = "not connected yet"
        self._lock = threading.Lock()
        self._fixes: dict[str, Fix] = {}
        self._statuses: list[tuple[str, str]] = []
        self._decoded = 0
        self._rejected = 0
        self._scheduled = False
        self._stopping = False
        self.client = BufferedClient(
            CallbackAPIVersion.VERSION2,
            client_id=client_id or f"fleet-api-{uuid.uuid4().hex[:8]}",
            clean_session=True,
            protocol=mqtt.MQTTv311,
        )
        if username is not None:
            self.client.username_pw_set(username, password)
        self.client.reconnect_delay_set(1, 5)
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        self.client.set_raw_publish_handler(self._on_publish)

    # -- lifecycle ----------------------------------------------------------------------

    def start(self) -> None:
        self.client.connect_async(self.host, self.port, keepalive=30)
        self.client.loop_start()

    def stop(self) -> None:
        self._stopping = True
        self.client.disconnect()
        self.client.loop_stop()

    def publish(self, topic: str, payload: bytes, qos: int = 1) -> bool:
        """Publish (used for device commands); False when not connected."""
        if not self.connected.is_set():
            return False
        info = self.client.publish(topic, payload, qos=qos)
        return info.rc == mqtt.MQTT_ERR_SUCCESS

    # -- paho callbacks (network thread) ------------------------------------------------

    def _on_connect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.ConnectFlags,
        reason: ReasonCode,
        props: Any,
    ) -> None:
        if reason.is_failure:
            self.last_error = f"broker refused the connection: {reason}"
            log.error(
                "MQTT connect refused (check FLEET_MQTT_USERNAME/PASSWORD)",
                extra={"broker": f"{self.host}:{self.port}", "reason": str(reason)},
            )
            return
        client.subscribe([(t, self.qos) for t in LIVE_TOPICS])
        self.last_error = "connected; waiting for the subscription to be granted"

    def _on_subscribe(
        self,
        client: mqtt.Client,
        userdata: Any,
        mid: int,
        reasons: list[ReasonCode],
        props: Any,
    ) -> None:
        refused = [str(r) for r in reasons if r.is_failure]
        if refused:
            self.last_error = f"broker refused the live subscription: {', '.join(refused)}"
            log.error("live subscription refused", extra={"reasons": refused})
            return
        self.last_error = None
        self.connected.set()  # ready: connected *and* subscribed
        log.info("live feed subscribed", extra={"broker": f"{self.host}:{self.port}"})

    def _on_disconnect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.DisconnectFlags,
        reason: ReasonCode,
        props: Any,
    ) -> None:
        self.connected.clear()
        self.last_error = f"disconnected from broker: {reason}"
        if self._stopping:
            log.info("live feed disconnected (stopping)")
        else:
            log.warning("live feed disconnected; reconnecting", extra={"reason": str(reason)})

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        self._on_publish(msg.topic, bytes(msg.payload))

    def _on_publish(self, topic: str, payload: bytes) -> None:
        parsed = parse_topic(topic)
        if parsed is None:
            return
        kind, vehicle_id = parsed
        if kind is TopicKind.STATUS:
            status = normalise_status(payload)
            if status is None:
                return
            with self._lock:
                self._statuses.append((vehicle_id, status))
                self._schedule_locked()
            return
        if kind is TopicKind.CMD:
            return
        now_ms = int(time.time() * 1000)
        result = decode_telemetry(kind, vehicle_id, payload, now_ms, self.rules)
        newest: Fix | None = None
        for fix in result.fixes:
            if newest is None or fix.ts > newest.ts:
                newest = fix
        with self._lock:
            self._decoded += len(result.fixes)
            self._rejected += len(result.rejections)
            if newest is not None:
                held = self._fixes.get(vehicle_id)
                if held is None or newest.ts > held.ts:
                    self._fixes[vehicle_id] = newest
            self._schedule_locked()

    def _schedule_locked(self) -> None:
        if not self._scheduled:
            self._scheduled = True
            try:
                self.loop.call_soon_threadsafe(self._arm_drain)
            except RuntimeError:  # loop closed during shutdown
                self._scheduled = False

    # -- event loop ---------------------------------------------------------------------

    def _arm_drain(self) -> None:
        # Gather for a moment: one hand-over per HANDOVER_S instead of one per message.
        self.loop.call_later(HANDOVER_S, self._drain)

    def _drain(self) -> None:
        with self._lock:
            batch: FeedBatch = (self._fixes, self._statuses, self._decoded, self._rejected)
            self._fixes = {}
            self._statuses = []
            self._decoded = 0
            self._rejected = 0
            self._scheduled = False
        self.on_batch(batch)
