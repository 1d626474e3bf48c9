"""Nothing acknowledged is lost: kill ingest, restart the broker, stop the database.

A publisher (the gateway service user, 20 vans) sends 2,000 fixes/s for 20 s while a
fault is injected.  At the end, every fix the publisher got a PUBACK for must be in
``positions`` exactly once (the primary key makes "more than once" impossible, so the
check is: all acknowledged fixes are present, and rows = distinct fixes sent).
"""

from __future__ import annotations

import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest

from broker.runner import MosquittoBroker
from fleet.contract import Fix, encode_fix, telemetry_topic
from fleet.storage.embedded import EmbeddedPostgres, free_port
from fleet.storage.migrate import migrate
from tests.conftest import IngestProcess
from tests.mqtt_support import Publisher, wait_for

RATE = 2000
DURATION_S = 20.0
VANS = 20

pytestmark = pytest.mark.slow


def stream(broker: MosquittoBroker, faults: list[tuple[float, Callable[[], None]]]) -> Publisher:
    """Publish RATE fixes/s for DURATION_S, running each fault at its offset (seconds)."""
    pub = Publisher(broker.port, "svc-gateway", broker.creds["svc-gateway"], client_id="gw-fault")
    start_ms = int(time.time() * 1000) - 60_000
    t0 = time.monotonic()
    pending = sorted(faults, key=lambda f: f[0])
    threads = []
    i = 0
    total = int(RATE * DURATION_S)
    while i < total:
        elapsed = time.monotonic() - t0
        while pending and elapsed >= pending[0][0]:
            _, fn = pending.pop(0)
            th = threading.Thread(target=fn)
            th.start()
            threads.append(th)
        due = min(total, int(elapsed * RATE) + 1)
        while i < due:
            van = i % VANS
            fix = Fix(ts=start_ms + i, lat=-5.13 - van * 1e-3, lon=119.42, seq=i, route="B1")
            pub.publish(
                telemetry_topic(f"PP-{van:03d}"), encode_fix(fix), tag=(f"PP-{van:03d}", fix.ts)
            )
            i += 1
        time.sleep(0.005)
    for th in threads:
        th.join()
    return pub


def assert_every_acked_fix_stored_once(pub: Publisher, dsn: str, timeout: float = 90) -> int:
    acked = set(pub.acked_tags())
    assert len(acked) > 0.5 * RATE * DURATION_S, f"only {len(acked)} PUBACKs"

    def stored() -> set[tuple[str, int]]:
        with psycopg.connect(dsn) as conn:
            rows = conn.execute(
                "SELECT vehicle_id, (extract(epoch FROM ts) * 1000)::bigint FROM positions"
            ).fetchall()
        return {(r[0], int(r[1])) for r in rows}

    wait_for(lambda: acked <= stored(), timeout, "every acknowledged fix to be stored", 0.5)
    with psycopg.connect(dsn) as conn:
        rows, distinct = conn.execute(
            "SELECT count(*), count(DISTINCT (vehicle_id, ts)) FROM positions"
        ).fetchone()
    assert rows == distinct
    return len(acked)


def test_kill_ingest_twice_mid_stream(broker, ingest_worker):
    def crash_and_restart() -> None:
        ingest_worker.kill()
        time.sleep(1.0)
        ingest_worker.start()

    pub = stream(broker, [(5.0, crash_and_restart), (12.0, crash_and_restart)])
    pub.wait_all_acked()
    n = assert_every_acked_fix_stored_once(pub, ingest_worker.dsn)
    assert n == RATE * DURATION_S
    # both restarts resumed the persistent session the killed process left behind
    assert ingest_worker.log_path.read_text().count("session_present=True") == 2
    pub.close()


def test_broker_restart_mid_stream(broker, ingest_worker):
    def restart_broker() -> None:
        broker.stop()  # SIGTERM: mosquitto saves its persistence file
        time.sleep(1.0)
        broker.start()

    pub = stream(broker, [(8.0, restart_broker)])
    wait_for(pub.connected.is_set, 30, "publisher reconnect")
    pub.wait_all_acked(90)
    assert_every_acked_fix_stored_once(pub, ingest_worker.dsn)
    log = ingest_worker.log_path.read_text()
    assert "disconnected from broker" in log and "session_present=True" in log
    pub.close()


def test_database_down_for_10s_mid_stream(broker, tmp_path: Path):
    pg = EmbeddedPostgres(Path(tempfile.mkdtemp(prefix="fleet-test-outage-")), port=free_port())
    pg.start()
    migrate(pg.dsn)
    worker = IngestProcess(broker, pg.dsn, tmp_path)
    worker.start()
    try:

        def db_outage() -> None:
            pg.stop(mode="immediate")
            time.sleep(10.0)
            pg.start()

        pub = stream(broker, [(5.0, db_outage)])
        pub.wait_all_acked()
        assert_every_acked_fix_stored_once(pub, pg.dsn)
        assert worker.proc is not None and worker.proc.poll() is None  # recovered by itself
        assert worker.metric("fleet_ingest_db_errors_total") >= 1
        pub.close()
    finally:
        worker.stop()
        pg.stop(mode="immediate")
        shutil.rmtree(pg.data_dir, ignore_errors=True)
