"""``fleet demo`` supervision: clean stop in reverse order, persistence, a dying service.

Each test runs the real ``fleet demo`` (without the simulator, so the test controls what
is published) with its own data dir and free ports.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest

import devtools.demo as demo_module
from api.web_assets import WebAssetsError
from broker.runner import BrokerLayout
from devtools.demo import DemoError, DemoStack, masked_dsn
from devtools.processes import pid_alive
from fleet.storage.embedded import EmbeddedPostgres, free_port
from tests.fixtures.demo import DemoProcess, broker_running, demo_data_dir
from tests.fixtures.mqtt import Publisher
from tests.fixtures.waiting import wait_for

VAN = "pp-demo-test"
VAN_PASSWORD = "demo-test-secret"


@pytest.fixture
def data_dir() -> Iterator[Path]:
    with demo_data_dir() as d:
        yield d


def _publish_fix(demo: DemoProcess, ts_ms: int) -> None:
    with BrokerLayout(demo.data_dir).accounts() as accounts:
        accounts.put({VAN: VAN_PASSWORD})
    deadline = time.monotonic() + 10
    while True:  # the broker re-reads its password file on SIGHUP asynchronously
        try:
            pub = Publisher(demo.mqtt_port, VAN, VAN_PASSWORD)
            break
        except TimeoutError:
            if time.monotonic() > deadline:
                raise
    fix = {"ts": ts_ms, "lat": -5.1477, "lon": 119.4327, "speed": 3.0, "heading": 45.0}
    pub.publish(f"fleet/{VAN}/telemetry", json.dumps({**fix, "route": "A"}).encode())
    pub.wait_all_acked(10)
    pub.close()


def _van(demo: DemoProcess) -> dict[str, object] | None:
    with demo.api() as api:
        for v in api.get("/api/v1/vehicles").json():
            if v["id"] == VAN:
                return v  # type: ignore[no-any-return]
    return None


def _stop_lines(stderr: str) -> list[str]:
    order = []
    for line in stderr.splitlines():
        m = re.search(r"devtools\.demo: (.+?) stopped", line)
        if m:
            order.append(m.group(1))
    return order


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_demo_serves_the_map_stops_in_reverse_order_and_keeps_data(data_dir: Path) -> None:
    demo = DemoProcess(data_dir, sim=False)
    demo.start()
    assert demo.map_url == f"{demo.base_url}/#token={demo.token}"
    assert demo.dsn.startswith("postgresql://")
    assert any(f"mqtt://127.0.0.1:{demo.mqtt_port}" in line for line in demo.stdout_lines)

    # the page and its map library are served locally; the API wants the token
    page = httpx.get(demo.base_url + "/", timeout=10)
    assert page.status_code == 200 and "vendor/leaflet.js" in page.text
    assert httpx.get(demo.base_url + "/vendor/leaflet.js", timeout=10).status_code == 200
    assert httpx.get(demo.base_url + "/app.js", timeout=10).status_code == 200
    assert httpx.get(demo.base_url + "/api/v1/vehicles", timeout=10).status_code == 401
    with demo.api() as api:
        assert api.get("/api/v1/config").json()["tile_url"] is None

    ts = int(time.time() * 1000)
    _publish_fix(demo, ts)
    wait_for(lambda: _van(demo) is not None, 20, "the van in /api/v1/vehicles")

    # SIGTERM (= Ctrl-C): exit 0, services stopped in reverse start order, nothing left
    assert demo.terminate() == 0
    assert _stop_lines(demo.stderr()) == [
        "api",
        "ingest",
        "mosquitto",
        "embedded PostgreSQL",
    ]
    assert not broker_running(data_dir)
    assert not EmbeddedPostgres(data_dir / "postgres").is_running()
    with pytest.raises(httpx.TransportError):
        httpx.get(demo.base_url + "/healthz", timeout=2)

    # a second run on the same data dir: same token, the stored van is still there
    again = DemoProcess(data_dir, sim=False)
    again.start()
    try:
        assert again.token == demo.token
        van = _van(again)
        assert van is not None and van["ts"] == ts
    finally:
        assert again.terminate() == 0


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_a_service_that_dies_stops_the_whole_demo(data_dir: Path) -> None:
    demo = DemoProcess(data_dir, sim=False)
    demo.start()
    ingest_pid = demo.child_pid("ingest")
    os.kill(ingest_pid, signal.SIGKILL)
    assert demo.proc is not None
    assert demo.proc.wait(60) == 1  # not restarted silently: the demo fails
    err = demo.stderr()
    assert "ingest was killed by signal 9" in err
    assert "logs/ingest.log" in err  # it points at the service's log
    assert _stop_lines(err) == ["api", "ingest", "mosquitto", "embedded PostgreSQL"]
    assert not broker_running(data_dir)
    assert not EmbeddedPostgres(data_dir / "postgres").is_running()


@pytest.mark.slow
@pytest.mark.timeout(150)
def test_a_new_run_takes_over_after_the_demo_was_killed(data_dir: Path) -> None:
    demo = DemoProcess(data_dir, sim=False)
    demo.start()
    services = [demo.child_pid("ingest"), demo.child_pid("api")]
    assert demo.proc is not None
    demo.proc.kill()  # SIGKILL: no chance to stop anything in order
    demo.proc.wait()
    # the Python services die with it (parent-death signal) ...
    wait_for(lambda: not any(pid_alive(p) for p in services), 30, "services to exit")
    # ... while the broker and the database are still there
    assert broker_running(data_dir), demo.stderr()
    assert EmbeddedPostgres(data_dir / "postgres").is_running(), demo.stderr()

    again = DemoProcess(data_dir, sim=False)
    # the same ports as before
    again.port, again.mqtt_port, again.mqtt_tls_port = demo.port, demo.mqtt_port, demo.mqtt_tls_port
    again.start()
    try:
        log = again.stderr()
        assert "stopping the Mosquitto left running by an earlier demo" in log, log
        assert again.token == demo.token
        with again.api() as api:
            assert api.get("/readyz").status_code == 200
    finally:
        assert again.terminate() == 0, again.stderr()
    assert not broker_running(data_dir)
    assert not EmbeddedPostgres(data_dir / "postgres").is_running()


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_with_fleet_dsn_the_demo_uses_that_database(data_dir: Path, db_dsn: str) -> None:
    demo = DemoProcess(data_dir, sim=False, env={"FLEET_DSN": db_dsn})
    demo.start()
    try:
        assert demo.dsn == db_dsn
        assert not (data_dir / "postgres").exists()  # no embedded server
        _publish_fix(demo, int(time.time() * 1000))
        wait_for(lambda: _van(demo) is not None, 20, "the van in /api/v1/vehicles")
    finally:
        assert demo.terminate() == 0
    assert "embedded PostgreSQL" not in _stop_lines(demo.stderr())
    with psycopg.connect(db_dsn) as conn:  # the external database is untouched and has it
        row = conn.execute("SELECT count(*) FROM positions WHERE vehicle_id = %s", (VAN,))
        assert row.fetchone() == (1,)


@pytest.mark.timeout(60)
def test_a_busy_port_is_a_clear_error_before_anything_starts(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        env = {k: v for k, v in os.environ.items() if not k.startswith("FLEET_")}
        res = subprocess.run(
            [sys.executable, "-m", "fleet.cli", "demo", "--data-dir", str(tmp_path / "d")]
            + ["--port", str(port), "--mqtt-port", str(free_port()), "--no-sim"],
            capture_output=True,
            text=True,
            timeout=50,
            check=False,
            env=env,
        )
    assert res.returncode == 1
    assert f"port {port} for the API (--port) is already in use" in res.stderr
    assert not (tmp_path / "d" / "postgres").exists()  # failed before starting anything


@pytest.mark.parametrize(
    ("dsn", "shown"),
    [
        ("postgresql://fleet:s3cret@db:5432/fleet", "postgresql://fleet:***@db:5432/fleet"),
        (
            "postgresql://postgres@127.0.0.1:5432/fleet",
            "postgresql://postgres@127.0.0.1:5432/fleet",
        ),
        ("host=db password=s3cret user=fleet", "host=db password=*** user=fleet"),
        ("host=db password='a b' user=fleet", "host=db password=*** user=fleet"),
    ],
)
def test_the_banner_never_shows_a_database_password(dsn: str, shown: str) -> None:
    assert masked_dsn(dsn) == shown


def test_a_missing_map_library_is_fetched_or_named(monkeypatch: pytest.MonkeyPatch) -> None:
    fetched: list[bool] = []
    monkeypatch.setattr(demo_module, "assets_installed", lambda: False)
    monkeypatch.setattr(demo_module, "install_leaflet", lambda: fetched.append(True) or True)
    DemoStack._ensure_map_library()
    assert fetched == [True]

    def no_npm() -> bool:
        raise WebAssetsError("npm is not installed")

    monkeypatch.setattr(demo_module, "install_leaflet", no_npm)
    with pytest.raises(DemoError, match="the live map needs its map library: npm is not"):
        DemoStack._ensure_map_library()
