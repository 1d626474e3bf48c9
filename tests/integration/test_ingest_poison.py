"""Poison messages: each is dead-lettered once with its reason, and the worker goes on.

Every case is the worst of its class found against the previous main, which each stopped
the worker or retried forever: a deep JSON nest (``RecursionError``), a ``seq`` past
bigint (``OverflowError`` inside COPY), a NUL in a route code (PostgreSQL refuses the
batch), a 60,000-character route code (stored and broadcast). Each is followed by a
valid fix that must be stored, then by an ingest restart that must not crash-loop on
whatever the broker still holds.
"""

from __future__ import annotations

import json
import time

import paho.mqtt.client as mqtt
import psycopg
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from prometheus_client import CollectorRegistry

from fleet.contract import Fix, Reason, encode_fix, receipt_topic, telemetry_topic
from fleet.receipts import decode_receipt
from fleet.settings import IngestSettings
from ingest.metrics import IngestMetrics
from ingest.worker import IngestWorker
from ingest.writer import BatchWriter, Item
from tests.fixtures.mqtt import Publisher, add_device
from tests.fixtures.postgres import count
from tests.fixtures.waiting import wait_for


def _now_ms() -> int:
    return int(time.time() * 1000)


def _poison(kind: str, now: int) -> bytes:
    if kind == "too_deep":
        return b'{"ts": %d, "lat": -5.1, "lon": 119.4, "x": %s%s}' % (now, b"[" * 2000, b"]" * 2000)
    if kind == "seq_out_of_range":
        return b'{"ts": %d, "lat": -5.1, "lon": 119.4, "seq": 9223372036854775808}' % now
    if kind == "bad_route_nul":
        return json.dumps({"ts": now, "lat": -5.1, "lon": 119.4, "route": "A\u0000"}).encode()
    if kind == "bad_route_long":
        return json.dumps({"ts": now, "lat": -5.1, "lon": 119.4, "route": "R" * 60_000}).encode()
    raise AssertionError(kind)


REASONS = {
    "too_deep": Reason.TOO_DEEP,
    "seq_out_of_range": Reason.SEQ_OUT_OF_RANGE,
    "bad_route_nul": Reason.BAD_ROUTE,
    "bad_route_long": Reason.BAD_ROUTE,
}


@pytest.mark.parametrize("kind", list(REASONS))
def test_poison_is_dead_lettered_and_the_worker_goes_on(kind, broker, ingest_worker):
    vid = "PP-POISON"
    pub = Publisher(broker.port, vid, add_device(broker, vid))
    now = _now_ms()
    payload = _poison(kind, now - 3000)
    assert len(payload) < 64 * 1024  # every poison fits the size limit: size alone is no defence
    pub.publish(telemetry_topic(vid), payload)
    pub.publish(telemetry_topic(vid), encode_fix(Fix(ts=now - 1000, lat=-5.13, lon=119.41)))
    pub.wait_all_acked()

    dsn = ingest_worker.dsn
    wait_for(lambda: count(dsn, "SELECT count(*) FROM positions") == 1, 30, "the valid fix")
    wait_for(lambda: count(dsn, "SELECT count(*) FROM rejected_messages") == 1, 30, "dead letter")
    reason = REASONS[kind].value
    assert count(dsn, "SELECT count(*) FROM rejected_messages WHERE reason = %s", reason) == 1
    assert count(dsn, "SELECT coalesce(max(length(route)), 0) FROM vehicles") == 0
    assert ingest_worker.proc.poll() is None

    # A restart finds nothing left to choke on, and keeps storing.
    ingest_worker.kill()
    ingest_worker.start()
    pub.publish(telemetry_topic(vid), encode_fix(Fix(ts=now, lat=-5.13, lon=119.41)))
    pub.wait_all_acked()
    wait_for(lambda: count(dsn, "SELECT count(*) FROM positions") == 2, 30, "fix after restart")
    time.sleep(1.0)  # a crash loop would show within a second of the restart
    assert ingest_worker.proc.poll() is None
    assert count(dsn, "SELECT count(*) FROM rejected_messages") == 1
    pub.close()


def test_one_dead_letter_per_message_with_its_count_of_bad_fixes(broker, ingest_worker):
    vid = "PP-BATCH"
    pub = Publisher(broker.port, vid, add_device(broker, vid))
    now = _now_ms()
    fixes = [{"ts": now - 10_000 + i, "lat": -5.1, "lon": 119.4, "seq": i} for i in range(10)]
    fixes[3]["lat"] = 95.0
    fixes[7]["route"] = "no spaces allowed"
    pub.publish(telemetry_topic(vid), json.dumps({"fixes": fixes}).encode())
    pub.wait_all_acked()
    dsn = ingest_worker.dsn
    wait_for(lambda: count(dsn, "SELECT count(*) FROM positions") == 8, 30, "the 8 good fixes")
    wait_for(lambda: count(dsn, "SELECT count(*) FROM rejected_messages") == 1, 30, "dead letter")
    assert count(dsn, "SELECT bad_fixes FROM rejected_messages") == 2
    assert (
        count(dsn, "SELECT count(*) FROM rejected_messages WHERE detail LIKE %s", "%1 more%") == 1
    )
    pub.close()


def _worker(dsn: str) -> IngestWorker:
    """A worker that is never started (no broker needed), with its own metrics registry."""
    settings = IngestSettings(analytics=False)
    worker = IngestWorker(settings, dsn, IngestMetrics(CollectorRegistry()))
    worker._writer = BatchWriter(dsn)
    return worker


