"""The ingest loop: collect a batch, decode, commit, then acknowledge.

Three threads besides the MQTT reader: the main thread collects and decodes batch
n + 1 while the writer thread commits batch n, acknowledges it and books its receipts
(a queue of one between them keeps the order and bounds what is held), and the receipt
thread (:class:`~ingest.receipt_sender.ReceiptSender`) publishes those receipts.

Flush when the batch holds ``batch_max_fixes`` fixes or ``batch_max_ms`` passed since
its first message.  When the database fails, the same batch is retried with backoff
and nothing is acknowledged meanwhile: the broker holds everything else (the MQTT 5
Receive Maximum stops it from sending us more than that many unacknowledged messages).

The MQTT side is :class:`mqtt5.MqttSubscriber` with a persistent session
(Clean Start 0, a long Session Expiry: the broker queues while the worker is down) and
manual acknowledgement: :meth:`~mqtt5.MqttSubscriber.ack` runs only
after the batch holding the messages committed, and only for messages of the current
connection (older ones are redelivered; the duplicate insert is a no-op).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from typing import Final, NamedTuple

import numpy as np
import psycopg

from fleet.contract import (
    Decoded,
    Reason,
    Rejection,
    Validation,
    decode_message,
)
from fleet.receipts import ReceiptBook
from fleet.settings import IngestSettings, mqtt_hint
from ingest.metrics import IngestMetrics
from ingest.receipt_sender import ReceiptSender
from ingest.writer import BatchWriter, DeadLetter, Item, WriteResult, is_data_error, printable
from mqtt5 import Message, MqttSubscriber, SubscriberOptions

__all__ = ["IngestWorker", "lags"]

log = logging.getLogger(__name__)

SUBSCRIPTIONS = ("fleet/+/telemetry", "fleet/+/status", "owntracks/+/+")
KEEPALIVE_S = 30
BATCH_MAX_BYTES = 16 * 1024 * 1024  # payload bytes held by one batch


def subscriber_options(settings: IngestSettings) -> SubscriberOptions:
    """Ingest's subscription: shared (scale-out), QoS 1, persistent, acked after commit."""
    group = settings.share_group
    return SubscriberOptions(
        host=settings.mqtt_host,
        port=settings.mqtt_port,
        username=settings.mqtt_username,
        password=settings.mqtt_password,
        client_id=settings.mqtt_client_id,
        topics=[f"$share/{group}/{t}" if group else t for t in SUBSCRIPTIONS],
        qos=1,
        clean_start=False,
        session_expiry_s=settings.session_expiry_s,
        receive_maximum=settings.receive_maximum,
        manual_ack=True,
        keepalive_s=KEEPALIVE_S,
        hint=mqtt_hint,
        max_inbox_bytes=settings.inbox_max_mb * 1024 * 1024,
    )


def lags(items: list[Item], commit_t: float) -> np.ndarray:
    """Seconds from each fix's timestamp to the commit (never negative)."""
    ts = np.fromiter((fix.ts for item in items for fix in item.fixes), dtype=np.float64)
    return np.maximum(commit_t - ts / 1000.0, 0.0)


# Decoded batches waiting for the writer thread (one more is being committed).
PIPELINE_DEPTH: Final = 1
WRITER_JOIN_S: Final = 30.0


class _Decoded(NamedTuple):
    """A batch read and decoded, on its way to the writer thread."""

    messages: list[Message]
    items: list[Item]


