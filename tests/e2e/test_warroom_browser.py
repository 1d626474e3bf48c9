"""Acceptance: the war-room page in headless Chromium against a running ``fleet demo``.

The demo runs as a subprocess (embedded PostgreSQL, Mosquitto, ingest, API and a
simulated fleet of 20 vans at 20x) with its own data dir and free ports.  The test
checks, through the page's ``window.fleetState`` view of the map, that van markers
appear and move, that a route filter leaves only that route's vans (and that the
server's filtered snapshot carries only that route), that the congestion layer shows
(incidents: ``test_incidents_browser.py``), and that a device that goes quiet turns
stale and, killed without a clean disconnect, offline through its last will.  A
screenshot is saved as ``artifacts/warroom.png``.

It also checks that the token never stays anywhere it could leak: the page trades it
for an HttpOnly session cookie and removes it from the address bar (``?token=`` of the
demo's link, or ``#token=``), keeps it in no storage, and after the whole session no log
file of the demo (API, ingest, broker, database, the demo itself) contains it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest
from playwright.sync_api import Page, sync_playwright

from broker.runner import BrokerLayout
from devtools.browser import launch_chromium
from tests.fixtures.analytics import insert_traversals
from tests.fixtures.demo import DemoProcess, demo_data_dir

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "artifacts"
TEST_VAN = "pp-test-killed"
TEST_VAN_PASSWORD = "killed-van-secret"

# A device in its own process: retained `online`, a last will `offline` (retained, as the
# contract says), then `pause_after` fixes every 0.3 s along the given coordinates, then
# silence on a live connection.  SIGKILL closes its socket without DISCONNECT, so the
# broker publishes the will.
DEVICE_SCRIPT = r"""
import json, sys, time
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
port, vid, password, route = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
coords, pause_after = json.loads(sys.argv[5]), int(sys.argv[6])
c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=vid, protocol=mqtt.MQTTv5)
c.username_pw_set(vid, password)
c.will_set(f"fleet/{vid}/status", "offline", qos=1, retain=True)
c.connect("127.0.0.1", port, keepalive=5)
c.loop_start()
c.publish(f"fleet/{vid}/status", "online", qos=1, retain=True).wait_for_publish(10)
print("online", flush=True)
i = 0
while True:
    if i >= pause_after:  # still connected (keep-alive pings), no more fixes: stale
        time.sleep(0.3)
        continue
    lon, lat = coords[i % len(coords)]
    fix = {"ts": int(time.time() * 1000), "lat": lat, "lon": lon, "speed": 6.0,
           "heading": 90.0, "route": route, "seq": i}
    c.publish(f"fleet/{vid}/telemetry", json.dumps(fix), qos=1)
    i += 1
    time.sleep(0.3)
