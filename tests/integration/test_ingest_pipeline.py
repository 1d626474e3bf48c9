"""End to end: device → Mosquitto (project config) → fleet ingest → PostgreSQL."""

from __future__ import annotations

import json
import random
import time

from fleet.contract import Fix, encode_batch, encode_fix, telemetry_topic
from tests.fixtures.mqtt import Publisher, add_device
from tests.fixtures.postgres import count
from tests.fixtures.waiting import wait_for


def _fixes(n: int, start_ms: int) -> list[Fix]:
    rng = random.Random(7)
    return [
        Fix(
            ts=start_ms + i * 1000,
            lat=-5.15 + rng.uniform(-0.02, 0.02),
            lon=119.43 + rng.uniform(-0.02, 0.02),
            speed=rng.uniform(0, 15),
            heading=rng.uniform(0, 359),
            accuracy=5.0,
            route="B1",
            seq=i,
        )
        for i in range(n)
    ]


def test_10k_fixes_with_repeats_batches_and_disorder_store_exactly_once(broker, ingest_worker):
    vid = "PP-0001"
    pub = Publisher(broker.port, vid, add_device(broker, vid))
    start = int(time.time() * 1000) - 3 * 3600 * 1000
    fixes = _fixes(10_000, start)
    rng = random.Random(11)
    # 1,000 fixes out of time order: reverse-shuffle a block in the middle
    block = fixes[4000:5000]
    rng.shuffle(block)
    fixes[4000:5000] = block
    topic = telemetry_topic(vid)
    for f in fixes[:5000]:
        pub.publish(topic, encode_fix(f))
    for i in range(5000, 10_000, 100):  # batches of 100
        pub.publish(topic, encode_batch(fixes[i : i + 100]))
    for f in rng.sample(fixes, 500):  # 500 exact repeats
        pub.publish(topic, encode_fix(f))
    pub.wait_all_acked()
    pub.close()

    dsn = ingest_worker.dsn
    wait_for(
        lambda: ingest_worker.metric("fleet_ingest_fixes_duplicate_total") >= 500, 60, "repeats"
    )
    assert count(dsn, "SELECT count(*) FROM positions WHERE vehicle_id = %s", vid) == 10_000
    assert (
        count(dsn, "SELECT count(DISTINCT ts) FROM positions WHERE vehicle_id = %s", vid) == 10_000
    )
    assert ingest_worker.metric("fleet_ingest_fixes_stored_total") == 10_000
    assert ingest_worker.metric("fleet_ingest_fixes_duplicate_total") == 500
    # the latest position is the newest fix, whatever the arrival order
    newest = max(fixes, key=lambda f: f.ts)
    with_latest = count(
        dsn,
        "SELECT count(*) FROM latest_positions WHERE vehicle_id = %s"
        " AND ts = timestamptz 'epoch' + %s * interval '1 millisecond' AND lat = %s",
        vid,
        newest.ts,
        newest.lat,
    )
    assert with_latest == 1


def test_owntracks_phone_payloads_store_exactly_once(broker, ingest_worker):
    user = "budi"
    pub = Publisher(broker.port, user, add_device(broker, user))
    start_s = int(time.time()) - 4 * 3600
    payloads = [
        json.dumps(
            {
                "_type": "location",
                "tid": "bd",
                "tst": start_s + i,
                "lat": -5.14 + i * 1e-5,
                "lon": 119.42,
                "vel": 30,
                "cog": 90,
                "acc": 10,
                "batt": 80,
                "conn": "m",
            }
        ).encode()
        for i in range(10_000)
    ]
    rng = random.Random(3)
    block = payloads[2000:3000]
    rng.shuffle(block)
    payloads[2000:3000] = block
    topic = f"owntracks/{user}/phone"
    for p in payloads + rng.sample(payloads, 500):
        pub.publish(topic, p)
    pub.wait_all_acked()
    pub.close()
    wait_for(
        lambda: ingest_worker.metric("fleet_ingest_fixes_duplicate_total") >= 500, 60, "repeats"
    )
    assert (
        count(ingest_worker.dsn, "SELECT count(*) FROM positions WHERE vehicle_id = %s", user)
        == 10_000
    )
    speed = count(
        ingest_worker.dsn,
        "SELECT count(*) FROM positions WHERE vehicle_id = %s AND abs(speed - 30 / 3.6) < 1e-3",
        user,
    )
    assert speed == 10_000
