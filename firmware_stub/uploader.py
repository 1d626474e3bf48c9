"""The uplink: one MQTT connection at a time, uploading the queue oldest first.

The uploader thread owns the MQTT client; it shares the queue with the GPS side. Per
connection it

1. connects as the vehicle (username = vehicle id) with a retained ``offline`` last will
   on ``fleet/<id>/status``, publishes a retained ``online`` there, and subscribes to
   ``fleet/<id>/cmd`` and (receipts on) ``fleet/<id>/ack``;
2. sends the queue oldest first as ``{"fixes": [...]}`` batches (at most
   ``MAX_BATCH_FIXES`` fixes and ``MAX_PAYLOAD_BYTES`` bytes each) with QoS 1, keeping at
   most ``window`` batches without a PUBACK and ``receipt_window`` batches without a
   storage receipt;
3. deletes fixes from the queue only when a storage receipt (:mod:`fleet.receipts`)
   says they are stored or refused for good. A PUBACK, whatever its reason code (0x10
   "no matching subscribers" included), only frees the batch's MQTT in-flight slot and
   starts its receipt timer: the broker can still lose the message.

Resends: every connection starts again from the oldest unsettled fix. When the oldest
batch sent gets no receipt within ``receipt_timeout_s`` after its PUBACK, the upload
starts over too, but *probing*: it sends only the oldest unsettled fix, and waits twice
as long for its receipt each time (up to ``receipt_timeout_max_s``), so that a fleet
whose ingest is down does not pile duplicates into the broker. The first receipt that
settles anything ends the probe (the wait returns to ``receipt_timeout_s``) and the
whole window goes again from the oldest unsettled fix (a reconnect does not end a probe:
it cannot bring ingest back). A fix sent twice is harmless: the
platform identifies a fix by vehicle and ``ts`` and receipts the duplicate again. Every
connection uses a fresh client, so the MQTT library never re-sends on its own behind
the queue's back. Reconnects wait an exponential backoff with jitter
(:mod:`firmware_stub.backoff`).

With ``receipts=False`` (a server that sends none) a successful PUBACK deletes the batch,
as before receipts existed.
"""

from __future__ import annotations

import logging
import random
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import msgspec
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from firmware_stub.backoff import Backoff
from firmware_stub.fix_queue import FixQueue, QueueError
from fleet.contract import (
    MAX_BATCH_FIXES,
    MAX_PAYLOAD_BYTES,
    STATUS_OFFLINE,
    STATUS_ONLINE,
    Command,
    Fix,
    cmd_topic,
    encode_batch,
    encode_fix,
    receipt_topic,
    status_topic,
    telemetry_topic,
)
from fleet.receipts import ReceiptError, decode_receipt

__all__ = ["UplinkConfig", "UplinkStats", "Uploader"]

log = logging.getLogger(__name__)

BATCH_OVERHEAD: Final = len(b'{"fixes":[]}')
LOOP_TICK_S: Final = 0.05
STATUS_LOG_EVERY_S: Final = 60.0
LOGGED_RANGES: Final = 10  # of a receipt's rejected ranges, in the warning
NO_MATCHING_SUBSCRIBERS: Final = 0x10  # an MQTT 5 PUBACK reason code, a success for paho


@dataclass(frozen=True, slots=True)
class UplinkConfig:
    vehicle_id: str
    password: str | None = None
    host: str = "127.0.0.1"
    port: int = 1883
    tls: bool = False  # MQTT over TLS, the broker's certificate verified (always, when on)
    tls_ca: Path | None = None  # verify against this CA instead of the system's
    keepalive_s: int = 30
    batch_max_fixes: int = MAX_BATCH_FIXES
    batch_max_bytes: int = MAX_PAYLOAD_BYTES
    window: int = 4  # batches published and not yet PUBACKed (the MQTT in-flight window)
    backoff_initial_s: float = 1.0
    backoff_max_s: float = 60.0
    connect_timeout_s: float = 10.0
    upload_limit_bps: int = 0  # payload bytes per second on a metered link; 0 = unlimited
    session_expiry_s: int = 86_400  # commands and receipts sent while offline wait this long
    receipts: bool = True  # fixes leave the queue on storage receipts; False: on PUBACK
    receipt_window: int = 8  # batches sent and not yet settled by a receipt
    receipt_timeout_s: float = 15.0  # PUBACK → receipt; then resend from the oldest unsettled
    receipt_timeout_max_s: float = 120.0  # the wait doubles per timeout in a row up to this

    def __post_init__(self) -> None:
        if not 1 <= self.batch_max_fixes <= MAX_BATCH_FIXES:
            raise ValueError(f"batch_max_fixes must be in 1..{MAX_BATCH_FIXES}")
        if not 512 <= self.batch_max_bytes <= MAX_PAYLOAD_BYTES:
            raise ValueError(f"batch_max_bytes must be in 512..{MAX_PAYLOAD_BYTES}")
        if self.window < 1:
            raise ValueError("window must be at least 1")
        if self.receipt_window < 1:
            raise ValueError("receipt_window must be at least 1")
        if not 0 < self.receipt_timeout_s <= self.receipt_timeout_max_s:
            raise ValueError(
                f"need 0 < receipt_timeout_s ({self.receipt_timeout_s})"
                f" <= receipt_timeout_max_s ({self.receipt_timeout_max_s})"
            )