"""


@pytest.fixture
def demo() -> Iterator[DemoProcess]:
    with demo_data_dir() as data_dir:
        # vans report every 5 s of simulated time = every 0.25 s of wall time at 20x
        stack = DemoProcess(data_dir, vehicles=20, speedup=20, env={"FLEET_STALE_AFTER_S": "3"})
        try:
            stack.start()
            yield stack
        finally:
            stack.cleanup()


def _markers(page: Page) -> list[dict[str, object]]:
    return page.evaluate("fleetState.markers()")  # type: ignore[no-any-return]


def _route_line(demo: DemoProcess, code: str) -> list[list[float]]:
    with demo.api() as api:
        routes = api.get("/api/v1/routes").json()
    for feature in routes["features"]:
        props = feature["properties"]
        if props.get("kind") == "route" and props["code"] == code:
            return feature["geometry"]["coordinates"][:20]  # type: ignore[no-any-return]
    raise AssertionError(f"route {code} not in /api/v1/routes")


def _insert_segment_speed(dsn: str, route: str) -> None:
    """One traversal of checkpoint 0 → 1 now, and its rollup as the analytics loop makes it."""
    with psycopg.connect(dsn) as conn:
        now = datetime.now(UTC)
        insert_traversals(conn, [("pp-test-congestion", now, route, 0, 0, 1, 240, 400, 1.67)])


@pytest.mark.browser
@pytest.mark.slow
@pytest.mark.timeout(240)
def test_war_room_shows_moving_vans_filters_routes_and_offline_devices(
    demo: DemoProcess,
) -> None:
    # a device the test can kill: credentials in the demo's broker, then reload it
    with BrokerLayout(demo.data_dir).accounts() as accounts:
        accounts.put({TEST_VAN: TEST_VAN_PASSWORD})

    with sync_playwright() as p:
        browser = launch_chromium(p)
        page = browser.new_page(viewport={"width": 1400, "height": 860})
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(demo.map_url)
        assert "token=" not in page.url  # traded for a session cookie, out of the address bar

        # 1. van markers appear (the sim's 20 vans) ...
        page.wait_for_function(
            "window.fleetState && fleetState.markers().length >= 15", timeout=60_000
        )
        _assert_token_kept_out_of_the_page(page, demo.token)
        first = {m["id"]: (m["lat"], m["lon"]) for m in _markers(page)}
        assert all(m["onMap"] for m in _markers(page))
        # ... and change position as deltas arrive
        page.wait_for_function(
            """(first) => fleetState.markers().filter(m => first[m.id] &&
                   (m.lat !== first[m.id][0] || m.lon !== first[m.id][1])).length >= 5""",
            arg=first,
            timeout=30_000,
        )

        # 2. a route filter: "none", then one route → only that route's vans remain
        routes = page.evaluate("fleetState.routes()")
        assert len(routes) >= 4, routes
        chosen = sorted({str(m["route"]) for m in _markers(page)})[0]
        page.click("#routes-none")
        page.wait_for_function("fleetState.markers().length === 0", timeout=10_000)
        page.check(f"input[data-route='{chosen}']")
        page.wait_for_function(
            """(route) => {
                 const s = fleetState.state, ms = fleetState.markers();
                 return ms.length > 0 && ms.every(m => m.route === route)
                   && JSON.stringify(s.lastSnapshotRoutes) === JSON.stringify([route]);
               }""",
            arg=chosen,
            timeout=15_000,
        )
        frames_before = page.evaluate("fleetState.state.frames")
        page.wait_for_function(f"fleetState.state.frames > {frames_before} + 3", timeout=10_000)
        assert all(m["route"] == chosen for m in _markers(page))  # deltas stay filtered
        assert int(page.inner_text(f"[data-count='{chosen}']")) > 0

        # "only vans in the visible area": a view over the sea west of the city → none
        page.evaluate("fleetState.map.setView([-5.14, 119.30], 16, {animate: false})")
        page.check("#bbox-toggle")
        page.wait_for_function(
            "fleetState.state.lastSnapshotSize === 0 && fleetState.markers().length === 0",
            timeout=10_000,
        )
        page.uncheck("#bbox-toggle")
        page.wait_for_function("fleetState.markers().length > 0", timeout=10_000)
        page.evaluate("fleetState.map.setView([-5.14, 119.43], 13, {animate: false})")

        # the congestion layer: offered because the report endpoint exists; draws segments
        _insert_segment_speed(demo.dsn, chosen)
        page.wait_for_selector("#layers", state="visible", timeout=10_000)
        page.check("#congestion-toggle")
        page.wait_for_function("fleetState.state.congestionShapes >= 1", timeout=15_000)
        page.uncheck("#congestion-toggle")

        # 3. a device on that route comes online, goes quiet (stale), then is killed: its
        #    last will → offline
        device = subprocess.Popen(
            [
                sys.executable,
                "-c",
                DEVICE_SCRIPT,
                str(demo.mqtt_port),
                TEST_VAN,
                TEST_VAN_PASSWORD,
                chosen,
                json.dumps(_route_line(demo, chosen)),
                "8",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            page.wait_for_function(
                f"""fleetState.markers().some(m => m.id === '{TEST_VAN}'
                       && m.status === 'online')""",
                timeout=30_000,
            )
            # no fix for FLEET_STALE_AFTER_S (3 s here) while connected → stale
            page.wait_for_function(
                f"""fleetState.markers().some(m => m.id === '{TEST_VAN}'
                       && m.status === 'stale')""",
                timeout=30_000,
            )
            os.kill(device.pid, signal.SIGKILL)
            device.wait(10)
            killed_at = time.monotonic()
            page.wait_for_function(
                f"""fleetState.markers().some(m => m.id === '{TEST_VAN}'
                       && m.status === 'offline')""",
                timeout=30_000,
            )
            offline_after_s = time.monotonic() - killed_at
        finally:
            if device.poll() is None:
                device.kill()
                device.wait()
        # keep-alive 5 s: the broker notices the dead socket at once or within 1.5 x 5 s
        assert offline_after_s < 15

        # details of a van: a click on its dot (the vans are one canvas: the click goes to
        # the map, which picks the nearest van) shows them and its recent track
        point = page.evaluate(f"fleetState.vanPoint('{TEST_VAN}')")
        page.mouse.click(point["x"], point["y"])
        page.wait_for_function(
            "document.getElementById('details-track').textContent.includes(' in the last 30 min')",
            timeout=10_000,
        )
        assert page.text_content("#details-id") == TEST_VAN

        # a screenshot of the whole fleet for the record
        page.click("#routes-all")
        page.wait_for_function("fleetState.markers().length >= 15", timeout=10_000)
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "warroom.png"))
        assert not errors, errors

        # the #token= form (never sent to a server) works the same way
        other = browser.new_page()
        other.goto(f"{demo.base_url}/#token={demo.token}")
        other.wait_for_function("fleetState.markers().length >= 15", timeout=30_000)
        _assert_token_kept_out_of_the_page(other, demo.token)
        other.close()

        # without a token, or with a wrong one, the page says what to do and shows no van
        for url in (
            demo.base_url + "/",
            demo.base_url + "/?token=flt_wrong",
            demo.base_url + "/#token=flt_wrong",
        ):
            other = browser.new_page()
            other.goto(url)
            other.wait_for_selector("#auth-error", state="visible", timeout=10_000)
            assert "fleet demo" in other.inner_text("#auth-error")
            assert other.evaluate("fleetState.markers().length") == 0
            other.close()
        browser.close()

    # REST calls with the token too (as an operator's script would make them) ...
    with demo.api() as api:
        assert api.get("/api/v1/vehicles").status_code == 200
        assert api.get(f"/api/v1/vehicles?token={demo.token}").status_code == 400
    # ... and after all that no log file holds the token
    _assert_no_log_holds(demo, demo.token)


def _assert_token_kept_out_of_the_page(page: Page, token: str) -> None:
    assert token not in page.url and "token=" not in page.url
    kept = page.evaluate(
        """() => JSON.stringify([Object.entries(sessionStorage), Object.entries(localStorage),
                                 document.cookie, window.name, history.state])"""
    )
    assert token not in kept, kept
    (session,) = [c for c in page.context.cookies() if c["name"] == "fleet_session"]
    assert session["httpOnly"] and session["sameSite"] == "Strict"
    assert token not in session["value"]


def _assert_no_log_holds(demo: DemoProcess, token: str) -> None:
    logs = [p for p in demo.data_dir.rglob("*") if p.is_file() and _is_log(p)]
    logs.append(demo.stderr_path)
    assert any(p.name == "api.log" for p in logs), logs
    for path in logs:
        text = path.read_bytes()
        assert token.encode() not in text, f"the token is in {path}"
        assert token.removeprefix("flt_").encode() not in text, f"the token is in {path}"


def _is_log(path: Path) -> bool:
    return path.suffix == ".log" or "log" in path.parent.name or path.name.endswith(".stderr")