def test_rows_postgresql_refuses_are_found_by_bisection_and_dead_lettered(db_dsn):
    """Data the contract would refuse, written straight to the writer: PostgreSQL's own
    refusal (NUL in text, a seq past bigint) isolates that message; the rest commits."""
    worker = _worker(db_dsn)
    now = _now_ms()
    items = []
    for i in range(64):
        fix = Fix(ts=now - 100_000 + i, lat=-5.1, lon=119.4, seq=i)
        items.append(Item("fleet/PP-1/telemetry", b"{}", "PP-1", [fix]))
    items[5].fixes = [Fix(ts=now - 5, lat=-5.1, lon=119.4, route="A\x00", seq=1005)]
    items[40].fixes = [Fix(ts=now - 6, lat=-5.1, lon=119.4, seq=2**63)]
    result = worker._write_isolating(items)
    assert result.stored == 62
    assert count(db_dsn, "SELECT count(*) FROM positions") == 62
    assert count(db_dsn, "SELECT count(*) FROM rejected_messages WHERE reason = %s",
                 Reason.DATABASE_REFUSED.value) == 2  # fmt: skip
    assert items[5].refused_seqs == [1005]
    assert items[5].fixes == []


def test_connection_errors_are_not_data_errors(db_dsn):
    """A server going away is retried (nothing acknowledged), never dead-lettered."""
    from ingest.writer import is_data_error  # noqa: PLC0415

    writer = BatchWriter(db_dsn)
    writer.close()
    with pytest.raises(psycopg.Error) as err:
        writer.write([Item("t", b"", "PP-1", [Fix(ts=_now_ms(), lat=0.0, lon=0.0)])])
    assert not is_data_error(err.value)


def test_dead_letters_expire_after_the_retention(db_dsn):
    worker = _worker(db_dsn)
    now = _now_ms()
    item = Item("fleet/PP-1/telemetry", b"x", "PP-1", [Fix(ts=now, lat=-5.1, lon=119.4)])
    item.refuse("test", "old one")
    fresh = Item("fleet/PP-1/telemetry", b"y", "PP-1", [Fix(ts=now, lat=-5.1, lon=119.4)])
    fresh.refuse("test", "new one")
    worker._writer.write([item, fresh])
    with psycopg.connect(db_dsn, autocommit=True) as conn:
        conn.execute(
            "UPDATE rejected_messages SET received_at = now() - interval '31 days'"
            " WHERE detail = 'old one'"
        )
    assert worker._writer.expire_dead_letters(30) == 1
    assert count(db_dsn, "SELECT count(*) FROM rejected_messages") == 1


class Device:
    """A device's one MQTT connection (client id = vehicle id): publishes, reads receipts."""

    def __init__(self, port: int, vid: str, password: str) -> None:
        self.got: list[bytes] = []
        self.granted: list[int] = []
        self.acked: list[int] = []
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=vid, protocol=mqtt.MQTTv5)
        c.username_pw_set(vid, password)
        c.on_message = lambda cl, u, m: self.got.append(m.payload)
        c.on_subscribe = lambda cl, u, mid, rcs, p: self.granted.extend(rc.value for rc in rcs)
        c.on_publish = lambda cl, u, mid, rc, p: self.acked.append(mid)
        c.connect("127.0.0.1", port)
        c.loop_start()
        self.client = c

    def subscribe(self, topic: str) -> int:
        n = len(self.granted)
        self.client.subscribe(topic, qos=1)
        wait_for(lambda: len(self.granted) > n, 10, f"SUBACK for {topic}")
        return self.granted[-1]

    def publish(self, topic: str, payload: bytes) -> None:
        self.client.publish(topic, payload, qos=1)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def test_receipts_name_what_is_stored_and_what_is_refused(broker, ingest_worker):
    vid, other = "PP-RCPT", "PP-OTHER"
    van = Device(broker.port, vid, add_device(broker, vid))
    assert van.subscribe(receipt_topic(vid)) < 0x80
    spy = Device(broker.port, other, add_device(broker, other, "pw-o"))
    assert spy.subscribe(receipt_topic(vid)) == 0x87  # another device's receipts: refused

    now = _now_ms()
    for seq in range(100, 120):
        fix = Fix(ts=now - 60_000 + seq, lat=-5.1, lon=119.4, seq=seq)
        van.publish(telemetry_topic(vid), encode_fix(fix))
    bad = {"ts": now - 1, "lat": 99.0, "lon": 119.4, "seq": 120}
    van.publish(telemetry_topic(vid), json.dumps(bad).encode())

    def settled() -> tuple[set[int], set[int]]:
        stored: set[int] = set()
        refused: set[int] = set()
        for payload in van.got:
            r = decode_receipt(payload)
            for lo, hi in r.seq:
                stored.update(range(lo, hi + 1))
            for lo, hi in r.rejected:
                refused.update(range(lo, hi + 1))
        return stored, refused

    wait_for(lambda: settled() == (set(range(100, 120)), {120}), 20, "receipts for all 21")
    # coalesced: 21 messages, at most a few receipts (one per device per second)
    assert len(van.got) <= 3
    # a resend of a stored fix is receipted again (the device may have lost the receipt)
    van.got.clear()
    again = Fix(ts=now - 60_000 + 100, lat=-5.1, lon=119.4, seq=100)
    van.publish(telemetry_topic(vid), encode_fix(again))
    wait_for(lambda: settled()[0] == {100}, 20, "receipt for the duplicate")
    assert spy.got == []
    assert count(ingest_worker.dsn, "SELECT count(*) FROM positions") == 20
    van.close()
    spy.close()
