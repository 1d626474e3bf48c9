"""Receipt-aware devices for the fault benchmark and tests: nothing is dropped on a PUBACK.

:class:`ReceiptDevices` plays ``len(device_ids)`` vans through the gateway service user
(``svc-gateway``: one publisher connection for all of them, one ``fleet/+/ack``
subscription for their storage receipts), like the simulator's gateway mode:

* every fix it *generates* goes into a :class:`fleet.receipts.Unconfirmed` book first and
  stays there until a receipt settles it, whether or not a connection was up to send it;
* a fix not settled after ``resend_after_s`` is sent again (then after twice that, up to
  ``resend_max_s``), and after every reconnect everything open is sent again;
* a broker PUBACK, success or error (0x10 "no matching subscribers" included), counts for
  nothing but flow control.

Fix identity is deterministic: device ``d``'s ``k``-th fix has ``seq = k`` and
``ts = start_ms + k * step_ms`` (:meth:`FixPlan.ts`), so an audit can list every
generated ``(vehicle_id, ts)`` from the per-device counts alone (:mod:`devtools.audit`).

One thread owns the publisher and the book; the receipt subscriber reads on its own
thread and hands batches over through its inbox.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from fleet.contract import Fix, encode_fix, telemetry_topic
from fleet.mqtt import codec
from fleet.mqtt.publisher import Publisher
from fleet.mqtt.subscriber import MqttSubscriber, SubscriberOptions
from fleet.receipts import ReceiptError, Unconfirmed, decode_receipt

__all__ = ["DeviceOptions", "FixPlan", "ReceiptDevices"]

log = logging.getLogger(__name__)

RECEIPT_TOPIC = "fleet/+/ack"
TICK_S = 0.005
RECONNECT_S = 0.25


@dataclass(frozen=True)
class FixPlan:
    """Where device ``d``'s ``k``-th fix is: ``ts = start_ms + k * step_ms``, ``seq = k``."""

    start_ms: int
    step_ms: int

    def ts(self, seq: int) -> int:
        return self.start_ms + seq * self.step_ms

    @classmethod
    def paced(cls, devices: int, rate: float, start_ms: int | None = None) -> FixPlan:
        """A device's fixes ``devices / rate`` seconds apart (at least 1 ms), from now."""
        start = int(time.time() * 1000) if start_ms is None else start_ms
        return cls(start, max(1, round(1000 * devices / rate)))


@dataclass(frozen=True)
class DeviceOptions:
    host: str
    port: int
    password: str  # svc-gateway's
    device_ids: Sequence[str]
    rate: float  # fixes/s over all devices
    plan: FixPlan
    resend_after_s: float = 10.0
    resend_max_s: float = 30.0
    client_id: str = "faults-devices"
    username: str = "svc-gateway"


