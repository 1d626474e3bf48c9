"""`fleet sim` against the real Mosquitto: fixes arrive, last wills fire, errors are clear."""

from __future__ import annotations

import csv
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from broker.runner import MosquittoBroker
from fleet.routes import load_routes
from fleet.storage.embedded import free_port
from tests.fixtures.sim import Recorder, SimProcess
from tests.fixtures.waiting import wait_for
from tracker_sim.device_credentials import provision_devices
from tracker_sim.links import Credentials
from tracker_sim.parameters import SimConfig
from tracker_sim.runner import SimOptions, run_simulation
from tracker_sim.truth import TRUTH_CSV_HEADER

ROUTES = list(load_routes())


@pytest.fixture
def recorder(broker: MosquittoBroker) -> Recorder:
    rec = Recorder(broker)
    yield rec
    rec.close()


def test_device_mode_fixes_arrive_and_last_will_fires_on_kill(
    broker: MosquittoBroker, recorder: Recorder, tmp_path: Path
) -> None:
    data_dir = broker.layout.root.parent
    truth = tmp_path / "truth.csv"
    sim = SimProcess(
        [
            "--per-route",
            "1",
            "--data-dir",
            str(data_dir),
            "--port",
            str(broker.port),
            "--interval",
            "1",
            "--speedup",
            "5",
            "--no-dropout",
            "--warmup",
            "0",
            "--truth",
            str(truth),
        ],
        tmp_path / "sim.log",
    )
    vans = {f"pp-{code}-001" for code in ROUTES}
    try:
        wait_for(
            lambda: recorder.vehicles_with_fixes() >= vans or not sim.alive(),
            60,
            "fixes from every van",
        )
        assert sim.alive(), sim.log()
        assert recorder.vehicles_with_fixes() == vans
        assert all(recorder.status[v][0][0] == "online" for v in vans)
        wait_for(lambda: min(len(recorder.fixes[v]) for v in vans) >= 5, 30, "5 fixes per van")
        assert not recorder.rejected
        for v in vans:
            fixes = recorder.fixes[v]
            assert {f.route for f in fixes} == {v.split("-")[1]}
            assert all(f.accuracy and f.speed is not None and f.heading is not None for f in fixes)
        creds = data_dir / "sim" / "device-credentials.csv"
        assert creds.stat().st_mode & 0o777 == 0o600
        sim.kill9()  # a power cut for all vans: no DISCONNECT, the broker sends the wills
        wait_for(
            lambda: all(recorder.last_status(v) == "offline" for v in vans),
            30,
            "last will 'offline' of every van",
        )
    finally:
        sim.stop()
    # the will is retained: a newcomer sees every van offline
    late = Recorder(broker)
    try:
        wait_for(lambda: all(late.last_status(v) == "offline" for v in vans), 10, "retained")
        assert all(late.status[v][-1][1] for v in vans)  # delivered as retained
    finally:
        late.close()
    rows = list(csv.reader(truth.open()))
    assert tuple(rows[0]) == TRUTH_CSV_HEADER


def test_device_mode_switch_off_backlog_and_come_back(
    broker: MosquittoBroker, recorder: Recorder, tmp_path: Path
) -> None:
    data_dir = broker.layout.root.parent
    per_route = {"B": 3, "E": 3}
    ids = [f"pp-{c}-{k:03d}" for c, n in per_route.items() for k in range(1, n + 1)]
    passwords = provision_devices(data_dir, ids, tmp_path / "creds.csv")
    cfg = SimConfig(
        offline_per_h=30.0,
        offline_min_s=20,
        offline_max_s=40,
        coverage_loss_per_h=60.0,
        coverage_loss_min_s=20,
        coverage_loss_max_s=60,
    )
    opts = SimOptions(
        host="127.0.0.1",
        port=broker.port,
        mode="device",
        vehicles_per_route=per_route,
        start_ms=int(time.time() * 1000) - 3_600_000,
        report_interval_s=2.0,
        speedup=0,
        duration_s=600,
        device_passwords=passwords,
        model_config=cfg,
    )
    stats = run_simulation(opts, threading.Event())
    assert stats.status_changes >= 6
    # a van switched off with a fix in flight never sees its PUBACK (the fix may still
    # have reached the broker); everything else is acknowledged
    assert stats.fixes_acked > 1000
    assert stats.fixes - stats.status_changes <= stats.fixes_acked <= stats.fixes
    # every acknowledged fix arrives (QoS 1 may repeat one; (vehicle, ts) identifies it)
    wait_for(lambda: recorder.unique_fixes() >= stats.fixes_acked, 20, "fixes at the subscriber")
    assert stats.fixes_acked <= recorder.unique_fixes() <= stats.fixes
    assert sum(recorder.batches.values()) >= 3  # backlogs uploaded as {"fixes": [...]}
    # the graceful end: every van says offline (QoS 1 deliveries may trail the fixes)
    wait_for(lambda: all(recorder.last_status(v) == "offline" for v in ids), 10, "goodbyes")
    switched = [v for v in ids if [s for s, _ in recorder.status[v]].count("offline") >= 2]
    assert switched, dict(recorder.status)  # a will while driving, and the final goodbye
    for v in switched:
        seen = [s for s, _ in recorder.status[v]]
        first_off = seen.index("offline")
        assert "online" in seen[first_off:]  # it came back


