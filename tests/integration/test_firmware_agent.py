"""The device agent against the real Mosquitto: upload, outage, commands, credentials."""

from __future__ import annotations

import time
from pathlib import Path

import msgspec
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from broker.runner import MosquittoBroker
from fleet.contract import MAX_BATCH_FIXES, MAX_PAYLOAD_BYTES, Command, cmd_topic
from tests.fixtures.firmware import (
    AgentHarness,
    Subscriber,
    drive_lines,
    epoch,
    new_device,
    now_ms,
    retained_status,
    track_point,
)
from tests.fixtures.waiting import wait_for


@pytest.fixture
def device(broker: MosquittoBroker) -> tuple[str, str]:
    return new_device(broker)


@pytest.fixture
def sub(broker: MosquittoBroker, device: tuple[str, str]):
    s = Subscriber(broker.port, broker.creds["svc-ingest"], device[0])
    yield s
    s.close()


def assert_exactly_once_oldest_first(fixes, expected_ts: list[int]) -> None:
    got = [f.ts for f in fixes]
    assert len(got) == len(set(got)), f"{len(got) - len(set(got))} duplicates"
    assert got == sorted(got), "fixes arrived out of order"
    assert got == expected_ts
    seqs = [f.seq for f in fixes]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)


def test_backlog_is_uploaded_in_contract_batches_oldest_first(
    broker: MosquittoBroker, device: tuple[str, str], sub: Subscriber, tmp_path: Path
) -> None:
    vid, password = device
    start = now_ms() - 3_600_000
    lines = drive_lines(start, 1200)
    # Fill the queue while the broker refuses the device (wrong password), then fix it.
    harness = AgentHarness(broker.port, vid, password + "-wrong", tmp_path / "q.sqlite3")
    harness.feed(lines)
    wait_for(lambda: harness.agent.queue_depth() == 1200, 30, "the queue to fill")
    uploader = harness.agent.uploader
    wait_for(lambda: uploader.stats.connect_failures >= 2, 10, "refused connects")
    assert "vehicle id" in uploader.stats.last_error  # the hint for the operator
    assert sub.count() == 0
    harness.kill()

    harness = AgentHarness(broker.port, vid, password, tmp_path / "q.sqlite3")
    summary = harness.finish()
    assert summary.drained and summary.queue_depth == 0
    wait_for(lambda: sub.count() >= 1200, 10, "every fix")
    assert_exactly_once_oldest_first(sub.snapshot(), [start + i * 1000 for i in range(1200)])
    # 1,200 fixes of ~110 bytes do not fit in one 64 KiB batch: each within the limits.
    assert sub.messages >= 2
    assert sub.messages == harness.agent.uploader.stats.batches_sent
    stats = harness.agent.uploader.stats
    assert stats.fixes_acked == stats.fixes_confirmed == 1200  # the subscriber receipts
    assert stats.resends == stats.fixes_resent == 0
    sizes = [size for size, _ in sub.batches]
    assert all(size <= MAX_PAYLOAD_BYTES for size in sizes)
    assert all(n <= MAX_BATCH_FIXES for _, n in sub.batches)
    assert max(sizes) > MAX_PAYLOAD_BYTES * 0.9  # a backlog goes in full batches
    # Graceful end: the agent says offline itself (a clean disconnect sends no will).
    assert retained_status(broker.port, broker.creds["svc-api"], vid) == "offline"
    assert ("online", False) in sub.statuses


def _outage(
    broker: MosquittoBroker, vid: str, password: str, sub: Subscriber, tmp: Path, down_s: float
) -> None:
    start = now_ms() - 600_000
    ts = iter(range(start, start + 10_000_000, 1000))
    sent: list[int] = []

    def feed(harness: AgentHarness, n: int) -> None:
        for _ in range(n):
            t = next(ts)
            lat, lon = track_point(len(sent))
            harness.feed(epoch(t, lat, lon))
            sent.append(t)

    harness = AgentHarness(broker.port, vid, password, tmp / "q.sqlite3")
    feed(harness, 10)
    wait_for(lambda: sub.count() == 10, 10, "the first fixes")
    wait_for(lambda: harness.agent.queue_depth() == 0, 5, "the queue to empty")

    # The broker goes down while nothing is in flight: a batch on the wire at that very
    # moment could be delivered without its PUBACK and legitimately sent twice (QoS 1).
    broker.stop()
    wait_for(lambda: not harness.agent.uploader.connected.is_set(), 10, "the agent to notice")
    # Fixes keep coming, one GPS epoch every 0.5 s of wall time, for the whole outage.
    outage_end = time.monotonic() + down_s
    fed_during_outage = 0
    while time.monotonic() < outage_end:
        feed(harness, 1)
        fed_during_outage += 1
        time.sleep(min(0.5, max(0.0, outage_end - time.monotonic())))
    wait_for(harness.fed_all, 5, "the agent to read every line")
    wait_for(
        lambda: harness.agent.queue_depth() == fed_during_outage, 5, "the outage backlog on disk"
    )
    assert sub.count() == 10

    restarted = MosquittoBroker(broker.layout.root.parent, port=broker.port)
    restarted.start()
    try:
        feed(harness, 10)  # live fixes right after the reconnect go behind the backlog
        wait_for(lambda: sub.count() >= len(sent), 30, "the backlog after reconnect")
        harness.finish()
        time.sleep(0.3)  # a duplicate would arrive in this window
        assert_exactly_once_oldest_first(sub.snapshot(), sent)
        assert harness.agent.uploader.stats.connects == 2
    finally:
        restarted.stop()


