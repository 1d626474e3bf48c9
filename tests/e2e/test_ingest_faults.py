"""Nothing acknowledged is lost: kill ingest, restart the broker, stop the database.

A publisher (the gateway service user, 20 vans) sends 2,000 fixes/s for 20 s while a
fault is injected.  At the end, every fix the publisher got a PUBACK for must be in
``positions`` exactly once (the primary key makes "more than once" impossible, so the
check is: all acknowledged fixes are present, and rows = distinct fixes sent).
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

import pytest

from fleet.storage.embedded import EmbeddedPostgres, free_port
from fleet.storage.migrate import migrate
from tests.fixtures.ingest import (
    DURATION_S,
    RATE,
    IngestProcess,
    assert_every_acked_fix_stored_once,
    stream,
)
from tests.fixtures.waiting import wait_for

pytestmark = pytest.mark.slow


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
