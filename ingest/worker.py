"""The ingest loop: collect a batch, decode, commit, then acknowledge.

Flush when the batch holds ``batch_max_fixes`` fixes or ``batch_max_ms`` passed since
its first message.  When the database fails, the same batch is retried with backoff
and nothing is acknowledged meanwhile: the broker holds everything else (the MQTT 5
Receive Maximum stops it from sending us more than that many unacknowledged messages).

The MQTT side is :class:`fleet.mqtt.subscriber.MqttSubscriber` with a persistent session
(Clean Start 0, a long Session Expiry: the broker queues while the worker is down) and
manual acknowledgement: :meth:`~fleet.mqtt.subscriber.MqttSubscriber.ack` runs only
after the batch holding the messages committed, and only for messages of the current
connection (older ones are redelivered; the duplicate insert is a no-op).
"""

from __future__ import annotations

import logging
import queue
import threading
import time

import psycopg

from fleet.contract import (
    STATUS_OFFLINE,
    STATUS_ONLINE,
    Reason,
    TopicKind,
    Validation,
    decode_telemetry,
    parse_topic,
)
from fleet.mqtt.subscriber import Message, MqttSubscriber, SubscriberOptions
from fleet.settings import IngestSettings
from ingest.metrics import IngestMetrics
from ingest.writer import Batch, BatchWriter, DeadLetter

__all__ = ["IngestWorker"]

log = logging.getLogger(__name__)

SUBSCRIPTIONS = ("fleet/+/telemetry", "fleet/+/status", "owntracks/+/+")
KEEPALIVE_S = 30


def subscriber_options(settings: IngestSettings) -> SubscriberOptions:
    """Ingest's subscription: shared (scale-out), QoS 1, persistent, acked after commit."""
    group = settings.share_group
    return SubscriberOptions(
        host=settings.mqtt_host,
        port=settings.mqtt_port,
        username=settings.mqtt_username,
        password=settings.mqtt_password,
        client_id=settings.client_id,
        topics=[f"$share/{group}/{t}" if group else t for t in SUBSCRIPTIONS],
        qos=1,
        clean_start=False,
        session_expiry_s=settings.session_expiry_s,
        receive_maximum=settings.receive_maximum,
        manual_ack=True,
        keepalive_s=KEEPALIVE_S,
        refused_hint="check FLEET_MQTT_USERNAME / FLEET_MQTT_PASSWORD",
    )


