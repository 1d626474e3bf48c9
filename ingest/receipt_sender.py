"""Storage receipts on their own thread: :class:`ReceiptSender`.

The writer thread hands over a second's receipts at a time (:meth:`ReceiptSender.post`)
and never waits. This thread publishes them (QoS 1) as fast as the broker's in-flight
window for ingest lets it: it waits for each PUBACK's room itself, so the number of
receipts a second is bounded by the window and the broker's round trip, not by how
often the writer loop turns. (Sent from the writer loop, once per commit, at most one
window per turn got out: at 20,000 fixes/s from 10,000 devices that was 1,600 receipts
a second for 10,000 due, so devices timed out and resent fixes that were long stored,
and the resends doubled the overload.)

Waiting here never stalls ingest: the PUBACKs are read by the MQTT reader thread, and
the writer and decoder threads do not wait for this one. What waits is bounded by
:data:`MAX_UNSENT_RECEIPTS` (the oldest are dropped and counted; their devices resend,
the duplicates are no-ops and receipted again).
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Iterable
from typing import Final, Protocol

from prometheus_client import Counter

__all__ = ["MAX_UNSENT_RECEIPTS", "ReceiptSender"]

log = logging.getLogger(__name__)

# Receipts waiting for the broker's window (about 100 bytes each): a backstop for a
# broker that is gone for long, far above one interval's worth for 100,000 devices.
MAX_UNSENT_RECEIPTS: Final = 200_000
WINDOW_WAIT_S: Final = 1.0  # one wait for room in the window, then look at stop again


class _Publish(Protocol):
    def __call__(self, topic: str, payload: bytes, qos: int = 1, *, wait: float) -> bool: ...


class ReceiptSender:
    """A bounded outbox of ``(topic, payload)`` receipts and the thread that sends it."""

    def __init__(self, publish: _Publish, sent: Counter, dropped: Counter) -> None:
        self._publish = publish
        self._sent = sent
        self._dropped = dropped
        self._outbox: deque[tuple[str, bytes]] = deque()
        self._wake = threading.Condition()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ingest-receipts", daemon=True)

    def __len__(self) -> int:
        return len(self._outbox)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop sending; what is still in the outbox is dropped (devices resend)."""
        self._stop.set()
        with self._wake:
            self._wake.notify()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def post(self, receipts: Iterable[tuple[str, bytes]]) -> None:
        """Queue receipts (never blocks); beyond the bound the oldest go."""
        outbox = self._outbox
        with self._wake:
            outbox.extend(receipts)
            overflow = len(outbox) - MAX_UNSENT_RECEIPTS
            for _ in range(max(overflow, 0)):
                outbox.popleft()
            self._wake.notify()
        if overflow > 0:
            self._dropped.inc(overflow)

    def _run(self) -> None:
        outbox, stop = self._outbox, self._stop
        while not stop.is_set():
            with self._wake:
                while not outbox and not stop.is_set():
                    self._wake.wait()
            sent = 0
            while outbox and not stop.is_set():
                try:
                    receipt = outbox.popleft()
                except IndexError:  # post() dropped it meanwhile (over the bound)
                    break
                if not self._publish(*receipt, 1, wait=WINDOW_WAIT_S):
                    outbox.appendleft(receipt)  # no room within the wait, or no connection
                    break
                sent += 1
            if sent:
                self._sent.inc(sent)
            elif outbox:
                stop.wait(0.05)  # not connected: do not spin
