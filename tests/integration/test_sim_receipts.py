"""Storage receipts on the load side: the simulator's gateway mode and the load generator.

A fix counts as confirmed only when ingest's receipt on ``fleet/<id>/ack`` covers it;
without receipts (no ingest) nothing is confirmed and every message is sent again after
the resend timeout.  Real Mosquitto, real ``fleet ingest``, real PostgreSQL.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from broker.runner import MosquittoBroker
from devtools.loadgen import LoadGenerator
from fleet.routes import load_routes
from tests.fixtures.ingest import IngestProcess
from tests.fixtures.postgres import count
from tests.fixtures.sim import Recorder
from tests.fixtures.waiting import wait_for
from tracker_sim.links import Credentials
from tracker_sim.runner import SimOptions, SimStats, run_simulation

ROUTES = list(load_routes())


@pytest.fixture
def recorder(broker: MosquittoBroker) -> Iterator[Recorder]:
    rec = Recorder(broker)
    yield rec
    rec.close()


def _gateway(broker: MosquittoBroker, **kw: object) -> SimOptions:
    base: dict[str, object] = {
        "host": "127.0.0.1",
        "port": broker.port,
        "mode": "gateway",
        "vehicles_per_route": dict.fromkeys(ROUTES, 3),
        "start_ms": int(time.time() * 1000) - 3_600_000,
        "speedup": 0,
        "duration_s": 300,
        "gateway": Credentials("svc-gateway", broker.layout.service_credentials()["svc-gateway"]),
        "receipts": True,
    }
    return SimOptions(**{**base, **kw})  # type: ignore[arg-type]


def _stored_per_van(dsn: str, prefix: str) -> dict[str, tuple[int, int, int]]:
    """vehicle → (rows, min seq, max seq)."""
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT vehicle_id, count(*), min(seq), max(seq) FROM positions "
            "WHERE vehicle_id LIKE %s GROUP BY vehicle_id",
            (prefix + "%",),
        ).fetchall()
    return {v: (n, lo, hi) for v, n, lo, hi in rows}


def _assert_all_stored(dsn: str, stats: SimStats) -> None:
    per_van = _stored_per_van(dsn, "pp-")
    assert len(per_van) == stats.vehicles
    # seq numbers each van's fixes consecutively: no gap means no fix missing
    assert all(n == hi - lo + 1 for n, lo, hi in per_van.values()), per_van
    assert sum(n for n, _, _ in per_van.values()) == stats.fixes_generated


def test_gateway_with_ingest_every_generated_fix_is_stored_and_confirmed(
    broker: MosquittoBroker, ingest_worker: IngestProcess, db_dsn: str
) -> None:
    stats = run_simulation(_gateway(broker), threading.Event())
    assert stats.fixes_generated >= 24 * 300 // 5 * 0.9
    assert stats.fixes_confirmed == stats.fixes_generated
    assert stats.fixes_unconfirmed == 0
    assert stats.fixes_resent == 0  # every receipt came well within the timeout
    _assert_all_stored(db_dsn, stats)


def test_gateway_without_receipts_confirms_nothing_and_resends_after_the_timeout(
    broker: MosquittoBroker, recorder: Recorder
) -> None:
    opts = _gateway(
        broker,
        vehicles_per_route=dict.fromkeys(ROUTES, 1),
        start_ms=int(time.time() * 1000),
        speedup=1.0,
        duration_s=3,
        report_interval_s=1.0,
        dropout=False,
        resend_after_s=0.5,
        receipt_wait_s=1.5,
    )
    t0 = time.monotonic()
    stats = run_simulation(opts, threading.Event())
    assert time.monotonic() - t0 < 15
    assert stats.fixes_generated >= 8 * 2
    assert stats.fixes_confirmed == 0
    assert stats.fixes_unconfirmed == stats.fixes_generated
    assert stats.fixes_resent >= stats.fixes_generated  # each at least once more
    assert stats.fixes_acked >= stats.fixes_generated  # PUBACKs came, and counted for nothing
    wait_for(
        lambda: recorder.unique_fixes() == stats.fixes_generated, 10, "every fix at the broker"
    )
    with recorder.lock:
        arrivals = dict(recorder.arrivals)
    resent = [times for times in arrivals.values() if len(times) >= 2]
    assert len(resent) == len(arrivals)
    # a resend waits for the timeout (0.5 s, timer granularity aside)
    assert min(times[1] - times[0] for times in resent) >= 0.4


def test_gateway_with_receipts_survives_a_broker_kill9(
    broker: MosquittoBroker, ingest_worker: IngestProcess, db_dsn: str
) -> None:
    opts = _gateway(broker, speedup=60, duration_s=360, resend_after_s=2.0, receipt_wait_s=60)
    result: list[SimStats] = []
    runner = threading.Thread(target=lambda: result.append(run_simulation(opts)), daemon=True)
    runner.start()
    wait_for(lambda: count(db_dsn, "SELECT count(*) FROM positions") > 300, 30, "first fixes")
    broker.kill()  # SIGKILL: whatever it had not saved (and PUBACKed) is gone
    broker.start()
    runner.join(120)
    assert not runner.is_alive()
    (stats,) = result
    assert stats.fixes_confirmed == stats.fixes_generated >= 24 * 360 // 5 * 0.9
    assert stats.fixes_unconfirmed == 0
    _assert_all_stored(db_dsn, stats)


def _generator(broker: MosquittoBroker, prefix: str, **kw: object) -> LoadGenerator:
    return LoadGenerator(
        "127.0.0.1",
        broker.port,
        "svc-gateway",
        broker.layout.service_credentials()["svc-gateway"],
        devices=200,
        rate=1000,
        vehicle_prefix=prefix,
        **kw,  # type: ignore[arg-type]
    )


def _missing(dsn: str, gen: LoadGenerator) -> int:
    """Generated fixes (every (vehicle, ts) of the schedule) with no row in positions."""
    with psycopg.connect(dsn) as conn:
        stored = set(
            conn.execute(
                "SELECT vehicle_id, (extract(epoch FROM ts) * 1000)::bigint FROM positions "
                "WHERE vehicle_id LIKE %s",
                (gen.device_ids[0][:-5] + "%",),
            ).fetchall()
        )
    counts = gen.generated_counts()
    return sum(
        (vid, gen.schedule.ts(d, seq)) not in stored
        for d, vid in enumerate(gen.device_ids)
        for seq in range(counts[vid])
    )


@pytest.mark.parametrize("per_message", [1, 5])
def test_load_generator_fixes_are_all_stored_and_confirmed_across_a_broker_kill9(
    broker: MosquittoBroker,
    ingest_worker: IngestProcess,
    db_dsn: str,
    tmp_path: Path,
    per_message: int,
) -> None:
    gen = _generator(broker, f"LG{per_message}-", per_message=per_message, resend_after_s=2.0)
    gen.start()
    try:
        wait_for(lambda: gen.confirmed >= 1000, 20, "the first receipts")
        broker.kill()
        at_kill = gen.generated
        wait_for(lambda: gen.generated >= at_kill + 500, 10, "fixes generated while down")
        broker.start()
        wait_for(lambda: gen.reconnects >= 1, 20, "the generator's reconnect")
        wait_for(lambda: gen.generated >= at_kill + 3000, 20, "load after the restart")
        gen.stop_generating()
        assert gen.wait_confirmed(90), gen.result()
        result = gen.result()
    finally:
        gen.close()
    assert result.confirmed == result.generated == sum(gen.generated_counts().values())
    assert result.open == 0
    assert result.generated % per_message == 0
    assert _missing(db_dsn, gen) == 0
    stored = count(db_dsn, "SELECT count(*) FROM positions WHERE vehicle_id LIKE %s", "LG%")
    assert stored == result.generated


def test_load_generator_without_ingest_confirms_nothing_and_resends(
    broker: MosquittoBroker,
) -> None:
    gen = _generator(broker, "LN-", resend_after_s=0.5)
    gen.start()
    try:
        wait_for(lambda: gen.generated >= 500, 10, "fixes generated")
        gen.stop_generating()
        wait_for(lambda: gen.resent >= gen.generated, 10, "every fix resent")
        assert not gen.wait_confirmed(0.5)
        assert gen.confirmed == 0
        assert gen.open == gen.generated
    finally:
        gen.close()


def test_load_generator_with_receipts_off_counts_pubacks(broker: MosquittoBroker) -> None:
    gen = _generator(broker, "LO-", receipts=False)
    gen.start()
    try:
        wait_for(lambda: gen.generated >= 500, 10, "fixes generated")
        gen.stop_generating()
        assert gen.wait_confirmed(10)
        assert gen.confirmed == gen.generated and gen.resent == 0
    finally:
        gen.close()


def test_gateway_waits_at_the_unconfirmed_bound(
    broker: MosquittoBroker, caplog: pytest.LogCaptureFixture
) -> None:
    opts = _gateway(broker, duration_s=3600, dropout=False, max_unconfirmed=50, receipt_wait_s=1.0)
    stop = threading.Event()
    result: list[SimStats] = []
    runner = threading.Thread(target=lambda: result.append(run_simulation(opts, stop)))
    with caplog.at_level("WARNING", logger="tracker_sim"):
        runner.start()
        try:
            wait_for(lambda: "(the bound)" in caplog.text, 20, "the bound warning")
        finally:
            stop.set()
            runner.join(30)
    (stats,) = result
    assert 50 <= stats.fixes_generated <= 50 + 24  # one message per van may still go
    assert stats.fixes_confirmed == 0


def test_load_generator_pauses_at_the_open_bound(broker: MosquittoBroker) -> None:
    gen = _generator(broker, "LB-", max_open_fixes=300)
    gen.start()
    try:
        wait_for(lambda: gen.generated >= 300, 10, "the bound")
        before = gen.generated
        wait_for(lambda: gen.paused_s > 0 or gen.result().seconds > 1.0, 5, "a paused second")
        assert gen.generated == before == 300
        assert gen.open == 300
    finally:
        gen.close()