class IngestWorker:
    def __init__(self, settings: IngestSettings, dsn: str, metrics: IngestMetrics) -> None:
        self.settings = settings
        self.dsn = dsn
        self.metrics = metrics
        self.rules = Validation(
            max_future_ms=settings.max_future_s * 1000, max_age_ms=settings.max_age_s * 1000
        )
        self.source = MqttSubscriber(subscriber_options(settings))
        self._writer: BatchWriter | None = None
        self.last_commit = 0.0
        self.db_ok = False

    # decoding --------------------------------------------------------------------------

    def _add(self, msg: Message, batch: Batch, now_ms: int) -> None:
        parsed = parse_topic(msg.topic)
        if parsed is None:
            self._reject(
                batch, msg.topic, Reason.BAD_TOPIC, "topic is not part of the contract", msg.payload
            )
            return
        kind, vehicle_id = parsed
        if kind is TopicKind.STATUS:
            status = msg.payload.decode("utf-8", "replace").strip().lower()
            if status in (STATUS_ONLINE, STATUS_OFFLINE):
                batch.statuses[vehicle_id] = status
            else:
                self._reject(
                    batch,
                    msg.topic,
                    Reason.WRONG_SHAPE,
                    "status must be 'online' or 'offline'",
                    msg.payload,
                )
            return
        if kind is TopicKind.CMD:
            return  # not subscribed; commands are server → device
        result = decode_telemetry(kind, vehicle_id, msg.payload, now_ms, self.rules)
        for fix in result.fixes:
            batch.fixes.append((vehicle_id, fix))
        self.metrics.fixes_received.inc(len(result.fixes))
        for rej in result.rejections:
            self._reject(batch, msg.topic, rej.reason, rej.detail, rej.fragment)

    def _reject(self, batch: Batch, topic: str, reason: Reason, detail: str, raw: bytes) -> None:
        self.metrics.rejected.labels(reason.value).inc()
        log.info("rejected input", extra={"topic": topic, "reason": reason.value, "detail": detail})
        batch.dead_letters.append(DeadLetter(topic, reason.value, detail, raw))

    # the loop --------------------------------------------------------------------------

    def _collect(self, stop: threading.Event) -> list[Message]:
        """Block for the first messages, then gather until the size or time limit."""
        inbox = self.source.inbox
        s = self.settings
        try:
            messages = inbox.get(timeout=0.2)
        except queue.Empty:
            return []
        deadline = messages[0].received + s.batch_max_ms / 1000.0
        while len(messages) < s.batch_max_fixes and not stop.is_set():
            remaining = deadline - time.monotonic()
            try:
                more = inbox.get_nowait() if remaining <= 0 else inbox.get(timeout=remaining)
            except queue.Empty:
                break
            messages.extend(more)
        return messages

    def _write_until_committed(self, batch: Batch, stop: threading.Event) -> bool:
        delay = 0.1
        while True:
            try:
                if self._writer is None:
                    self._writer = BatchWriter(self.dsn)
                result = self._writer.write(batch)
            except psycopg.Error as exc:
                self.db_ok = False
                self.metrics.db_errors.inc()
                log.warning(
                    "database write failed, retrying in %.1f s (nothing acknowledged): %s",
                    delay,
                    str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__,
                )
                if self._writer is not None:
                    self._writer.close()
                    self._writer = None
                if stop.wait(delay):
                    return False
                delay = min(delay * 2, self.settings.db_retry_max_s)
                continue
            self.db_ok = True
            self.metrics.fixes_stored.inc(result.stored)
            self.metrics.duplicates.inc(result.duplicates)
            self.metrics.status_updates.inc(len(batch.statuses))
            return True

    def run(self, stop: threading.Event) -> None:
        self.source.start()
        m = self.metrics
        try:
            while not stop.is_set():
                messages = self._collect(stop)
                if not messages:
                    continue
                m.messages.inc(len(messages))
                m.pending.set(len(messages) + self.source.inbox.qsize())
                batch = Batch()
                now_ms = int(time.time() * 1000)
                for msg in messages:
                    self._add(msg, batch, now_ms)
                if not self._write_until_committed(batch, stop):
                    break  # stopping with an uncommitted batch: nothing acked, broker redelivers
                acked = self.source.ack(messages)
                commit_t = time.time()
                self.last_commit = commit_t
                m.batches.inc()
                m.last_commit.set(commit_t)
                m.batch_seconds.observe(time.monotonic() - messages[0].received)
                observe = m.lag_seconds.observe
                for _, fix in batch.fixes:
                    observe(max(0.0, commit_t - fix.ts / 1000.0))
                log.debug(
                    "batch committed",
                    extra={
                        "messages": len(messages),
                        "fixes": len(batch.fixes),
                        "rejected": len(batch.dead_letters),
                        "statuses": len(batch.statuses),
                        "acked": acked,
                        "ms": round((time.monotonic() - messages[0].received) * 1000, 1),
                    },
                )
        finally:
            self.source.stop()
            if self._writer is not None:
                self._writer.close()

    def health(self) -> tuple[bool, dict[str, object]]:
        connected = self.source.connected.is_set()
        ok = connected and (self.db_ok or self.last_commit == 0.0)
        return ok, {
            "mqtt_connected": connected,
            "db_ok": self.db_ok,
            "last_commit_age_s": round(time.time() - self.last_commit, 1)
            if self.last_commit
            else None,
        }