def test_gateway_mode_publishes_for_all_vans(broker: MosquittoBroker, recorder: Recorder) -> None:
    opts = SimOptions(
        host="127.0.0.1",
        port=broker.port,
        mode="gateway",
        vehicles_per_route=dict.fromkeys(ROUTES, 10),
        start_ms=int(time.time() * 1000) - 3_600_000,
        speedup=0,
        duration_s=300,
        gateway=Credentials("svc-gateway", broker.creds["svc-gateway"]),
        connections=2,
    )
    stats = run_simulation(opts, threading.Event())
    assert stats.vehicles == 80
    assert stats.fixes_acked == stats.fixes >= 80 * 300 // 5 * 0.9
    wait_for(lambda: recorder.unique_fixes() >= stats.fixes, 30, "all gateway fixes")
    assert recorder.unique_fixes() == stats.fixes
    assert len(recorder.vehicles_with_fixes()) == 80
    assert not recorder.rejected
    assert all(recorder.status[v][0][0] == "online" for v in recorder.vehicles_with_fixes())


def test_real_time_fixes_are_fresh_and_never_from_the_future(
    broker: MosquittoBroker, recorder: Recorder
) -> None:
    opts = SimOptions(
        host="127.0.0.1",
        port=broker.port,
        mode="gateway",
        vehicles_per_route=dict.fromkeys(ROUTES, 5),
        start_ms=int(time.time() * 1000),
        speedup=1.0,
        duration_s=6,
        report_interval_s=1.0,
        dropout=False,
        gateway=Credentials("svc-gateway", broker.creds["svc-gateway"]),
    )
    t0 = time.monotonic()
    stats = run_simulation(opts, threading.Event())
    assert 5.5 < time.monotonic() - t0 < 10  # paced by the wall clock
    wait_for(lambda: recorder.unique_fixes() >= stats.fixes_acked, 10, "fixes")
    lag = sorted(recorder.lag_ms)
    assert len(lag) >= 40 * 5
    assert lag[0] >= -5  # never stamped ahead of the clock (5 ms for clock reading order)
    assert lag[len(lag) * 95 // 100] < 600  # published within a quarter second or so


def _sim_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fleet.cli", "sim", *args],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_wrong_gateway_password_is_one_clear_line(broker: MosquittoBroker) -> None:
    r = _sim_cli(
        "--mode",
        "gateway",
        "--password",
        "wrong",
        "--port",
        str(broker.port),
        "--duration",
        "10",
        "--warmup",
        "0",
    )
    assert r.returncode == 2
    assert "refused svc-gateway" in r.stderr
    assert "Traceback" not in r.stderr


def test_unreachable_broker_is_one_clear_line(tmp_path: Path) -> None:
    r = _sim_cli(
        "--mode",
        "gateway",
        "--password",
        "x",
        "--port",
        str(free_port()),
        "--duration",
        "10",
        "--warmup",
        "0",
    )
    assert r.returncode == 2
    assert "cannot reach the MQTT broker" in r.stderr and "Traceback" not in r.stderr


def test_bad_routes_file_and_options_are_clear(tmp_path: Path) -> None:
    bad = tmp_path / "routes.geojson"
    bad.write_text('{"type": "FeatureCollection", "features": [{"type": "Feature"}]}')
    r = _sim_cli("--routes-file", str(bad), "--mode", "gateway", "--password", "x")
    assert r.returncode == 2 and f"{bad}: feature 0" in r.stderr
    r = _sim_cli("--routes", "A,ZZ", "--mode", "gateway", "--password", "x")
    assert r.returncode == 2 and "unknown route code(s) ZZ" in r.stderr
    r = _sim_cli("--start", "2999-01-01T00:00:00", "--mode", "gateway", "--password", "x")
    assert r.returncode == 2 and "in the future" in r.stderr


def test_device_mode_credentials_problems_are_clear(
    broker: MosquittoBroker, tmp_path: Path
) -> None:
    creds = tmp_path / "creds.csv"
    creds.write_text("vehicle_id,password\n" + "".join(f"pp-{c}-001,wrong\n" for c in ROUTES))
    common = ["--per-route", "1", "--port", str(broker.port), "--duration", "1m", "--warmup", "0"]
    r = _sim_cli(*common, "--credentials", str(creds), "--data-dir", str(tmp_path / "none"))
    assert r.returncode == 2
    assert "the broker refused 8 connection(s)" in r.stderr and "Traceback" not in r.stderr
    r = _sim_cli(*common, "--data-dir", str(tmp_path / "none"))
    assert r.returncode == 2 and "device mode needs credentials" in r.stderr


def test_gateway_mode_rides_out_a_broker_restart(
    broker: MosquittoBroker, recorder: Recorder, caplog: pytest.LogCaptureFixture
) -> None:
    opts = SimOptions(
        host="127.0.0.1",
        port=broker.port,
        mode="gateway",
        vehicles_per_route=dict.fromkeys(ROUTES, 10),
        start_ms=int(time.time() * 1000) - 3_600_000,
        speedup=60,
        duration_s=360,
        gateway=Credentials("svc-gateway", broker.creds["svc-gateway"]),
    )
    result: list[object] = []
    runner = threading.Thread(target=lambda: result.append(run_simulation(opts)), daemon=True)
    with caplog.at_level("WARNING", logger="tracker_sim"):
        runner.start()
        wait_for(lambda: recorder.unique_fixes() > 500, 30, "the first fixes")
        broker.stop()
        time.sleep(2.5)  # the outage
        broker.start()
        runner.join(60)
    assert not runner.is_alive()
    (stats,) = result
    assert stats.sim_seconds == 360
    # everything published was acknowledged in the end: resent after the reconnect
    assert stats.fixes_acked == stats.fixes >= 80 * 360 // 5 * 0.9
    messages = " ".join(r.getMessage() for r in caplog.records)
    assert "lost; reconnecting" in messages and "restored" in messages