class ReceiptDevices:
    """Generate fixes at a fixed rate; keep and resend each until a receipt settles it."""

    def __init__(self, opts: DeviceOptions) -> None:
        self.opts = opts
        self.book = Unconfirmed(opts.resend_after_s, opts.resend_max_s)
        self.per_device = [0] * len(opts.device_ids)  # fixes generated, per device
        self.generated = 0
        self.resent = 0  # messages sent again from the book (timeout or reconnect)
        self.reconnects = 0
        self.refused = 0  # error PUBACKs (e.g. 0x10 "no matching subscribers"): kept anyway
        self.receipts = 0
        self.bad_receipts = 0
        self._topics = [telemetry_topic(d) for d in opts.device_ids]
        self._index = {d: i for i, d in enumerate(opts.device_ids)}
        self._outbox: collections.deque[tuple[str, bytes]] = collections.deque()
        self._pub: Publisher | None = None
        self._next_connect = 0.0
        self._generating = threading.Event()
        self._closing = threading.Event()
        self._lock = threading.Lock()  # the book, read by other threads for counters
        self._receipts = MqttSubscriber(
            SubscriberOptions(
                host=opts.host,
                port=opts.port,
                username=opts.username,
                password=opts.password,
                client_id=opts.client_id + "-receipts",
                topics=[RECEIPT_TOPIC],
                qos=1,
                reconnect_max_s=1.0,
                keepalive_s=10,
            )
        )
        self._thread = threading.Thread(target=self._run, name="receipt-devices", daemon=True)
        self._t0 = 0.0

    # -- counters (any thread) ---------------------------------------------------------

    @property
    def confirmed(self) -> int:
        """Fixes a receipt settled (stored, or refused for good)."""
        return self.book.settled_fixes

    @property
    def open(self) -> int:
        """Fixes generated and not settled yet: the devices' queues."""
        return self.book.open_fixes

    @property
    def refused_total(self) -> int:
        """Messages the broker answered with an error PUBACK, over every connection."""
        pub = self._pub
        return self.refused + (pub.refused if pub is not None else 0)

    @property
    def connected(self) -> bool:
        pub = self._pub
        return pub is not None and pub.connected

    # -- lifecycle ---------------------------------------------------------------------

    def start(self, timeout: float = 15.0) -> None:
        """Subscribe to the receipts, connect, and start generating."""
        self._receipts.start()
        if not self._receipts.subscribed.wait(timeout):
            self._receipts.stop()
            raise TimeoutError(
                f"no fleet/+/ack subscription within {timeout:.0f} s: {self._receipts.last_error}"
            )
        self._t0 = time.monotonic()
        self._generating.set()
        self._thread.start()

    def stop_generating(self) -> None:
        self._generating.clear()

    def wait_confirmed(self, timeout: float) -> bool:
        """Wait until every generated fix is settled (the devices' queues are empty)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self._generating.is_set() and self.open == 0:
                return True
            time.sleep(0.05)
        return not self._generating.is_set() and self.open == 0

    def close(self) -> None:
        self._generating.clear()
        self._closing.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)
        self._receipts.stop()
        if self._pub is not None:
            self._pub.close()

    def generated_counts(self) -> dict[str, int]:
        """Fixes generated per device: device ``d`` has seq ``0 .. n - 1``."""
        return dict(zip(self.opts.device_ids, self.per_device, strict=True))

    def generated_fixes(self) -> Iterator[tuple[str, int]]:
        """Every generated fix as ``(vehicle_id, ts)``, for :func:`devtools.audit.audit_run`."""
        ts = self.opts.plan.ts
        for vehicle_id, n in zip(self.opts.device_ids, self.per_device, strict=True):
            for seq in range(n):
                yield vehicle_id, ts(seq)

    # -- the device loop (own thread) ------------------------------------------------------

    def _run(self) -> None:
        try:
            while not self._closing.is_set():
                now = time.monotonic()
                self._ensure_connected(now)
                self._apply_receipts()
                if self._generating.is_set():
                    self._generate(now)
                self._send(now)
                pub = self._pub
                if pub is not None and pub.connected:
                    pub.pump(TICK_S)
                else:
                    time.sleep(TICK_S)
        except Exception:
            log.exception("receipt-aware devices failed")
            self._generating.clear()
            raise

    def _ensure_connected(self, now: float) -> None:
        pub = self._pub
        if pub is not None and pub.connected:
            return
        if pub is not None:
            self.refused += pub.refused
            pub.close()
            self._pub = None
            self._outbox.clear()  # whatever was in it is still open in the book
            log.info("publisher connection lost; reconnecting")
        if now < self._next_connect:
            return
        self._next_connect = now + RECONNECT_S
        fresh = Publisher(self.opts.client_id, self.opts.username, self.opts.password)
        try:
            fresh.connect(self.opts.host, self.opts.port, timeout=2.0)
        except (OSError, codec.MqttProtocolError) as exc:
            log.debug("cannot connect yet: %s", exc)
            return
        self._pub = fresh
        self.reconnects += 1
        with self._lock:
            self.book.all_due(now)  # the broker may have lost anything not receipted

    def _apply_receipts(self) -> None:
        while (batch := self._receipts.take(0)) is not None:
            for m in batch:
                vehicle_id = m.topic.split("/")[1]
                if vehicle_id not in self._index:
                    continue
                try:
                    receipt = decode_receipt(m.payload)
                except ReceiptError:
                    self.bad_receipts += 1
                    continue
                self.receipts += 1
                with self._lock:
                    self.book.apply(vehicle_id, receipt)

    def _generate(self, now: float) -> None:
        o = self.opts
        target = int((now - self._t0) * o.rate)
        connected = self.connected
        n_dev = len(self._topics)
        lat0, lon = -5.14, 119.42
        with self._lock:
            while self.generated < target:
                d = self.generated % n_dev
                seq = self.per_device[d]
                self.per_device[d] = seq + 1
                self.generated += 1
                fix = Fix(ts=o.plan.ts(seq), lat=lat0 - d * 1e-5, lon=lon, seq=seq)
                topic, payload = self._topics[d], encode_fix(fix)
                self.book.sent(o.device_ids[d], seq, 1, topic, payload, now)
                if connected:
                    self._outbox.append((topic, payload))

    def _send(self, now: float) -> None:
        pub = self._pub
        if pub is None or not pub.connected:
            return
        if len(self._outbox) < pub.window:
            with self._lock:
                due = self.book.due(now, limit=pub.window)
            self.resent += len(due)
            self._outbox.extend(due)
        outbox = self._outbox
        while outbox and not pub.full:
            topic, payload = outbox[0]
            if not pub.publish(topic, payload, 1):
                return  # lost; the next tick reconnects and resends from the book
            outbox.popleft()
