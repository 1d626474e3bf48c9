"""A paced, receipt-aware QoS 1 load generator: :class:`LoadGenerator`.

Used by ``fleet bench ingest`` (one generator per load process, :func:`run_load`) and
meant for any benchmark that must account for every fix it *generated* (``fleet bench
faults``).  It publishes as the gateway service user for many vans through
:class:`mqtt5.Publisher` (MQTT 5 QoS 1, the broker's Receive Maximum
honoured), because a general-purpose client spends tens of microseconds per message in
Python and the generator must never be what limits the measurement.

With storage receipts on (the default), a broker PUBACK only frees in-flight room: every
generated message stays in a :class:`fleet.receipts.Unconfirmed` book until ingest's
receipts on ``fleet/{vehicle_id}/ack`` settle all its fixes, and is sent again when no
receipt came within the resend timeout, and after every reconnect.  With receipts off it
is today's QoS 1 publisher: a success PUBACK confirms, and what was unacknowledged when
the connection dropped is sent again after the reconnect.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import random
import threading
import time
from dataclasses import dataclass
from typing import Final

from fleet.contract import Fix, encode_batch, encode_fix, telemetry_topic
from fleet.gctune import tune_gc
from fleet.receipts import ReceiptError, Unconfirmed, decode_receipt
from mqtt5 import MqttConnectRefusedError, MqttError, MqttSubscriber, Publisher, SubscriberOptions

__all__ = [
    "RECEIPT_FILTER",
    "FixSchedule",
    "LoadError",
    "LoadGenerator",
    "LoadResult",
    "LoadSpec",
    "run_load",
]

log = logging.getLogger(__name__)

RECEIPT_FILTER: Final = "fleet/+/ack"
# The generator loop runs at most every TICK_S: a round generates, sends and reads in
# bulk (fewer system calls than waking for every PUBACK; adds ≤ 5 ms to the lag).
TICK_S: Final = 0.005
RECONNECT_FIRST_S: Final = 0.25
RECONNECT_MAX_S: Final = 5.0
MAX_MESSAGES_PER_TICK: Final = 5000  # a backfill burst still lets receipts and PUBACKs in
LAG_SMOOTHING: Final = 0.01  # per receipt (thousands a second at full load)
LAG_FACTOR: Final = 3.0  # resend timeout ≥ this many times the receipts' lag
# What one open single-fix message costs in the Unconfirmed book (measured with
# tracemalloc: the entry, its seq set, heap and index slots, a ~60-byte payload).
BOOK_BYTES_PER_MESSAGE: Final = 560


class LoadError(RuntimeError):
    """The generator cannot run: broker unreachable, credentials or subscription refused."""


@dataclass(frozen=True)
class FixSchedule:
    """When each fix is generated and what ``ts`` it carries: a function of (device, seq).

    Device ``d`` (0-based) numbers its fixes ``seq = 0, 1, 2, ...``; a message carries
    ``per_message`` consecutive ones.  Fix ``seq`` of device ``d`` has
    ``ts = start_ms + seq * step_ms + d * per_message * step_ms // devices``: the devices
    take turns, each one fix every ``step_ms``.  A message is generated when the ``ts``
    of its last fix is reached, so ``ts`` is the time it was generated (the lag ingest
    measures is generation → commit) and is never in the future; the earlier fixes of
    a batch are in the past, like a tracker's backlog.  An audit can list every
    generated ``(vehicle_id, ts)`` from the per-device counts alone.
    """

    start_ms: int
    step_ms: int
    devices: int
    per_message: int = 1

    @classmethod
    def paced(
        cls, devices: int, rate: float, per_message: int = 1, start_ms: int | None = None
    ) -> FixSchedule:
        """``rate`` fixes/s over all devices (a little more: ``step_ms`` is rounded down)."""
        if devices < 1 or rate <= 0 or per_message < 1:
            raise ValueError("devices, rate and per_message must be positive")
        step = int(1000 * devices / rate)
        if step < 1:
            raise ValueError(
                f"{rate:.0f} fixes/s from {devices} devices is more than one fix per "
                "millisecond per device (ts must differ): use more devices"
            )
        start = int(time.time() * 1000) if start_ms is None else start_ms
        return cls(start - (per_message - 1) * step, step, devices, per_message)

    @property
    def rate(self) -> float:
        """Fixes per second over all devices."""
        return 1000.0 * self.devices / self.step_ms

    def ts(self, device: int, seq: int) -> int:
        return (
            self.start_ms
            + seq * self.step_ms
            + device * self.per_message * self.step_ms // self.devices
        )

    def due_ms(self, message: int) -> int:
        """When message number ``message`` (all devices, in turn) is generated."""
        device, k = message % self.devices, message // self.devices
        return self.ts(device, (k + 1) * self.per_message - 1)


@dataclass(frozen=True)
class LoadResult:
    """What one generator did (a snapshot; see :class:`LoadGenerator` for the terms)."""

    generated: int
    confirmed: int
    resent: int
    open: int
    messages_sent: int
    puback_refused: int
    receipts: int
    reconnects: int
    seconds: float  # from start to the end of generating
    cpu_s: float = 0.0  # the generator process's CPU time while generating (run_load only)
    confirmed_s: float = 0.0  # from start until every fix was confirmed (run_load only)


class LoadGenerator:
    """Receipt-aware load: ``devices`` vans at ``rate`` fixes/s, every fix accounted for.

    Vehicle ids are ``f"{vehicle_prefix}{i:05d}"``; give every run a new prefix, so that
    no row or late receipt of an earlier run is counted.  Fixes carry ``seq`` (per van
    0, 1, 2, ...) and the ``ts`` of :class:`FixSchedule` (``self.schedule``), so
    ``generated_counts()`` plus ``schedule.ts(device_index, seq)`` list every fix.

    One thread owns the publisher connection and the book; the receipts arrive on a
    :class:`~mqtt5.MqttSubscriber` thread (one ``fleet/+/ack``
    subscription, or one filter per own van with ``subscribe_all=False`` when several
    generators share a broker).  The generator keeps generating while the broker is
    away (the fixes wait in the book), reconnects with jittered exponential backoff
    (0.25 s doubling to 5 s) and then sends everything still open.  A broker PUBACK, a
    refusal such as 0x10 "no matching subscribers" included, only frees in-flight room.

    Counters (fixes; readable from any thread while it runs):

    * ``generated``: every fix made, whether or not a connection was up to send it;
    * ``confirmed``: receipts on, fixes a receipt settled (stored, or refused for good);
      receipts off, fixes a success PUBACK acknowledged;
    * ``resent``: fixes sent again (receipts on: resend timeout or reconnect);
    * ``open``: generated and not confirmed yet.

    The resend timeout is ``resend_after_s`` (doubling up to ``resend_max_s`` while a
    message stays open), but at least three times the receipts' smoothed lag
    (``receipt_lag_s``, up to ``resend_max_s``): when ingest runs behind, resending what
    is still queued for it would only add duplicates to its queue and feed the overload
    (a resend storm).

    Memory is bounded: at most ``max_open_fixes`` fixes are open (default 250,000, about
    140 MB for single-fix messages, see :data:`BOOK_BYTES_PER_MESSAGE`); at the bound
    generating pauses until receipts free room (``paused_s`` says for how long), so a
    long ingest outage slows the generator rather than growing it.

    Use::

        gen = LoadGenerator(host, port, "svc-gateway", pw, devices=500, rate=2000)
        gen.start()                  # connected and subscribed, or LoadError
        ...                          # kill things; gen.generated keeps counting
        gen.stop_generating()
        ok = gen.wait_confirmed(300)  # every generated fix settled?
        gen.close()

    ``backfill_s`` starts the schedule that many seconds in the past (a backlog generated
    as fast as the connection takes it, then paced); ``total_fixes`` stops generating by
    itself after that many.
    """

    def __init__(
        self,
        host: str,
        port: int,
        username: str,
        password: str,
        devices: int,
        rate: float,
        per_message: int = 1,
        vehicle_prefix: str = "load-",
        receipts: bool = True,
        resend_after_s: float = 15.0,
        *,
        client_id: str | None = None,
        subscribe_all: bool = True,
        resend_max_s: float = 120.0,
        max_open_fixes: int = 250_000,
        backfill_s: float = 0.0,
        total_fixes: int | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.username = username
        self.password = password
        self.receipts = receipts
        self.per_message = per_message
        self.max_open_fixes = max(max_open_fixes, per_message)
        self.client_id = client_id or f"load-{vehicle_prefix.rstrip('-')}"
        self.device_ids = [f"{vehicle_prefix}{i:05d}" for i in range(devices)]
        self.rate = rate
        self.backfill_s = backfill_s
        self.schedule = FixSchedule.paced(devices, rate, per_message)  # set again by start()
        self.total_messages = None if total_fixes is None else -(-total_fixes // per_message)
        self.resend_after_s = resend_after_s
        self.book = Unconfirmed(resend_after_s, max(resend_after_s, resend_max_s))
        self._receipt_lag_ms = 0.0
        self.generated = 0
        self.resent = 0
        self.messages_sent = 0
        self.receipts_received = 0
        self.bad_receipts = 0
        self.reconnects = 0
        self.paused_s = 0.0
        self.failure: str | None = None
        self._topics = [telemetry_topic(d) for d in self.device_ids]
        self._ack_topics = {f"fleet/{d}/ack": (d, i) for i, d in enumerate(self.device_ids)}
        self._next_message = 0
        self._outbox: collections.deque[tuple[str, bytes]] = collections.deque()
        self._pub: Publisher | None = None
        self._done_acked = 0  # success PUBACKs (fixes) of replaced connections
        self._done_refused = 0
        self._backoff = RECONNECT_FIRST_S
        self._next_connect = 0.0
        self._paused_since: float | None = None
        self._lost = False
        self._round_end = 0.0
        self._t0 = 0.0
        self._t_end: float | None = None
        self._generating = threading.Event()
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._run, name="load-generator", daemon=True)
        self._acks: MqttSubscriber | None = None
        if receipts:
            topics = [RECEIPT_FILTER] if subscribe_all else list(self._ack_topics)
            self._acks = MqttSubscriber(
                SubscriberOptions(
                    host=host,
                    port=port,
                    username=username,
                    password=password,
                    client_id=self.client_id + "-acks",
                    topics=topics,
                    qos=1,
                    keepalive_s=10,
                    reconnect_max_s=2.0,
                    hint=lambda exc: (
                        f"check the password of {username}"
                        if isinstance(exc, MqttConnectRefusedError)
                        else None
                    ),
                )
            )

    # -- counters ----------------------------------------------------------------------

    @property
    def confirmed(self) -> int:
        if self.receipts:
            return self.book.settled_fixes
        pub = self._pub
        return self._done_acked + (pub.weight_acked if pub is not None else 0)

    @property
    def open(self) -> int:
        if self.receipts:
            return self.book.open_fixes
        pub = self._pub
        in_flight = pub.outstanding if pub is not None else 0
        return (len(self._outbox) + in_flight) * self.per_message

    @property
    def puback_refused(self) -> int:
        """Messages the broker answered with an error PUBACK (e.g. 0x10)."""
        pub = self._pub
        return self._done_refused + (pub.refused if pub is not None else 0)

    @property
    def connected(self) -> bool:
        pub = self._pub
        return pub is not None and pub.connected

    @property
    def generating(self) -> bool:
        return self._generating.is_set()

    def generated_counts(self) -> dict[str, int]:
        """Fixes generated per van: van ``i`` has ``seq`` 0 .. count - 1."""
        n, per, done = len(self.device_ids), self.per_message, self._next_message
        return {v: (done - i + n - 1) // n * per for i, v in enumerate(self.device_ids)}

    def result(self) -> LoadResult:
        end = self._t_end if self._t_end is not None else time.monotonic()
        return LoadResult(
            generated=self.generated,
            confirmed=self.confirmed,
            resent=self.resent,
            open=self.open,
            messages_sent=self.messages_sent,
            puback_refused=self.puback_refused,
            receipts=self.receipts_received,
            reconnects=self.reconnects,
            seconds=end - self._t0 if self._t0 else 0.0,
        )

    # -- lifecycle ---------------------------------------------------------------------

    def start(self, timeout: float = 15.0) -> None:
        """Connect and subscribe to the receipts, then generate on a thread."""
        pub = Publisher(self.client_id, self.username, self.password)
        try:
            pub.connect(self.host, self.port, timeout)
        except MqttError as exc:
            raise LoadError(f"no MQTT session for {self.username}: {exc}") from None
        except OSError as exc:
            raise LoadError(
                f"cannot reach the MQTT broker at {self.host}:{self.port}: {exc.strerror or exc}"
            ) from None
        self._pub = pub
        if self._acks is not None:
            self._acks.start()
            if not self._acks.subscribed.wait(timeout):
                error = self._acks.last_error
                self._acks.stop()
                pub.close()
                raise LoadError(
                    f"no storage-receipt subscription within {timeout:.0f} s ({error}); "
                    "is the ACL current, or run without receipts"
                )
        self.schedule = FixSchedule.paced(
            len(self.device_ids),
            self.rate,
            self.per_message,
            int((time.time() - self.backfill_s) * 1000),
        )
        self._t0 = time.monotonic()
        self._generating.set()
        self._thread.start()

    def stop_generating(self) -> None:
        """Generate no more fixes; what was generated is still sent until confirmed."""
        if self._generating.is_set():
            self._generating.clear()
            self._t_end = time.monotonic()

    def wait_confirmed(self, timeout: float) -> bool:
        """Wait until generating stopped and every generated fix is confirmed.

        Raises :class:`LoadError` when the generator thread failed.
        """
        deadline = time.monotonic() + timeout
        while True:
            if self.failure is not None:
                raise LoadError(f"the load generator failed: {self.failure}")
            if self._drained():
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.02)

    def close(self) -> None:
        self.stop_generating()
        self._closing.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)
        if self._acks is not None:
            self._acks.stop()
        if self._pub is not None:
            self._pub.close()

    def __enter__(self) -> LoadGenerator:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _drained(self) -> bool:
        if self._generating.is_set():
            return False
        return self.open == 0 and (self.receipts or self.connected)

    # -- the generator loop (own thread) ----------------------------------------------------

    def _run(self) -> None:
        try:
            while not self._closing.is_set():
                now = time.monotonic()
                wait = self._round_end - now
                if wait > 0:
                    time.sleep(wait)
                    now = time.monotonic()
                self._round_end = now + TICK_S
                pub = self._pub
                if pub is None or not pub.connected:
                    if not self._lost:
                        self._lost = True
                        log.warning("load generator lost its broker connection; reconnecting")
                    self._reconnect(now)
                    pub = self._pub
                if self._acks is not None:
                    self._apply_receipts()
                if self._generating.is_set():
                    self._generate(now)
                if pub is not None and pub.connected:
                    self._send(pub, now)
                    pub.pump(0)
        except Exception as exc:
            self.failure = f"{type(exc).__name__}: {exc}"
            log.exception("the load generator failed")
            self._generating.clear()

    def _reconnect(self, now: float) -> None:
        if now < self._next_connect:
            return
        old = self._pub
        try:
            if self.receipts or old is None:
                # the book has everything open: start from an empty in-flight window
                fresh = Publisher(self.client_id, self.username, self.password)
                fresh.connect(self.host, self.port, timeout=2.0)
                if old is not None:
                    self._done_acked += old.weight_acked
                    self._done_refused += old.refused
                    old.close()
                self._pub = fresh
                self._outbox.clear()
                self.book.all_due(now)
            else:
                old.resume(self.host, self.port, timeout=2.0)  # resends the unacknowledged
        except (OSError, MqttError) as exc:
            self._next_connect = now + self._backoff * random.uniform(0.8, 1.2)
            self._backoff = min(self._backoff * 2, RECONNECT_MAX_S)
            log.debug("reconnect failed (%s); next try in %.2f s", exc, self._backoff)
            return
        self._backoff = RECONNECT_FIRST_S
        self._lost = False
        self.reconnects += 1
        log.warning("load generator reconnected (%d fixes open)", self.open)

    def _apply_receipts(self) -> None:
        assert self._acks is not None
        owners, book, sched = self._ack_topics, self.book, self.schedule
        lag_ms = self._receipt_lag_ms
        now_ms = int(time.time() * 1000)
        got = 0
        while (batch := self._acks.take(0)) is not None:
            for m in batch:
                owner = owners.get(m.topic)
                if owner is None:
                    continue  # another generator's van
                try:
                    receipt = decode_receipt(m.payload)
                except ReceiptError:
                    self.bad_receipts += 1
                    continue
                got += 1
                book.apply(owner[0], receipt)
                if receipt.seq:  # the newest fix it covers was generated at its ts
                    lag = now_ms - sched.ts(owner[1], receipt.seq[-1][1])
                    lag_ms += (lag - lag_ms) * LAG_SMOOTHING
        if got:
            self.receipts_received += got
            self._receipt_lag_ms = lag_ms
            # A pipeline running behind must not be answered with resends of what is
            # still queued in it: wait at least LAG_FACTOR times the receipts' lag.
            book.resend_after_s = min(
                max(self.resend_after_s, LAG_FACTOR * lag_ms / 1000.0), book.resend_max_s
            )

    @property
    def receipt_lag_s(self) -> float:
        """Smoothed time from generating a fix to its receipt (receipts on)."""
        return self._receipt_lag_ms / 1000.0

    def _room(self) -> bool:
        return self.open + self.per_message <= self.max_open_fixes

    def _generate(self, now: float) -> None:
        sched, per, n = self.schedule, self.per_message, len(self.device_ids)
        now_ms = int(time.time() * 1000)
        i = self._next_message
        stop_at = i + MAX_MESSAGES_PER_TICK
        if self.total_messages is not None:
            stop_at = min(stop_at, self.total_messages)
        connected = self.connected
        receipts, book, outbox = self.receipts, self.book, self._outbox
        while i < stop_at and sched.due_ms(i) <= now_ms:
            if not self._room():
                if self._paused_since is None:
                    self._paused_since = now
                    log.log(
                        logging.DEBUG if self.paused_s else logging.WARNING,
                        "load generator paused: %d fixes open (the bound)",
                        self.open,
                    )
                break
            if self._paused_since is not None:
                self.paused_s += now - self._paused_since
                self._paused_since = None
            d, k = i % n, i // n
            seq0 = k * per
            lat = -5.14 - d * 1e-5
            if per == 1:
                payload = encode_fix(Fix(ts=sched.ts(d, seq0), lat=lat, lon=119.42, seq=seq0))
            else:
                payload = encode_batch(
                    [
                        Fix(ts=sched.ts(d, s), lat=lat, lon=119.42, seq=s)
                        for s in range(seq0, seq0 + per)
                    ]
                )
            topic = self._topics[d]
            if receipts:
                book.sent(self.device_ids[d], seq0, per, topic, payload, now)
                if connected:  # otherwise the reconnect sends everything open
                    outbox.append((topic, payload))
            else:
                outbox.append((topic, payload))
            i += 1
            self.generated += per
        self._next_message = i
        if self.total_messages is not None and i >= self.total_messages:
            self.stop_generating()

    def _send(self, pub: Publisher, now: float) -> None:
        outbox = self._outbox
        if self.receipts and len(outbox) < pub.window:
            due = self.book.due(now, limit=pub.window - len(outbox))
            if due:
                self.resent += len(due) * self.per_message
                outbox.extend(due)
        per = self.per_message
        sent = 0
        while outbox and not pub.full:
            topic, payload = outbox[0]
            if not pub.publish(topic, payload, per):
                break  # lost: the next round reconnects
            outbox.popleft()
            sent += 1
        self.messages_sent += sent


@dataclass(frozen=True)
class LoadSpec:
    """One :func:`run_load` process: a :class:`LoadGenerator` for ``duration_s``."""

    host: str
    port: int
    username: str
    password: str
    devices: int
    rate: float  # fixes/s for this process
    duration_s: float
    vehicle_prefix: str
    per_message: int = 1
    receipts: bool = True
    resend_after_s: float = 15.0
    subscribe_all: bool = True
    backfill_s: float = 0.0  # > 0: the whole load is a backlog, generated at once
    confirm_timeout_s: float = 120.0


def run_load(spec: LoadSpec) -> LoadResult:
    """Generate for ``duration_s`` (or the backfill), then wait for confirmation."""
    total = int(spec.rate * (spec.backfill_s or spec.duration_s))
    gen = LoadGenerator(
        spec.host,
        spec.port,
        spec.username,
        spec.password,
        spec.devices,
        spec.rate,
        spec.per_message,
        spec.vehicle_prefix,
        spec.receipts,
        spec.resend_after_s,
        subscribe_all=spec.subscribe_all,
        backfill_s=spec.backfill_s,
        total_fixes=total,
    )
    gen.start()
    tune_gc()
    t0 = time.monotonic()
    cpu0 = time.process_time()
    try:
        deadline = t0 + spec.duration_s
        while gen.generating and time.monotonic() < deadline:
            time.sleep(0.05)
            if gen.failure is not None:
                break
        gen.stop_generating()
        cpu_s = time.process_time() - cpu0
        if not gen.wait_confirmed(spec.confirm_timeout_s):
            log.warning(
                "%s: %d of %d fixes not confirmed after %.0f s",
                spec.vehicle_prefix,
                gen.open,
                gen.generated,
                spec.confirm_timeout_s,
            )
        result = gen.result()
        confirmed_s = time.monotonic() - t0
    finally:
        gen.close()
    return dataclasses.replace(result, cpu_s=cpu_s, confirmed_s=confirmed_s)