def test_broker_outage_every_fix_arrives_once_in_order(
    broker: MosquittoBroker, device: tuple[str, str], sub: Subscriber, tmp_path: Path
) -> None:
    _outage(broker, *device, sub, tmp_path, down_s=3)


@pytest.mark.slow
def test_broker_down_60_s_every_fix_arrives_once_in_order(
    broker: MosquittoBroker, device: tuple[str, str], sub: Subscriber, tmp_path: Path
) -> None:
    _outage(broker, *device, sub, tmp_path, down_s=60)


def _send_command(port: int, password: str, vid: str, payload: bytes) -> None:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=MQTTProtocolVersion.MQTTv5)
    client.username_pw_set("svc-api", password)
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        client.publish(cmd_topic(vid), payload, qos=1).wait_for_publish(5)
    finally:
        client.loop_stop()
        client.disconnect()


def test_set_interval_command_changes_the_sampling(
    broker: MosquittoBroker, device: tuple[str, str], sub: Subscriber, tmp_path: Path
) -> None:
    vid, password = device
    start = now_ms() - 600_000
    harness = AgentHarness(broker.port, vid, password, tmp_path / "q.sqlite3", interval_s=1)
    wait_for(harness.agent.uploader.connected.is_set, 10, "the agent to connect")
    harness.feed(drive_lines(start, 5))
    wait_for(lambda: sub.count() == 5, 10, "fixes at the 1 s interval")

    api = broker.creds["svc-api"]
    _send_command(broker.port, api, vid, b"not json")
    _send_command(broker.port, api, vid, msgspec.json.encode(Command("set_interval", 0.0)))
    _send_command(broker.port, api, vid, msgspec.json.encode(Command("reboot")))
    cmd = Command("set_interval", interval_s=5.0, id="c-1")
    _send_command(broker.port, api, vid, msgspec.json.encode(cmd))
    wait_for(lambda: harness.agent.sampler.interval_s == 5.0, 10, "the command to apply")
    stats = harness.agent.uploader.stats
    assert (stats.commands, stats.bad_commands) == (1, 3)

    harness.feed(drive_lines(start + 5000, 20))  # GPS epochs 5..24 s, every second
    harness.finish()
    time.sleep(0.3)
    ts = [f.ts - start for f in sub.snapshot()]
    assert ts == [0, 1000, 2000, 3000, 4000, 9000, 14_000, 19_000, 24_000]

    # The interval survives a restart (a power cut must not reset it to the default).
    again = AgentHarness(broker.port, vid, password, tmp_path / "q.sqlite3", interval_s=1)
    assert again.agent.sampler.interval_s == 5.0
    again.finish()


def test_a_command_sent_while_the_device_is_offline_waits_for_it(
    broker: MosquittoBroker, device: tuple[str, str], tmp_path: Path
) -> None:
    """The device keeps a broker session (clean_start=False), so QoS 1 commands queue."""
    vid, password = device
    first = AgentHarness(broker.port, vid, password, tmp_path / "q.sqlite3", interval_s=1)
    wait_for(first.agent.uploader.connected.is_set, 10, "the first connection")
    first.finish()
    cmd = msgspec.json.encode(Command("set_interval", interval_s=7.0))
    _send_command(broker.port, broker.creds["svc-api"], vid, cmd)
    again = AgentHarness(broker.port, vid, password, tmp_path / "q.sqlite3", interval_s=1)
    try:
        wait_for(lambda: again.agent.sampler.interval_s == 7.0, 10, "the queued command")
    finally:
        again.finish()


def test_upload_limit_paces_a_backlog(
    broker: MosquittoBroker, device: tuple[str, str], sub: Subscriber, tmp_path: Path
) -> None:
    vid, password = device
    rate = 15_000  # payload bytes per second
    harness = AgentHarness(
        broker.port, vid, password, tmp_path / "q.sqlite3",
        upload_limit_bps=rate, batch_max_fixes=40,
    )  # fmt: skip
    harness.feed(drive_lines(now_ms() - 600_000, 300))
    harness.finish()
    wait_for(lambda: sub.count() >= 300, 10, "every fix")
    sizes = [size for size, _ in sub.batches]
    elapsed = sub.arrivals[-1] - sub.arrivals[0]
    # The first batch goes at once; the rest wait for the budget the earlier ones used.
    assert elapsed >= 0.9 * sum(sizes[:-1]) / rate
    assert sum(sizes) / elapsed < rate * 1.5
