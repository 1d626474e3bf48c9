"""The API's MQTT subscription: a reader thread of its own, handing batches to the loop.

The reader thread (:class:`mqtt5.MqttSubscriber`) decodes each message
with the same decoder as ingest (``fleet.contract.decode_message``) and keeps only the
newest fix per van in a pending map (bounded by the number of vans, so a busy event loop
never makes it drop or queue without bound).  The first message after a hand-over wakes
the loop once (``loop.call_soon_threadsafe``), which drains everything pending ``HANDOVER_S`` later
into :class:`~api.live.state.LiveState`.  Clean start, non-shared subscription: every
API replica sees every fix; retained status messages arrive after each
(re)subscription.  QoS 1 messages are acknowledged as soon as a received burst is
decoded (one write for the burst).  The subscriber reads its socket in large chunks:
stock paho falls behind at a few thousand messages a second.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
from collections.abc import Callable

from fleet.contract import Fix, Validation, decode_message
from fleet.settings import mqtt_hint
from mqtt5 import Message, MqttSubscriber, SubscriberOptions

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
        self._lock = threading.Lock()
        self._fixes: dict[str, Fix] = {}
        self._statuses: list[tuple[str, str]] = []
        self._decoded = 0
        self._rejected = 0
        self._scheduled = False
        self.subscriber = MqttSubscriber(
            SubscriberOptions(
                host=host,
                port=port,
                username=username,
                password=password,
                client_id=client_id or f"fleet-api-{uuid.uuid4().hex[:8]}",
                topics=LIVE_TOPICS,
                qos=qos,
                clean_start=True,
                manual_ack=False,
                keepalive_s=30,
                reconnect_max_s=5.0,
                hint=mqtt_hint,
                read_chunk=256 * 1024,
            ),
            on_batch=self._on_messages,
        )
        # Set once connected *and* subscribed (the health check's "ready").
        self.connected: threading.Event = self.subscriber.subscribed

    @property
    def last_error(self) -> str | None:
        return self.subscriber.last_error

    # -- lifecycle ----------------------------------------------------------------------

    def start(self) -> None:
        self.subscriber.start()

    def stop(self) -> None:
        self.subscriber.stop()

    # -- reader thread --------------------------------------------------------------------

    def _on_messages(self, batch: list[Message]) -> None:
        for m in batch:
            try:
                self._on_publish(m.topic, m.payload)
            except Exception:
                log.exception("live message handler failed; message skipped")

    def _on_publish(self, topic: str, payload: bytes) -> None:
        decoded = decode_message(topic, payload, int(time.time() * 1000), self.rules)
        if decoded.status is not None:
            with self._lock:
                self._statuses.append((decoded.vehicle_id, decoded.status))
                self._schedule_locked()
            return
        if decoded.kind is None:
            return  # not a contract topic
        newest: Fix | None = None
        for fix in decoded.fixes:
            if newest is None or fix.ts > newest.ts:
                newest = fix
        with self._lock:
            self._decoded += len(decoded.fixes)
            self._rejected += len(decoded.rejections)
            if newest is not None:
                held = self._fixes.get(decoded.vehicle_id)
                if held is None or newest.ts > held.ts:
                    self._fixes[decoded.vehicle_id] = newest
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
