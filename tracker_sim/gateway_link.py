"""Gateway mode transport: the lean MQTT 5 QoS 1 publisher of :mod:`mqtt5`.

paho-mqtt spends ~50-100 µs of Python per QoS 1 message (message objects, a condition
variable per message, reason-code decoding of every PUBACK), which caps one process
at ~5,000 messages/s — too slow to load-test ingest.  A gateway only ever *publishes*,
so it uses :class:`mqtt5.Publisher`: a non-blocking socket, PUBLISH
packets appended to one buffer and written with few ``send`` calls, PUBACKs parsed in
bulk.  Every fix is still its own PUBLISH and counted only when its success PUBACK
arrives.  :class:`GatewayPool` drives many such connections with one selector and
reconnects lost ones.  The per-device mode keeps paho (:mod:`tracker_sim.links`):
realistic clients, LWT.

Storage receipts (``GatewayPool(receipts=ReceiptOptions(...))``): the pool holds one
``fleet/+/ack`` subscription for all its vans and every telemetry message stays in a
:class:`fleet.receipts.Unconfirmed` book (one per connection) until ingest's receipts
settle all its fixes.  A message not settled within the resend timeout is sent again
(then after twice that, up to 2 minutes), and after a reconnect everything still open
on that connection is; a PUBACK, whatever its reason code, only frees in-flight room.
Memory: at most ``max_unconfirmed`` fixes are open (about 560 bytes per open single-fix
message); at the bound the simulator waits, like a tracker with a full queue.
"""

from __future__ import annotations

import logging
import selectors
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import msgspec

from fleet.receipts import ReceiptError, Unconfirmed, decode_receipt
from mqtt5 import MqttConnectRefusedError, MqttError, MqttSubscriber, Publisher, SubscriberOptions
from tracker_sim.links import MAX_INFLIGHT_PER_LINK, Credentials, LinkError, PumpedPool, Sender

__all__ = ["RECEIPT_FILTER", "GatewayLink", "GatewayPool", "ReceiptOptions", "fixes_in"]

log = logging.getLogger(__name__)

KEEPALIVE_S: Final = 60
RECONNECT_EVERY_S: Final = 2.0
RECEIPT_FILTER: Final = "fleet/+/ack"
RESEND_MAX_S: Final = 120.0


@dataclass(frozen=True)
class ReceiptOptions:
    """Gateway mode with storage receipts."""

    client_id: str = "sim-gw-acks"  # of the fleet/+/ack subscription
    resend_after_s: float = 15.0  # no receipt this long after sending: send again
    max_unconfirmed: int = 100_000  # fixes open over all connections (~56 MB at most)


class _Batch(msgspec.Struct):
    fixes: list[msgspec.Raw]


_batch_decoder = msgspec.json.Decoder(_Batch)


def fixes_in(payload: bytes) -> int:
    """Fixes in a telemetry payload the simulator encoded (a fix or ``{"fixes": [...]}``)."""
    if payload.startswith(b'{"fixes"'):
        return len(_batch_decoder.decode(payload).fixes)
    return 1


class GatewayLink(Publisher):
    """One MQTT 5 connection that publishes QoS 1 messages for many vans."""

    def __init__(self, client_id: str, creds: Credentials) -> None:
        super().__init__(
            client_id,
            creds.username,
            creds.password,
            keepalive_s=KEEPALIVE_S,
            max_inflight=MAX_INFLIGHT_PER_LINK,
        )
        self.creds = creds
        self.device: str | None = None
        self.book: Unconfirmed | None = None  # with receipts: what awaits one

    @property
    def fixes_acked(self) -> int:
        return self.weight_acked

    def connect(self, host: str, port: int, timeout: float = 15.0) -> None:
        try:
            super().connect(host, port, timeout)
        except MqttConnectRefusedError as exc:
            raise LinkError(
                f"the broker refused {self.creds.username} ({exc}); check the gateway "
                "credentials (--password, FLEET_MQTT_PASSWORD or --data-dir)"
            ) from None
        except MqttError as exc:
            raise LinkError(
                f"no MQTT 5 session with the broker at {host}:{port}: {exc}"
                " (is it the broker's port? check --host/--port or FLEET_MQTT_HOST/PORT)"
            ) from None
        except OSError as exc:
            raise LinkError(
                f"cannot reach the MQTT broker at {host}:{port}: {exc.strerror or exc}"
                " (is `fleet broker` running? check --host/--port or FLEET_MQTT_HOST/PORT)"
            ) from None

    def reopen(self, host: str, port: int, timeout: float = 5.0) -> None:
        """Reconnect with an empty in-flight window (the receipt book resends instead)."""
        self.connect(host, port, timeout)
        self.lost_at = None
        self._pending.clear()

    def publish(self, topic: str, payload: bytes, fixes: int = 0, retain: bool = False) -> bool:
        """Queue one QoS 1 PUBLISH carrying ``fixes`` fixes; written by the pool."""
        return super().publish(topic, payload, fixes, retain)