@dataclass(slots=True)
class UplinkStats:
    connects: int = 0
    connect_failures: int = 0
    batches_sent: int = 0
    fixes_acked: int = 0  # fixes in batches the broker PUBACKed: transport, resends included
    pubacks_no_subscribers: int = 0  # PUBACK 0x10: nobody (no ingest session) got the batch
    fixes_confirmed: int = 0  # fixes a receipt said are stored (receipts off: PUBACKed)
    fixes_rejected: int = 0  # fixes a receipt said are refused for good (dropped too)
    fixes_resent: int = 0  # fixes published again (after a reconnect or a receipt timeout)
    resends: int = 0  # receipt timeouts: the upload went back to the oldest unsettled fix
    receipts: int = 0
    bad_receipts: int = 0  # malformed receipts, ignored
    commands: int = 0
    bad_commands: int = 0
    last_error: str = ""
    since_connected: float | None = None  # monotonic time of the current connection


@dataclass(slots=True)
class _Batch:
    """A published batch: its fixes' seqs still unsettled, and when the broker had it."""

    first_seq: int
    last_seq: int
    count: int
    open_seqs: set[int]
    acked_at: float | None = None  # the PUBACK: the receipt timer starts here


def build_batch(fixes: list[Fix], max_bytes: int) -> tuple[list[Fix], bytes]:
    """The longest prefix of ``fixes`` whose ``{"fixes": [...]}`` fits in ``max_bytes``."""
    size, take = BATCH_OVERHEAD, 0
    for fix in fixes:
        grown = size + len(encode_fix(fix)) + (1 if take else 0)
        if grown > max_bytes:
            break
        size, take = grown, take + 1
    if take == 0:
        raise ValueError(f"a single fix does not fit in {max_bytes} bytes")
    payload = encode_batch(fixes[:take])
    assert len(payload) == size, (len(payload), size)
    return fixes[:take], payload


def _clip(ranges: list[tuple[int, int]], highest: int) -> list[tuple[int, int]]:
    """``ranges`` sorted, cut to seqs <= ``highest``."""
    return sorted((lo, min(hi, highest)) for lo, hi in ranges if lo <= highest)


def _settle(batch: _Batch, ranges: list[tuple[int, int]]) -> int:
    """Remove the seqs ``ranges`` (sorted by start) cover; return how many."""
    before = len(batch.open_seqs)
    first, last = batch.first_seq, batch.last_seq
    for lo, hi in ranges:
        if lo > last:
            break
        if hi >= first:
            batch.open_seqs.difference_update(range(max(lo, first), min(hi, last) + 1))
    return before - len(batch.open_seqs)


