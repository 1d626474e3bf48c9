"""The agent is receipt-aware: only a storage receipt takes a fix out of its queue.

Against the real Mosquitto: a PUBACK (0x10 "no matching subscribers" included) never
deletes; receipts published as ``svc-ingest`` delete exactly what they cover; unsettled
fixes are resent after a reconnect and after a receipt timeout; the unsettled window
bounds a backlog; and with a running ``fleet ingest`` every fix ends up stored, even
when ingest starts after the device (the broker dropping its batches with 0x10) or the
broker is killed with ``kill -9`` mid-stream.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import msgspec
import pytest

from broker.runner import BrokerError, MosquittoBroker
from firmware_stub.fix_queue import FixQueue
from tests.fixtures.firmware import (
    AgentHarness,
    FreezableProxy,
    Subscriber,
    drive_lines,
    new_device,
    now_ms,
    publish_receipt,
    queued_seqs,
)
from tests.fixtures.ingest import IngestProcess
from tests.fixtures.postgres import count
from tests.fixtures.waiting import wait_for


@pytest.fixture
def device(broker: MosquittoBroker) -> tuple[str, str]:
    return new_device(broker)


def prefill(path: Path, n: int, start_ms: int | None = None) -> list[int]:
    """A backlog of ``n`` fixes (seq 1..n) already on disk when the agent starts."""
    start = now_ms() - 3_600_000 if start_ms is None else start_ms
    q = FixQueue(path)
    try:
        return [q.put(ts=start + i * 1000, lat=-5.135, lon=119.423 + i * 1e-5) for i in range(n)]
    finally:
        q.close()


def receipt(**ranges: object) -> bytes:
    return msgspec.json.encode(ranges)


def test_a_puback_alone_never_deletes_and_unsettled_fixes_are_resent(
    broker: MosquittoBroker, device: tuple[str, str], tmp_path: Path
) -> None:
    """No ingest session: the broker PUBACKs with 0x10 and drops every batch."""
    vid, password = device
    path = tmp_path / "q.sqlite3"
    seqs = prefill(path, 30)
    harness = AgentHarness(
        broker.port, vid, password, path,
        batch_max_fixes=10, receipt_timeout_s=0.5, receipt_timeout_max_s=1.0,
        drain_timeout_s=1.0,
    )  # fmt: skip
    up = harness.agent.uploader
    wait_for(lambda: up.stats.fixes_acked >= 30, 10, "a PUBACK for every fix")
    assert up.stats.pubacks_no_subscribers >= 3  # reason 0x10, a success for paho
    assert queued_seqs(path) == seqs
    # No receipt: after the timeout the upload starts over from the oldest fix, probing
    # with that one fix only, and waits twice as long each time, up to the maximum.
    wait_for(lambda: up.stats.resends >= 3, 10, "resends after receipt timeouts")
    assert up.probing and up.receipt_wait_s == 1.0
    assert up.stats.fixes_resent >= 2  # one fix per probe
    # The probes really go out: a subscriber that joins now gets fix 1 again and again.
    sub = Subscriber(broker.port, broker.creds["svc-ingest"], vid, receipts=False)
    try:
        wait_for(lambda: sub.count() >= 2, 10, "two probes")
        assert {f.seq for f in sub.snapshot()} == {1}
        assert all(n == 1 for _, n in sub.batches)
    finally:
        sub.close()
    summary = harness.finish()
    assert not summary.drained and summary.queue_depth == 30
    assert queued_seqs(path) == seqs
    assert up.stats.fixes_confirmed == 0 and up.stats.connects == 1


def test_the_first_receipt_after_a_timeout_resends_the_whole_window(
    broker: MosquittoBroker, device: tuple[str, str], tmp_path: Path
) -> None:
    vid, password = device
    path = tmp_path / "q.sqlite3"
    seqs = prefill(path, 30)
    harness = AgentHarness(
        broker.port, vid, password, path, batch_max_fixes=10, receipt_timeout_s=0.5
    )  # fmt: skip
    up = harness.agent.uploader
    wait_for(lambda: up.probing, 10, "a receipt timeout")
    # The receiver is back and receipts what it gets: the probe (fix 1), then the rest.
    sub = Subscriber(broker.port, broker.creds["svc-ingest"], vid, receipts=True)
    try:
        summary = harness.finish()
        assert summary.drained and summary.queue_depth == 0
        assert not up.probing and up.receipt_wait_s == 0.5
        got = [f.seq for f in sub.snapshot()]
        assert got[-29:] == seqs[1:]  # the whole window again, oldest first, once
        assert set(got) == set(seqs) and up.stats.fixes_confirmed == 30
    finally:
        sub.close()


def test_receipts_delete_exactly_what_they_cover_and_garbage_changes_nothing(
    broker: MosquittoBroker,
    device: tuple[str, str],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    vid, password = device
    path = tmp_path / "q.sqlite3"
    seqs = prefill(path, 30)
    harness = AgentHarness(
        broker.port, vid, password, path, batch_max_fixes=10, receipt_timeout_s=60
    )  # fmt: skip
    up = harness.agent.uploader
    wait_for(lambda: up.stats.fixes_acked >= 30, 10, "a PUBACK for every fix")
    ingest_pw = broker.creds["svc-ingest"]

    def send(payload: bytes) -> None:
        seen = up.stats.receipts + up.stats.bad_receipts
        publish_receipt(broker.port, ingest_pw, vid, payload)
        wait_for(lambda: up.stats.receipts + up.stats.bad_receipts > seen, 10, "the receipt")

    with caplog.at_level(logging.WARNING, logger="firmware_stub.uploader"):
        send(receipt(seq=[[1, 5], [8, 8]], rejected=[[10, 12]]))
    gone = {1, 2, 3, 4, 5, 8, 10, 11, 12}
    assert queued_seqs(path) == [s for s in seqs if s not in gone]
    assert (up.stats.fixes_confirmed, up.stats.fixes_rejected) == (6, 3)
    refused = [r for r in caplog.records if "refused fixes for good" in r.getMessage()]
    assert len(refused) == 1 and refused[0].seq_ranges == [(10, 12)]

    garbage = [
        b"",
        b"not json",
        b'{"seq": "all"}',
        b'{"seq": [[5, 1]]}',  # an empty range
        b'{"seq": [[-1, 30]]}',
        b'{"seq": [[1, 2, 3]]}',
        b'{"rejected": [[0, 9223372036854775808]]}',  # beyond the contract's seq
        b'{"seq": [[1, 99999999999999999999999999]]}',
        b'{"seq": ' + b"[" * 5000 + b"]" * 5000 + b"}",
        b"\xff\xfe\x00",
    ]
    for payload in garbage:
        send(payload)
    assert up.stats.bad_receipts == len(garbage)
    # Well-formed but harmless: a repeat, and seqs this agent never sent.
    send(receipt(seq=[[1, 5]]))
    send(receipt(seq=[[31, 10_000]], rejected=[[500, 600]]))
    assert queued_seqs(path) == [s for s in seqs if s not in gone]
    assert (up.stats.fixes_confirmed, up.stats.fixes_rejected) == (6, 3)
    assert harness.agent.uploader.is_alive() and up.stats.connects == 1

    send(receipt(seq=[[1, 30]]))
    summary = harness.finish()
    assert summary.drained and summary.queue_depth == 0
    assert (up.stats.fixes_confirmed, up.stats.fixes_rejected) == (27, 3)
    assert up.stats.resends == 0


def test_after_a_reconnect_unsettled_fixes_are_resent(
    broker: MosquittoBroker, device: tuple[str, str], tmp_path: Path
) -> None:
    vid, password = device
    path = tmp_path / "q.sqlite3"
    seqs = prefill(path, 20)
    proxy = FreezableProxy(broker.port)  # the cellular link
    sub = Subscriber(broker.port, broker.creds["svc-ingest"], vid, receipts=False)
    harness = AgentHarness(
        proxy.port, vid, password, path, batch_max_fixes=10, receipt_timeout_s=60
    )  # fmt: skip
    up = harness.agent.uploader
    try:
        wait_for(lambda: sub.count() >= 20 and up.stats.fixes_acked >= 20, 10, "the upload")
        publish_receipt(broker.port, broker.creds["svc-ingest"], vid, receipt(seq=[[1, 10]]))
        wait_for(lambda: harness.agent.queue_depth() == 10, 10, "the first receipt")
        proxy.cut()  # the link drops: fixes 11..20 are PUBACKed but not settled
        wait_for(lambda: up.stats.connects >= 2, 10, "the reconnect")
        wait_for(lambda: sub.count() >= 30, 10, "the unsettled fixes again")
        time.sleep(0.3)  # anything more would arrive in this window
        got = [f.seq for f in sub.snapshot()]
        assert got == seqs + seqs[10:]  # the settled half is not sent again
        assert up.stats.fixes_resent == 10 and up.stats.resends == 0
        sub.receipts = True
        publish_receipt(broker.port, broker.creds["svc-ingest"], vid, receipt(seq=[[11, 20]]))
        summary = harness.finish()
        assert summary.drained and summary.queue_depth == 0
        assert up.stats.fixes_confirmed == 20
    finally:
        harness.kill()
        sub.close()
        proxy.close()


def test_the_unsettled_window_bounds_a_backlog(
    broker: MosquittoBroker, device: tuple[str, str], tmp_path: Path
) -> None:
    """A device with a long backlog has at most ``receipt_window`` batches unsettled."""
    vid, password = device
    path = tmp_path / "q.sqlite3"
    prefill(path, 200)
    sub = Subscriber(broker.port, broker.creds["svc-ingest"], vid, receipts=False)
    harness = AgentHarness(
        broker.port, vid, password, path,
        batch_max_fixes=10, receipt_window=3, receipt_timeout_s=60,
    )  # fmt: skip
    up = harness.agent.uploader
    try:
        wait_for(lambda: sub.messages >= 3, 10, "the first window")
        wait_for(lambda: up.stats.fixes_acked >= 30, 10, "its PUBACKs")
        time.sleep(0.5)  # a fourth batch would arrive in this window
        assert sub.messages == 3 and up.unsettled_batches == 3
        # A receipt for the oldest batch slides the window by one batch.
        publish_receipt(broker.port, broker.creds["svc-ingest"], vid, receipt(seq=[[1, 10]]))
        wait_for(lambda: sub.messages >= 4, 10, "the window to slide")
        time.sleep(0.3)
        assert sub.messages == 4
        assert [f.seq for f in sub.snapshot()[30:]] == list(range(31, 41))
        # The subscriber now receipts what it gets (fixes 11..40 were sent before, so the
        # test settles those itself): the whole backlog drains, one window at a time.
        sub.receipts = True
        publish_receipt(broker.port, broker.creds["svc-ingest"], vid, receipt(seq=[[11, 40]]))
        summary = harness.finish()
        assert summary.drained and summary.queue_depth == 0
        assert up.stats.fixes_confirmed == 200 and up.stats.resends == 0
    finally:
        harness.kill()
        sub.close()


def test_receipts_off_deletes_on_puback(
    broker: MosquittoBroker, device: tuple[str, str], tmp_path: Path
) -> None:
    """``receipts=False`` (``--no-receipts``): the old behaviour, for a server without them."""
    vid, password = device
    path = tmp_path / "q.sqlite3"
    prefill(path, 25)
    harness = AgentHarness(broker.port, vid, password, path, batch_max_fixes=10, receipts=False)
    summary = harness.finish()
    assert summary.drained and summary.queue_depth == 0  # 0x10 PUBACKs, deleted all the same
    st = harness.agent.uploader.stats
    assert st.fixes_acked == st.fixes_confirmed == 25 and st.pubacks_no_subscribers >= 3


# -- with a real `fleet ingest` ----------------------------------------------------------


def positions(dsn: str, vid: str) -> int:
    return count(dsn, "SELECT count(*) FROM positions WHERE vehicle_id = %s", vid)


def test_end_to_end_every_fix_is_stored_and_the_queue_empties(
    broker: MosquittoBroker,
    device: tuple[str, str],
    ingest_worker: IngestProcess,
    tmp_path: Path,
) -> None:
    vid, password = device
    harness = AgentHarness(broker.port, vid, password, tmp_path / "q.sqlite3")
    # 5 fixes from 8 days ago (ingest refuses them as too old, for good), then 300 fresh.
    old = now_ms() - 8 * 86_400_000
    harness.feed(drive_lines(old, 5))
    harness.feed(drive_lines(now_ms() - 600_000, 300))
    summary = harness.finish()
    assert summary.fixes_queued == 305
    assert summary.drained and summary.queue_depth == 0
    st = harness.agent.uploader.stats
    assert (st.fixes_confirmed, st.fixes_rejected) == (300, 5)
    assert st.resends == 0 and st.bad_receipts == 0
    assert positions(ingest_worker.dsn, vid) == 300


def test_fixes_dropped_with_0x10_before_ingest_started_are_resent_and_stored(
    broker: MosquittoBroker, device: tuple[str, str], db_dsn: str, tmp_path: Path
) -> None:
    """The issue's data loss: no ingest session yet, the broker PUBACKs 0x10 and drops."""
    vid, password = device
    path = tmp_path / "q.sqlite3"
    prefill(path, 50)
    harness = AgentHarness(
        broker.port, vid, password, path,
        batch_max_fixes=20, receipt_timeout_s=1.0, receipt_timeout_max_s=2.0,
    )  # fmt: skip
    up = harness.agent.uploader
    ingest = IngestProcess(broker, db_dsn, tmp_path)
    try:
        wait_for(lambda: up.stats.pubacks_no_subscribers >= 3, 10, "0x10 PUBACKs")
        assert harness.agent.queue_depth() == 50
        ingest.start()
        wait_for(lambda: harness.agent.queue_depth() == 0, 30, "receipts for every fix")
        summary = harness.finish()
        assert summary.drained
        assert positions(db_dsn, vid) == 50
        assert up.stats.fixes_confirmed == 50 and up.stats.resends >= 1
    finally:
        harness.kill()
        ingest.stop()


