"""Bad input is counted, dead-lettered and logged; the worker keeps storing good fixes."""

from __future__ import annotations

import json
import time

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from fleet.contract import Fix, cmd_topic, encode_fix, telemetry_topic
from tests.fixtures.mqtt import Publisher, add_device
from tests.fixtures.postgres import count
from tests.fixtures.waiting import wait_for


def test_each_kind_of_garbage_gets_its_own_reason_and_work_goes_on(broker, ingest_worker):
    vid = "PP-0100"
    pub = Publisher(broker.port, vid, add_device(broker, vid))
    topic = telemetry_topic(vid)
    now = int(time.time() * 1000)
    before = Fix(ts=now - 5000, lat=-5.13, lon=119.41)
    after = Fix(ts=now - 1000, lat=-5.14, lon=119.42)
    # Checks run in order size → JSON → shape → batch length → each fix, so a 2,000-fix batch
    # small enough to pass the 64 KiB limit is refused for its length before any fix is read.
    huge_batch = json.dumps(
        {"fixes": [{"ts": i, "lat": 0, "lon": 0} for i in range(2000)]}, separators=(",", ":")
    ).encode()
    assert len(huge_batch) < 64 * 1024
    cases = {
        "not_json": b"\x8b\x00\xff binary garbage",
        "wrong_shape": b'["ts", 1, "lat"]',
        "wrong_type": json.dumps({"ts": "now", "lat": "-5.1", "lon": 119.4}).encode(),
        "non_finite_number": b'{"ts": %d, "lat": NaN, "lon": 119.4}' % now,
        "lat_out_of_range": json.dumps({"ts": now, "lat": 91.0, "lon": 119.4}).encode(),
        "ts_in_future": json.dumps(
            {"ts": now + 365 * 86400_000, "lat": -5.1, "lon": 119.4}
        ).encode(),
        "batch_too_large": huge_batch,
        "payload_too_large": b"{" + b" " * (1024 * 1024) + b"}",
        "vehicle_mismatch": json.dumps(
            {"vehicle_id": "PP-0200", "ts": now, "lat": -5.1, "lon": 119.4}
        ).encode(),
    }
    pub.publish(topic, encode_fix(before))
    for payload in cases.values():
        pub.publish(topic, payload)
    pub.publish(topic, encode_fix(after))
    pub.wait_all_acked()
    pub.close()

    dsn = ingest_worker.dsn
    wait_for(lambda: count(dsn, "SELECT count(*) FROM positions") == 2, 30, "good fixes")
    wait_for(
        lambda: count(dsn, "SELECT count(*) FROM rejected_messages") == len(cases),
        30,
        "dead letters",
    )
    for reason in cases:
        assert ingest_worker.metric("fleet_ingest_rejected_total", f'reason="{reason}"') == 1, (
            reason
        )
        assert count(dsn, "SELECT count(*) FROM rejected_messages WHERE reason = %s", reason) == 1
    # dead letters keep the topic and at most the first KiB of the payload
    assert count(dsn, "SELECT max(length(payload)) FROM rejected_messages") == 1024
    assert count(dsn, "SELECT count(*) FROM rejected_messages WHERE topic <> %s", topic) == 0
    assert ingest_worker.proc.poll() is None
    log = ingest_worker.log_path.read_text()
    assert "reason=payload_too_large" in log


def _connect(
    port: int, user: str, password: str
) -> tuple[mqtt.Client, list[mqtt.MQTTMessage], object]:
    got: list[mqtt.MQTTMessage] = []
    result: dict[str, object] = {"subacks": []}
    c = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=f"acl-{user}-{time.monotonic_ns()}" if user.startswith("svc-") else user,
        protocol=mqtt.MQTTv5,
    )
    c.username_pw_set(user, password)
    c.on_message = lambda cl, u, m: got.append(m)
    c.on_connect = lambda cl, u, f, rc, p: result.setdefault("rc", rc)
    c.on_subscribe = lambda cl, u, mid, rcs, p: result["subacks"].extend(r.value for r in rcs)  # type: ignore[attr-defined]
    c.user_data_set(result)
    c.connect("127.0.0.1", port)
    c.loop_start()
    wait_for(lambda: "rc" in result, 10, f"CONNACK for {user}")
    return c, got, result["rc"]


def test_acl_device_cannot_write_or_read_as_another_device(broker, ingest_worker):
    a, b = "PP-A", "PP-B"
    pw_a, pw_b = add_device(broker, a, "pw-a"), add_device(broker, b, "pw-b")
    now = int(time.time() * 1000)

    ca, got_a, rc = _connect(broker.port, a, pw_a)
    assert not rc.is_failure
    info = ca.publish(telemetry_topic(b), encode_fix(Fix(ts=now, lat=-5.1, lon=119.4)), qos=1)
    info.wait_for_publish(10)
    ca.publish(
        telemetry_topic(a), encode_fix(Fix(ts=now, lat=-5.1, lon=119.4)), qos=1
    ).wait_for_publish(10)
    wait_for(
        lambda: count(ingest_worker.dsn, "SELECT count(*) FROM positions") >= 1, 20, "A's own fix"
    )
    # B's fix went first on the same connection: had ingest taken it, it would be stored by now
    assert count(ingest_worker.dsn, "SELECT count(*) FROM positions WHERE vehicle_id = %s", b) == 0
    assert count(ingest_worker.dsn, "SELECT count(*) FROM positions WHERE vehicle_id = %s", a) == 1

    # A subscribes to B's commands: refused at SUBSCRIBE time (0x87), and nothing delivered
    cb, got_b, _ = _connect(broker.port, b, pw_b)
    ca.subscribe(cmd_topic(b), qos=1)
    cb.subscribe(cmd_topic(b), qos=1)
    subacks_a = ca.user_data_get()["subacks"]
    subacks_b = cb.user_data_get()["subacks"]
    wait_for(lambda: subacks_a and subacks_b, 10, "both SUBACKs")
    assert subacks_a == [0x87] and subacks_b[0] < 0x80
    ca.subscribe(cmd_topic(a), qos=1)  # its own: a sentinel that ends the wait below
    wait_for(lambda: len(subacks_a) == 2, 10, "A's SUBACK for its own commands")
    assert subacks_a[1] < 0x80
    api, _, _ = _connect(broker.port, "svc-api", broker.creds["svc-api"])
    for van, cmd in ((b, b'{"cmd": "set_interval", "interval_s": 5}'), (a, b'{"cmd": "ping"}')):
        api.publish(cmd_topic(van), cmd, qos=1).wait_for_publish(10)
    wait_for(lambda: len(got_b) == 1 and got_a, 10, "B's command, then A's own")
    # The broker handles one publisher's messages in order: B's command, had A been
    # given it, would have reached A before A's own.
    assert [m.topic for m in got_a] == [cmd_topic(a)]
    for c in (ca, cb, api):
        c.disconnect()
        c.loop_stop()


@pytest.mark.parametrize("password", ["wrong", ""])
def test_wrong_password_cannot_connect(broker, password):
    add_device(broker, "PP-C", "right-password")
    c, _, rc = _connect(broker.port, "PP-C", password)
    assert rc.is_failure
    assert not c.is_connected()
    c.loop_stop()
