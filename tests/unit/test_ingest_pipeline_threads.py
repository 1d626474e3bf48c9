"""The ingest pipeline's threads, without a broker or a database.

* the receipt thread sends in order, waits for the window itself, keeps what could not
  be sent for the next try, and drops the oldest (counted) beyond its bound;
* the decode → write pipeline commits and acknowledges batches in the order they were
  read, holds at most three unacknowledged (reading nothing more meanwhile), and a
  writer that fails stops ``run`` with the error instead of leaving it decoding into a
  queue nobody empties.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, Counter

import ingest.receipt_sender as receipt_sender
from fleet.settings import IngestSettings
from ingest.metrics import IngestMetrics
from ingest.receipt_sender import ReceiptSender
from ingest.worker import IngestWorker
from ingest.writer import Item
from mqtt5 import Message
from tests.fixtures.waiting import wait_for


def _counters() -> tuple[Counter, Counter]:
    r = CollectorRegistry()
    return Counter("sent", "", registry=r), Counter("dropped", "", registry=r)


class _Window:
    """A publish function with a window the test opens and closes."""

    def __init__(self) -> None:
        self.open = threading.Event()
        self.open.set()
        self.sent: list[str] = []

    def __call__(self, topic: str, payload: bytes, qos: int = 1, *, wait: float) -> bool:
        if not self.open.wait(min(wait, 0.05)):
            return False
        self.sent.append(topic)
        return True


def test_receipts_go_in_order_and_wait_for_the_window() -> None:
    window = _Window()
    sent, dropped = _counters()
    sender = ReceiptSender(window, sent, dropped)
    sender.start()
    try:
        sender.post((f"fleet/v{i}/ack", b"{}") for i in range(3))
        wait_for(lambda: len(window.sent) == 3, 5, "three receipts sent")
        window.open.clear()  # the broker's window is full
        sender.post([("fleet/v3/ack", b"{}"), ("fleet/v4/ack", b"{}")])
        time.sleep(0.3)
        assert len(window.sent) == 3 and len(sender) == 2  # kept, not lost
        window.open.set()
        wait_for(lambda: len(window.sent) == 5, 5, "the kept receipts sent")
        assert window.sent == [f"fleet/v{i}/ack" for i in range(5)]
        assert sent._value.get() == 5 and dropped._value.get() == 0
    finally:
        sender.stop()


def test_receipts_beyond_the_bound_drop_the_oldest(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(receipt_sender, "MAX_UNSENT_RECEIPTS", 3)
    window = _Window()
    window.open.clear()
    sent, dropped = _counters()
    sender = ReceiptSender(window, sent, dropped)  # not started: nothing leaves
    sender.post((f"fleet/v{i}/ack", b"{}") for i in range(5))
    assert len(sender) == 3 and dropped._value.get() == 2
    window.open.set()
    sender.start()
    try:
        wait_for(lambda: len(window.sent) == 3, 5, "the newest three sent")
        assert window.sent == ["fleet/v2/ack", "fleet/v3/ack", "fleet/v4/ack"]
    finally:
        sender.stop()


def _worker() -> IngestWorker:
    settings = IngestSettings(
        dsn="postgresql://unused", mqtt_port=1, receipts=False, batch_max_ms=1
    )
    return IngestWorker(settings, "postgresql://unused", IngestMetrics(CollectorRegistry()))


def _message(mid: int) -> Message:
    payload = b'{"ts": %d, "lat": -5.1, "lon": 119.4}' % (int(time.time() * 1000))
    return Message(mid, 1, "fleet/PP-1/telemetry", payload, 0, time.monotonic())


class _Recorder:
    """Stands in for the database writer (held until released) and the broker's PUBACKs."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.writing = threading.Semaphore(0)  # one release per batch the writer took
        self.acked: list[int] = []

    def write(self, items: list[Item], stop: threading.Event) -> bool:
        self.writing.release()
        return self.release.wait(10)

    def ack(self, messages: Any) -> int:
        self.acked.extend(m.mid for m in messages)
        return len(messages)


def test_batches_commit_and_ack_in_read_order_three_at_most_held() -> None:
    worker = _worker()
    rec = _Recorder()
    worker._write_until_committed = rec.write  # type: ignore[method-assign]
    worker.source.ack = rec.ack  # type: ignore[method-assign]
    worker.source.start = lambda: None  # type: ignore[method-assign]
    worker.source.stop = lambda: None  # type: ignore[method-assign]
    inbox = worker.source.inbox
    stop = threading.Event()
    runner = threading.Thread(target=worker.run, args=(stop,), daemon=True)
    runner.start()
    try:
        inbox.put([_message(1)])
        assert rec.writing.acquire(timeout=5)  # the writer holds batch 1 (uncommitted)
        inbox.put([_message(2)])
        wait_for(lambda: inbox.qsize() == 0, 5, "batch 2 decoded into the queue")
        inbox.put([_message(3)])
        wait_for(lambda: inbox.qsize() == 0, 5, "batch 3 decoded, waiting for room")
        inbox.put([_message(4)])
        inbox.put([_message(5)])
        time.sleep(0.3)
        # nothing acknowledged before its commit, and nothing more read meanwhile
        assert rec.acked == [] and inbox.qsize() == 2
        rec.release.set()
        wait_for(lambda: len(rec.acked) == 5, 5, "every batch acknowledged")
        assert rec.acked == [1, 2, 3, 4, 5]
    finally:
        stop.set()
        runner.join(10)
    assert not runner.is_alive()


def test_a_failing_writer_stops_run_with_its_error() -> None:
    worker = _worker()

    def broken(items: list[Item], stop: threading.Event) -> bool:
        raise KeyError("not a database error: a bug")

    worker._write_until_committed = broken  # type: ignore[method-assign]
    worker.source.start = lambda: None  # type: ignore[method-assign]
    worker.source.stop = lambda: None  # type: ignore[method-assign]
    worker.source.inbox.put([_message(1)])
    with pytest.raises(RuntimeError, match="writer thread failed") as info:
        worker.run(threading.Event())
    assert isinstance(info.value.__cause__, KeyError)