def restart(broker: MosquittoBroker) -> None:
    """Start Mosquitto again on the same data dir and port (retrying while the port frees)."""
    deadline = time.monotonic() + 10
    while True:
        try:
            broker.start(timeout=5)
            return
        except BrokerError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def test_broker_kill_9_with_a_backlog_queued_loses_nothing(
    broker: MosquittoBroker,
    device: tuple[str, str],
    ingest_worker: IngestProcess,
    tmp_path: Path,
) -> None:
    """Mosquitto PUBACKs on receipt and saves every 30 s: kill -9 loses what it held.

    Ingest is down, so the broker holds the device's PUBACKed batches in memory; then it
    dies (and with it ingest's unsaved session: the restarted broker answers 0x10 until
    ingest is back). The device has every unsettled fix on disk and resends it.
    """
    vid, password = device
    dsn = ingest_worker.dsn
    harness = AgentHarness(
        broker.port, vid, password, tmp_path / "q.sqlite3",
        batch_max_fixes=20, receipt_timeout_s=1.0, receipt_timeout_max_s=2.0,
    )  # fmt: skip
    up = harness.agent.uploader
    lines = drive_lines(now_ms() - 3_600_000, 300)
    try:
        harness.feed(lines[:200])  # 100 fixes, stored and receipted
        wait_for(lambda: up.stats.fixes_confirmed == 100, 20, "the first receipts")
        ingest_worker.kill()
        harness.feed(lines[200:])  # 200 more: PUBACKed, held by the broker for ingest
        wait_for(lambda: harness.agent.queue_depth() == 200, 20, "the backlog on disk")
        # The window filled (PUBACKed, unsettled), a receipt timed out: the device probes.
        wait_for(lambda: up.probing, 20, "a receipt timeout")
        broker.kill()  # SIGKILL: nothing saved since it started (autosave every 30 s)
        restart(broker)
        ingest_worker.start()
        wait_for(lambda: harness.agent.queue_depth() == 0, 60, "every fix settled")
        summary = harness.finish()
        assert summary.drained and summary.fixes_queued == 300
        assert positions(dsn, vid) == 300
        assert up.stats.connects >= 2 and up.stats.fixes_confirmed == 300
    finally:
        harness.kill()