class GatewayPool(PumpedPool):
    """The same driving interface as :class:`tracker_sim.links.LinkPool`, plus receipts."""

    def __init__(
        self,
        host: str,
        port: int,
        max_outstanding: int = 5000,
        stopping: threading.Event | None = None,
        receipts: ReceiptOptions | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.max_outstanding = max_outstanding
        self.stopping = stopping or threading.Event()
        self.receipts = receipts
        self.links: list[GatewayLink] = []
        self._selector = selectors.DefaultSelector()
        self._registered = 0
        self._acks: MqttSubscriber | None = None
        self._owner: dict[str, GatewayLink] = {}  # van → the connection it sends on
        self.fixes_resent = 0
        self.receipts_received = 0
        self.bad_receipts = 0
        self._at_bound = False
        self.bound_reached = 0  # times the simulator had to wait for receipts

    def connect(self, links: Sequence[GatewayLink], timeout: float = 20.0) -> None:
        for link in links:
            link.connect(self.host, self.port, timeout)
            assert link.sock is not None
            self._selector.register(link.sock, selectors.EVENT_READ, link)
            self._registered += 1
            self.links.append(link)
            if self.receipts is not None:
                link.book = Unconfirmed(
                    self.receipts.resend_after_s,
                    max(self.receipts.resend_after_s, RESEND_MAX_S),
                )
        if self.receipts is not None and self._acks is None and self.links:
            self._subscribe(self.receipts, self.links[0].creds, timeout)

    def _subscribe(self, opts: ReceiptOptions, creds: Credentials, timeout: float) -> None:
        acks = MqttSubscriber(
            SubscriberOptions(
                host=self.host,
                port=self.port,
                username=creds.username,
                password=creds.password,
                client_id=opts.client_id,
                topics=[RECEIPT_FILTER],
                qos=1,
                keepalive_s=30,
                reconnect_max_s=2.0,
            )
        )
        acks.start()
        if not acks.subscribed.wait(timeout):
            acks.stop()
            raise LinkError(
                f"no subscription to the storage receipts ({RECEIPT_FILTER}) within "
                f"{timeout:.0f} s: {acks.last_error}; check the broker ACL for "
                f"{creds.username}, or run with --no-receipts"
            )
        self._acks = acks

    # -- sending -----------------------------------------------------------------------

    def send_fixes(
        self,
        link: GatewayLink,
        vehicle_id: str,
        first_seq: int,
        count: int,
        topic: str,
        payload: bytes,
    ) -> bool:
        """Send ``count`` fixes numbered ``first_seq...`` for ``vehicle_id`` on ``link``.

        With receipts the message is kept until they settle it: False (not connected)
        then only means "sent after the reconnect".
        """
        if link.book is not None:
            link.book.sent(vehicle_id, first_seq, count, topic, payload, time.monotonic())
            if vehicle_id not in self._owner:
                self._owner[vehicle_id] = link
        return link.publish(topic, payload, count)

    def _apply_receipts(self) -> None:
        assert self._acks is not None
        owner = self._owner
        while (batch := self._acks.take(0)) is not None:
            for m in batch:
                vehicle_id = m.topic[6:-4]  # fleet/<id>/ack
                link = owner.get(vehicle_id)
                if link is None or link.book is None:
                    continue  # another simulator's van
                try:
                    receipt = decode_receipt(m.payload)
                except ReceiptError as exc:
                    self.bad_receipts += 1
                    log.debug("ignored a receipt for %s: %s", vehicle_id, exc)
                    continue
                self.receipts_received += 1
                link.book.apply(vehicle_id, receipt)

    def _resend(self, now: float) -> None:
        for link in self.links:
            book = link.book
            if book is None or not link.connected:
                continue
            room = link.window - link.outstanding
            if room <= 0:
                continue
            for topic, payload in book.due(now, limit=room):
                n = fixes_in(payload)
                if link.publish(topic, payload, n):
                    self.fixes_resent += n

    # -- driving -----------------------------------------------------------------------

    def pump(self, timeout: float) -> None:
        for link in self.links:
            link.write()
        for key, _ in self._selector.select(timeout) if self._registered else ():
            link = key.data
            link.read()
            if not link.connected:
                self._selector.unregister(key.fileobj)
                self._registered -= 1
                log.warning(
                    "gateway connection %s lost; reconnecting (%d messages to resend)",
                    link.client_id,
                    link.outstanding if link.book is None else len(link.book),
                )
        if not self._registered and timeout > 0:
            time.sleep(timeout)
        now = time.monotonic()
        if self._acks is not None:
            self._apply_receipts()
            self._resend(now)
        for link in self.links:
            if link.connected:
                link.keepalive()
            elif link.lost_at is not None and now - link.lost_at >= RECONNECT_EVERY_S:
                try:
                    if link.book is None:
                        link.resume(self.host, self.port, timeout=5.0)
                    else:
                        link.reopen(self.host, self.port, timeout=5.0)
                        link.book.all_due(now)  # the broker may have lost any of them
                except LinkError as exc:
                    link.lost_at = now
                    log.debug("reconnect of %s failed: %s", link.client_id, exc)
                    continue
                assert link.sock is not None
                self._selector.register(link.sock, selectors.EVENT_READ, link)
                self._registered += 1
                log.warning("gateway connection %s restored", link.client_id)

    def _full(self) -> bool:
        if self.receipts is None:
            return False
        full = self.unconfirmed() >= self.receipts.max_unconfirmed
        if full and not self._at_bound:
            log.log(
                logging.DEBUG if self.bound_reached else logging.WARNING,
                "%d fixes await a storage receipt (the bound): waiting for receipts; "
                "is ingest running and sending them?",
                self.unconfirmed(),
            )
            self.bound_reached += 1
        self._at_bound = full
        return full

    def wait_for_room(self, link: Sender) -> None:
        """Back-pressure: wait while ``link`` has too much in flight or is reconnecting,
        or too many fixes await receipts (unless the simulator is stopping)."""
        while (link.full or not link.connected or self._full()) and not self.stopping.is_set():
            self.pump(0.01)

    def outstanding(self) -> int:
        """Unacknowledged messages, including those waiting for a reconnect."""
        return sum(lk.outstanding for lk in self.links)

    def wait_confirmed(self, timeout: float) -> bool:
        """Keep sending until receipts settled every fix (or ``timeout``)."""
        deadline = time.monotonic() + timeout
        while self.unconfirmed() > 0 and time.monotonic() < deadline:
            self.pump(0.02)
        return self.unconfirmed() == 0

    def close(self, timeout: float = 10.0) -> None:
        self.flush(timeout)
        if self._acks is not None:
            self._acks.stop()
            self._acks = None
        for link in self.links:
            if link.sock is not None and link.connected:
                self._selector.unregister(link.sock)
            link.close()
        self.links = []

    # -- counters ----------------------------------------------------------------------

    def totals(self) -> tuple[int, int]:
        """Messages and fixes a success PUBACK acknowledged (transport, not storage)."""
        return sum(lk.acked for lk in self.links), sum(lk.fixes_acked for lk in self.links)

    def confirmed(self) -> int:
        """Fixes a storage receipt settled (stored, or refused for good)."""
        return sum(lk.book.settled_fixes for lk in self.links if lk.book is not None)

    def unconfirmed(self) -> int:
        """Fixes sent (or waiting for a connection) that no receipt settled yet."""
        return sum(lk.book.open_fixes for lk in self.links if lk.book is not None)