class IngestWorker:
    def __init__(self, settings: IngestSettings, dsn: str, metrics: IngestMetrics) -> None:
        self.settings = settings
        self.dsn = dsn
        self.metrics = metrics
        self.rules = Validation(
            max_future_ms=settings.max_future_s * 1000, max_age_ms=settings.max_age_s * 1000
        )
        self.source = MqttSubscriber(subscriber_options(settings))
        self.receipts = ReceiptBook()
        self._writer: BatchWriter | None = None
        self.last_commit = 0.0
        self.db_ok = False
        self._receipts_sent_at = 0.0
        self._receipt_sender = ReceiptSender(
            self.source.publish, metrics.receipts, metrics.receipts_dropped
        )
        self._expired_at = 0.0
        self._writer_failure: BaseException | None = None

    # decoding --------------------------------------------------------------------------

    def _decode(self, msg: Message, now_ms: int) -> Item:
        """One message → one batch item. Never raises: a failure costs this message only."""
        try:
            decoded = decode_message(msg.topic, msg.payload, now_ms, self.rules)
        except Exception as exc:  # decode_message already catches; this is the last line
            log.exception("decoder failed", extra={"topic": printable(msg.topic, 200)})
            decoded = Decoded(None, "")
            decoded.rejections.append(Rejection(Reason.UNDECODABLE, repr(exc), msg.payload))
        item = Item(msg.topic, msg.payload, decoded.vehicle_id, decoded.fixes, decoded.status)
        if decoded.rejections:
            item.dead_letter = self._dead_letter(msg, decoded.rejections)
            item.refused_seqs = [r.seq for r in decoded.rejections if r.seq is not None]
        return item

    def _decode_batch(self, messages: list[Message]) -> list[Item]:
        now_ms = int(time.time() * 1000)
        items = [self._decode(msg, now_ms) for msg in messages]
        self.metrics.fixes_received.inc(sum(len(item.fixes) for item in items))
        return items

    def _settle(self, items: list[Item], commit_t: float) -> None:
        """After the commit: book the storage receipts, observe each fix's lag."""
        self._note_receipts(items)
        self.metrics.lag_seconds.observe_many(lags(items, commit_t))

    def _dead_letter(self, msg: Message, rejections: list[Rejection]) -> DeadLetter:
        """One dead letter for the message, however many of its fixes were refused."""
        for r in rejections:
            self.metrics.rejected.labels(r.reason.value).inc()
        first = rejections[0]
        bad_fixes = sum(1 for r in rejections if r.one_fix)
        detail = first.detail
        if len(rejections) > 1:
            detail += f" (and {len(rejections) - 1} more refused in this message)"
        topic = printable(msg.topic, 200)
        log.info(
            "rejected input",
            extra={
                "topic": topic,
                "reason": first.reason.value,
                "detail": printable(detail, 200),
                "bad_fixes": bad_fixes,
            },
        )
        return DeadLetter(topic, first.reason.value, detail, msg.payload, bad_fixes)

    # storing ---------------------------------------------------------------------------

    def _write_isolating(self, items: list[Item]) -> WriteResult:
        """Write ``items``; when PostgreSQL refuses their data, find the messages to blame.

        Bisects: each half is written in its own transaction, down to the single message,
        which is then dead-lettered (its fixes refused) and the rest committed. Raises
        only for errors that are not about the data (connection, server): retry those.
        """
        assert self._writer is not None
        try:
            return self._writer.write(items)
        except Exception as exc:
            if not is_data_error(exc):
                raise
            if len(items) > 1:
                mid = len(items) // 2
                a = self._write_isolating(items[:mid])
                b = self._write_isolating(items[mid:])
                return WriteResult(a.stored + b.stored, a.duplicates + b.duplicates)
            item = items[0]
            state = getattr(exc, "sqlstate", None) or type(exc).__name__
            text = str(exc).strip()
            detail = f"PostgreSQL refused it ({state}): {text.splitlines()[0] if text else ''}"
            reason = Reason.DATABASE_REFUSED.value
            self.metrics.rejected.labels(reason).inc()
            item.refuse(reason, detail)
            log.warning(
                "message refused by the database, dead-lettered",
                extra={"vehicle_id": item.vehicle_id, "detail": printable(detail, 200)},
            )
            return self._writer.write([item])

    def _write_until_committed(self, items: list[Item], stop: threading.Event) -> bool:
        delay = 0.1
        while True:
            try:
                if self._writer is None:
                    self._writer = BatchWriter(self.dsn)
                result = self._write_isolating(items)
            except Exception as exc:
                # Not about the data: the connection or the server. Nothing is
                # acknowledged; the same batch is retried until it commits.
                self.db_ok = False
                self.metrics.db_errors.inc()
                log.warning(
                    "database write failed, retrying in %.1f s (nothing acknowledged): %s",
                    delay,
                    printable(str(exc).strip().splitlines()[0], 300)
                    if str(exc).strip()
                    else type(exc).__name__,
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
            self.metrics.status_updates.inc(sum(1 for i in items if i.status is not None))
            return True

    # receipts and housekeeping -------------------------------------------------------

    def _note_receipts(self, items: list[Item]) -> None:
        if not self.settings.receipts:
            return
        book = self.receipts
        for item in items:
            vid = item.vehicle_id
            for fix in item.fixes:
                book.stored(vid, fix.seq, fix.ts)
            for seq in item.refused_seqs:
                book.rejected(vid, seq)

    def _send_receipts(self, now: float) -> None:
        """At most one receipt per device per interval: whatever committed since the last.

        Handed to the receipt thread (:class:`ReceiptSender`), which waits for the
        broker's window itself; this loop never does.
        """
        interval = self.settings.receipt_interval_s
        if self.settings.receipts and self.receipts and now - self._receipts_sent_at >= interval:
            self._receipts_sent_at = now
            self._receipt_sender.post(self.receipts.drain())

    def _expire_dead_letters(self, now: float) -> None:
        if self._writer is None or now - self._expired_at < 3600:
            return
        self._expired_at = now
        try:
            gone = self._writer.expire_dead_letters(self.settings.rejected_retention_days)
        except psycopg.Error as exc:
            log.warning("could not expire old dead letters (will try again): %s", exc)
            return
        if gone:
            log.info("expired old dead letters", extra={"deleted": gone})

    # the loop --------------------------------------------------------------------------

    def _collect(self, stop: threading.Event) -> list[Message]:
        """Block for the first messages, then gather until the size, byte or time limit."""
        take = self.source.take
        s = self.settings
        messages = take(0.2)
        if messages is None:
            return []
        size = sum(len(m.payload) for m in messages)
        deadline = messages[0].received + s.batch_max_ms / 1000.0
        while len(messages) < s.batch_max_fixes and size < BATCH_MAX_BYTES and not stop.is_set():
            more = take(deadline - time.monotonic())
            if more is None:
                break
            messages.extend(more)
            size += sum(len(m.payload) for m in more)
        return messages

    def run(self, stop: threading.Event) -> None:
        """Decode on this thread, commit on the writer thread: the two overlap.

        While PostgreSQL commits batch n (the writer waits on the server, the GIL free),
        this thread collects and decodes batch n + 1 and hands it over through a queue
        of one: at most three batches are unacknowledged (the one being committed, the
        one queued, the one decoded and waiting for room), and they commit and are
        acknowledged in the order they were read. The writer alone talks to PostgreSQL
        and sends the PUBACKs; the receipt thread publishes the receipts it books.
        """
        self.source.start()
        if self.settings.receipts:
            self._receipt_sender.start()
        ready: queue.Queue[_Decoded] = queue.Queue(maxsize=PIPELINE_DEPTH)
        writer = threading.Thread(
            target=self._write_loop, args=(ready, stop), name="ingest-writer", daemon=True
        )
        writer.start()
        m = self.metrics
        try:
            while not stop.is_set() and writer.is_alive():
                messages = self._collect(stop)
                if not messages:
                    continue
                m.messages.inc(len(messages))
                m.pending.set(len(messages) + self.source.inbox.qsize())
                batch = _Decoded(messages, self._decode_batch(messages))
                while not stop.is_set() and writer.is_alive():
                    try:
                        ready.put(batch, timeout=0.2)
                        break
                    except queue.Full:
                        continue  # the writer is busy (or retrying a database outage)
        finally:
            stop.set()
            writer.join(WRITER_JOIN_S)
            stuck = writer.is_alive()  # in a database call: exit anyway, nothing acked
            if stuck:
                log.warning("the ingest writer did not stop within %.0f s", WRITER_JOIN_S)
            self._receipt_sender.stop()
            self.source.stop()
            if self._writer is not None and not stuck:
                self._writer.close()
        if self._writer_failure is not None:
            raise RuntimeError("the ingest writer thread failed") from self._writer_failure

    def _write_loop(self, ready: queue.Queue[_Decoded], stop: threading.Event) -> None:
        """The writer thread: commit each decoded batch, then acknowledge and settle it.

        Stops after the batch in hand when ``stop`` is set; batches still queued (or not
        committed) are not acknowledged, so the broker delivers them again.
        """
        m = self.metrics
        try:
            while not stop.is_set():
                try:
                    batch = ready.get(timeout=0.2)
                except queue.Empty:
                    batch = None
                now = time.monotonic()
                self._send_receipts(now)
                self._expire_dead_letters(now)  # hourly, busy or not
                if batch is None:
                    continue
                messages, items = batch.messages, batch.items
                if not self._write_until_committed(items, stop):
                    break  # stopping with an uncommitted batch: nothing acked, broker redelivers
                acked = self.source.ack(messages)
                commit_t = time.time()
                self._settle(items, commit_t)
                self.last_commit = commit_t
                m.batches.inc()
                m.last_commit.set(commit_t)
                m.batch_seconds.observe(time.monotonic() - messages[0].received)
                log.debug(
                    "batch committed",
                    extra={
                        "messages": len(messages),
                        "acked": acked,
                        "ms": round((time.monotonic() - messages[0].received) * 1000, 1),
                    },
                )
        except BaseException as exc:
            self._writer_failure = exc
            log.exception("the ingest writer thread failed; stopping")
            stop.set()

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