class Uploader(threading.Thread):
    """Background thread: connect, upload the queue, apply receipts and commands, reconnect."""

    def __init__(
        self,
        config: UplinkConfig,
        queue: FixQueue,
        on_command: Callable[[Command], str | None],
        *,
        rng: random.Random | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(name=f"uplink-{config.vehicle_id}", daemon=True)
        self.config = config
        self.stats = UplinkStats()
        self.connected = threading.Event()
        self._queue = queue
        self._on_command = on_command
        self._backoff = Backoff(config.backoff_initial_s, config.backoff_max_s, rng)
        self._monotonic = monotonic
        self._stop_requested = threading.Event()
        self._inflight: dict[int, _Batch] = {}  # mid → batch awaiting its PUBACK
        self._unsettled: list[_Batch] = []  # sent, awaiting a receipt, oldest first
        self._cursor = 0  # highest seq handed to the upload since it last started over
        self._sent_high = 0  # highest seq this uploader ever published
        self._receipt_wait_s = config.receipt_timeout_s
        self._probing = False  # after a receipt timeout, until a receipt settles something
        self._next_send_at = 0.0
        self._session_state = "idle"
        self._warned_no_subscribers = False  # once per connection

    # -- control, from other threads -------------------------------------------------

    def stop(self) -> None:
        """Finish: publish ``offline`` if connected, disconnect, end the thread."""
        self._stop_requested.set()

    @property
    def inflight_batches(self) -> int:
        """Batches published on this connection that have no PUBACK yet."""
        return len(self._inflight)

    @property
    def probing(self) -> bool:
        """No receipt came in time: only the oldest unsettled fix is resent, until one does."""
        return self._probing

    @property
    def receipt_wait_s(self) -> float:
        """How long after a PUBACK the upload now waits for a receipt before resending."""
        return self._receipt_wait_s

    @property
    def unsettled_batches(self) -> int:
        """Batches sent since the upload last started over that no receipt settled yet."""
        return len(self._unsettled)

    # -- thread body -----------------------------------------------------------------

    def run(self) -> None:
        while not self._stop_requested.is_set():
            try:
                self._session()
            except QueueError as exc:  # e.g. a full disk: retry, the GPS side reports it
                self._fail(str(exc))
            except Exception:  # a bug must not end uploads for good: log it, back off, retry
                log.exception("uplink session failed")
                self._fail("uplink session failed")
            if self._stop_requested.is_set():
                break
            delay = self._backoff.next_delay()
            log.info(
                "reconnecting after backoff",
                extra={"delay_s": round(delay, 2), "attempt": self._backoff.failures},
            )
            self._stop_requested.wait(delay)

    def _new_client(self) -> mqtt.Client:
        cfg = self.config
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=cfg.vehicle_id,
            protocol=MQTTProtocolVersion.MQTTv5,
        )
        client.username_pw_set(cfg.vehicle_id, cfg.password)
        if cfg.tls or cfg.tls_ca is not None:
            ca = str(cfg.tls_ca) if cfg.tls_ca is not None else None
            client.tls_set(ca_certs=ca, cert_reqs=ssl.CERT_REQUIRED)
        client.will_set(status_topic(cfg.vehicle_id), STATUS_OFFLINE, qos=1, retain=True)
        client.max_inflight_messages_set(cfg.window + 4)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        return client

    def _start_over(self) -> None:
        """Upload again from the oldest unsettled fix (the queue holds only those)."""
        self._unsettled.clear()
        self._cursor = 0

    def _session(self) -> None:
        cfg = self.config
        client = self._new_client()
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = cfg.session_expiry_s
        self._session_state = "connecting"
        self._inflight.clear()
        self._start_over()
        self._warned_no_subscribers = False
        try:
            client.connect(cfg.host, cfg.port, cfg.keepalive_s, clean_start=False, properties=props)
        except OSError as exc:
            self._fail(f"broker {cfg.host}:{cfg.port} unreachable: {exc}")
            return
        deadline = self._monotonic() + cfg.connect_timeout_s
        while self._session_state == "connecting" and not self._stop_requested.is_set():
            if client.loop(LOOP_TICK_S) != MQTTErrorCode.MQTT_ERR_SUCCESS:
                break
            if self._monotonic() > deadline:
                self._fail(f"no CONNACK from {cfg.host}:{cfg.port} in {cfg.connect_timeout_s} s")
                break
        if self._session_state != "connected":
            if self._session_state == "connecting" and not self._stop_requested.is_set():
                self._fail("connection closed before CONNACK")
            client.disconnect()
            return
        try:
            self._connected_loop(client)
        finally:
            self.connected.clear()
            self.stats.since_connected = None
            self._inflight.clear()

    def _connected_loop(self, client: mqtt.Client) -> None:
        vid = self.config.vehicle_id
        self._backoff.reset()
        self.stats.connects += 1
        self.stats.since_connected = self._monotonic()
        client.publish(status_topic(vid), STATUS_ONLINE, qos=1, retain=True)
        # One SUBSCRIBE, sent before any telemetry: the broker handles a connection's
        # packets in order, so no receipt for this connection's batches can precede it.
        topics = [(cmd_topic(vid), 1)]
        if self.config.receipts:
            topics.append((receipt_topic(vid), 1))
        client.subscribe(topics)
        self.connected.set()
        log.info("connected", extra={"broker": f"{self.config.host}:{self.config.port}"})
        next_report = self._monotonic() + STATUS_LOG_EVERY_S
        while self._session_state == "connected":
            if self._stop_requested.is_set():
                self._goodbye(client)
                return
            if self.config.receipts:
                self._check_receipt_timeout()
            self._fill_window(client)
            if self._monotonic() >= next_report:
                next_report += STATUS_LOG_EVERY_S
                st = self.stats
                log.info(
                    "uplink status",
                    extra={
                        "queued": self._queue.depth(),
                        "fixes_confirmed": st.fixes_confirmed,
                        "fixes_rejected": st.fixes_rejected,
                        "fixes_resent": st.fixes_resent,
                        "batches_sent": st.batches_sent,
                        "connects": st.connects,
                    },
                )
            if client.loop(LOOP_TICK_S) != MQTTErrorCode.MQTT_ERR_SUCCESS:
                break
        if self._session_state == "connected":  # loop() failed without on_disconnect
            self._fail("connection lost")
        client.disconnect()

    def _goodbye(self, client: mqtt.Client) -> None:
        """Graceful stop: say ``offline`` ourselves (a clean disconnect sends no will)."""
        info = client.publish(status_topic(self.config.vehicle_id), STATUS_OFFLINE, 1, True)
        self._session_state = "closing"
        deadline = self._monotonic() + 2.0
        while not info.is_published() and self._monotonic() < deadline:
            if client.loop(LOOP_TICK_S) != MQTTErrorCode.MQTT_ERR_SUCCESS:
                break
        client.disconnect()
        client.loop(LOOP_TICK_S)
        log.info("disconnected on request")

    def _fail(self, message: str) -> None:
        self._session_state = "failed"
        self.stats.connect_failures += 1
        self.stats.last_error = message
        log.warning("%s", message)

    # -- upload ------------------------------------------------------------------------

    def _fill_window(self, client: mqtt.Client) -> None:
        cfg = self.config
        # Probing (receipts stopped coming): one batch of one fix at a time.
        unsettled_max = 1 if self._probing else cfg.receipt_window
        batch_max = 1 if self._probing else cfg.batch_max_fixes
        while len(self._inflight) < cfg.window and (
            not cfg.receipts or len(self._unsettled) < unsettled_max
        ):
            if cfg.upload_limit_bps and self._monotonic() < self._next_send_at:
                return
            fixes = self._queue.oldest(self._cursor, batch_max)
            if not fixes:
                return
            batch, payload = build_batch(fixes, cfg.batch_max_bytes)
            info = client.publish(telemetry_topic(cfg.vehicle_id), payload, qos=1)
            if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                return  # connection just dropped; the batch stays queued
            seqs = [f.seq for f in batch]
            first, last = seqs[0], seqs[-1]
            assert first is not None and last is not None
            sent = _Batch(first, last, len(batch), {s for s in seqs if s is not None})
            self._inflight[info.mid] = sent
            if cfg.receipts:
                self._unsettled.append(sent)
            if first <= self._sent_high:
                self.stats.fixes_resent += sum(
                    1 for s in seqs if s is not None and s <= self._sent_high
                )
            self._sent_high = max(self._sent_high, last)
            self._cursor = last
            self.stats.batches_sent += 1
            if cfg.upload_limit_bps:
                start = max(self._monotonic(), self._next_send_at)
                self._next_send_at = start + len(payload) / cfg.upload_limit_bps

    def _check_receipt_timeout(self) -> None:
        """The oldest PUBACKed batch waited too long for its receipt: start over, probing.

        Whatever was sent may be lost (a broker crash, no ingest session), or only late
        (ingest down, the broker holding it): resending the whole window every time
        would pile duplicates into the broker for as long as ingest is away. So the
        upload sends only the oldest unsettled fix until a receipt settles something,
        then the whole window again from the oldest unsettled fix.
        """
        now = self._monotonic()
        for batch in self._unsettled:
            if batch.acked_at is None:
                continue
            if now - batch.acked_at < self._receipt_wait_s:
                return
            waited = self._receipt_wait_s
            self.stats.resends += 1
            self._receipt_wait_s = min(waited * 2, self.config.receipt_timeout_max_s)
            log.warning(
                "no storage receipt %.0f s after the PUBACK: resending the oldest unsettled"
                " fix, the rest once receipts come back",
                waited,
                extra={
                    "unsettled_fixes": sum(len(b.open_seqs) for b in self._unsettled),
                    "next_wait_s": self._receipt_wait_s,
                },
            )
            self._start_over()
            self._probing = True
            return

    def _apply_receipt(self, payload: bytes) -> None:
        """Delete what a storage receipt settles; a malformed one is logged and ignored."""
        try:
            receipt = decode_receipt(payload)
        except Exception as exc:  # ReceiptError, or a decoder bug: never the uplink
            # (raising here would skip the receipt's PUBACK: the broker would redeliver
            # it after every reconnect, for ever)
            self.stats.bad_receipts += 1
            reason = exc if isinstance(exc, ReceiptError) else repr(exc)
            log.warning("ignored a malformed storage receipt: %s", reason)
            return
        # Only fixes this uploader has sent: a receipt still waiting in the broker
        # session for an older queue file (numbering restarted) must not delete new fixes.
        stored = _clip(receipt.seq, self._sent_high)
        rejected = _clip(receipt.rejected, self._sent_high)
        confirmed = self._queue.delete_ranges(stored) if stored else 0
        dropped = self._queue.delete_ranges(rejected) if rejected else 0
        self.stats.fixes_confirmed += confirmed
        self.stats.fixes_rejected += dropped
        if dropped:  # (a repeated receipt finds them gone: said once is enough)
            log.warning(
                "the platform refused fixes for good (dead-lettered): dropped from the queue",
                extra={"fixes": dropped, "seq_ranges": rejected[:LOGGED_RANGES]},
            )
        settled = 0
        ranges = sorted(stored + rejected)
        if ranges and self._unsettled:
            for batch in self._unsettled:
                settled += _settle(batch, ranges)
            self._unsettled = [b for b in self._unsettled if b.open_seqs]
        if settled or confirmed or dropped:
            self._receipt_wait_s = self.config.receipt_timeout_s
            if self._probing:
                self._probing = False
                self._start_over()
                log.info("storage receipts are back: resending from the oldest unsettled fix")
        log.debug(
            "storage receipt",
            extra={"stored": confirmed, "rejected": dropped, "settled": settled},
        )
        self.stats.receipts += 1  # last: a reader of the stats sees the receipt applied

    # -- paho callbacks (run in this thread, inside client.loop) ----------------------

    def _on_connect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.ConnectFlags,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if reason.is_failure:
            hint = ""
            if reason.value in (0x86, 0x87):  # bad user name or password / not authorized
                hint = (
                    f"; the MQTT username must be the vehicle id ({self.config.vehicle_id!r})"
                    " with the password from `fleet device add`"
                )
            self._fail(f"broker refused the connection: {reason}{hint}")
            return
        self._session_state = "connected"

    def _on_disconnect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.DisconnectFlags,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if self._session_state == "connected":
            self._fail(f"disconnected: {reason}")
            pending = self._queue.depth()
            if pending:
                log.info("unsettled fixes stay queued", extra={"fixes": pending})

    def _on_publish(
        self,
        client: mqtt.Client,
        userdata: Any,
        mid: int,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        batch = self._inflight.pop(mid, None)
        if batch is None:
            return  # the status message
        if reason.is_failure:
            # Keep the fixes; start over from the oldest after a backoff.
            self._fail(f"broker rejected a batch of {batch.count} fixes: {reason}")
            client.disconnect()
            return
        self.stats.fixes_acked += batch.count
        if reason.value == NO_MATCHING_SUBSCRIBERS:
            self.stats.pubacks_no_subscribers += 1
            if not self._warned_no_subscribers:
                self._warned_no_subscribers = True
                log.warning(
                    "the broker has no subscriber for our telemetry (PUBACK 0x10: is ingest"
                    " running?); %s",
                    "fixes stay queued until a receipt covers them"
                    if self.config.receipts
                    else "with --no-receipts these fixes are deleted all the same",
                )
        if self.config.receipts:
            # Transport only (0x10 "no matching subscribers" too): wait for the receipt.
            batch.acked_at = self._monotonic()
            return
        self._queue.delete_range(batch.first_seq, batch.last_seq)
        self.stats.fixes_confirmed += batch.count

    def _on_subscribe(
        self,
        client: mqtt.Client,
        userdata: Any,
        mid: int,
        reasons: list[ReasonCode],
        properties: Properties | None,
    ) -> None:
        refused = [str(r) for r in reasons if r.is_failure]
        if refused:
            log.warning(
                "the broker refused a subscription: %s (receipts need read access to %s;"
                " without them fixes are resent until receipts arrive)",
                ", ".join(refused),
                receipt_topic(self.config.vehicle_id),
            )

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        if msg.topic == receipt_topic(self.config.vehicle_id):
            if self.config.receipts:
                self._apply_receipt(bytes(msg.payload))
            return
        try:
            command = msgspec.json.decode(msg.payload, type=Command)
        except msgspec.DecodeError as exc:
            self.stats.bad_commands += 1
            log.warning("ignored a malformed command: %s", exc, extra={"topic": msg.topic})
            return
        problem = self._on_command(command)
        if problem is None:
            self.stats.commands += 1
            log.info("command applied", extra={"cmd": command.cmd, "id": command.id})
        else:
            self.stats.bad_commands += 1
            log.warning("command refused: %s", problem, extra={"cmd": command.cmd})
