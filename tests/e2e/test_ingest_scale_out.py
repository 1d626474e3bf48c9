"""Two ingest workers share one MQTT 5 shared subscription: load is split, nothing lost."""

from __future__ import annotations

import time

import pytest

from tests.fixtures.ingest import IngestProcess, assert_every_acked_fix_stored_once, stream

pytestmark = pytest.mark.slow


def test_two_workers_split_the_load_and_survive_a_crash(broker, ingest_worker, tmp_path):
    second = IngestProcess(
        broker, ingest_worker.dsn, tmp_path / "b", FLEET_MQTT_CLIENT_ID="ingest-b"
    )
    (tmp_path / "b").mkdir()
    second.start()
    try:

        def crash_and_restart_second() -> None:
            second.kill()
            time.sleep(1.0)
            second.start()

        pub = stream(broker, [(6.0, crash_and_restart_second)])
        pub.wait_all_acked()
        assert_every_acked_fix_stored_once(pub, ingest_worker.dsn)
        a = ingest_worker.metric("fleet_ingest_fixes_stored_total")
        b = second.metric("fleet_ingest_fixes_stored_total")  # since its restart
        assert a > 0 and b > 0, (a, b)
    finally:
        second.stop()
