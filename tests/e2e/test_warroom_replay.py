"""Fleet replay in the war-room page (headless Chromium): rewind, play, back to live.

History is stored through ingest's own writer (three vans' tracks an hour ago); live
positions come over MQTT to the API's live feed.  The page shows the live positions,
then the replay bar's slider moves every van to its stored position at a chosen moment,
playing at 60× moves them along their stored tracks, and "Live" puts them back where
they are now.  Screenshot: ``artifacts/warroom-replay.png``.
"""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path

import pytest
from playwright.sync_api import sync_playwright

from broker.runner import MosquittoBroker
from devtools.browser import launch_chromium
from fleet.contract import Fix
from tests.fixtures.api import Gateway, make_token, now_ms, running_api
from tests.fixtures.replay import store_fixes

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "artifacts"
VANS = ("pp-r1", "pp-r2", "pp-r3")


def _track(i: int, t0: int) -> list[Fix]:
    """A fix every 5 s for 10 minutes, heading east from a start of its own."""
    return [
        Fix(ts=t0 + k * 5000, lat=-5.13 - 0.004 * i, lon=119.40 + k * 1e-4, speed=6.0,
            heading=90.0, route="B")
        for k in range(120)
    ]  # fmt: skip


@pytest.mark.browser
@pytest.mark.timeout(120)
def test_replay_moves_vans_to_their_stored_positions_and_back_to_live(
    db_dsn: str, broker: MosquittoBroker
) -> None:
    t0 = (int(time.time()) - 3600) * 1000  # an hour ago, on a whole second
    store_fixes(db_dsn, [(vid, f) for i, vid in enumerate(VANS) for f in _track(i, t0)])
    token = make_token(db_dsn)
    with running_api(db_dsn, broker) as api:
        gw = Gateway(broker)
        with sync_playwright() as p:
            browser = launch_chromium(p)
            page = browser.new_page(viewport={"width": 1400, "height": 860})
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(f"{api.base}/#token={token}")
            page.wait_for_function("window.fleetState && fleetState.state.connected")

            # live: each van somewhere north of its past track
            live = {vid: (-5.10 + 0.002 * i, 119.45) for i, vid in enumerate(VANS)}
            for vid, (lat, lon) in live.items():
                gw.fix(vid, now_ms(), lat, lon, route="B", heading=0.0)
            page.wait_for_function(
                """(live) => Object.keys(live).every(id => fleetState.markers().some(m =>
                     m.id === id && m.lat === live[id][0] && m.lon === live[id][1]))""",
                arg=live,
            )

            # replay: pick the day and the moment t0 + 5 min on the slider
            page.click("#replay-enter")
            page.wait_for_selector("#replay-controls", state="visible")
            moment = t0 + 300_000
            day_start = page.evaluate(
                "(t) => { const d = new Date(t); d.setHours(0, 0, 0, 0); return d.getTime(); }",
                moment,
            )
            seeks = page.evaluate("fleetState.replay().seeks")
            page.fill("#replay-date", datetime.fromtimestamp(day_start / 1000).date().isoformat())
            page.wait_for_function(f"fleetState.replay().seeks > {seeks}")
            seeks = page.evaluate("fleetState.replay().seeks")
            page.eval_on_selector(
                "#replay-slider",
                "(el, s) => { el.value = String(s); el.dispatchEvent(new Event('change')); }",
                (moment - day_start) // 1000,
            )
            page.wait_for_function(f"fleetState.replay().seeks > {seeks}")
            assert page.evaluate("fleetState.replay().t") == moment
            expected = {
                vid: [-5.13 - 0.004 * i, round(119.40 + 60 * 1e-4, 10)]
                for i, vid in enumerate(VANS)
            }  # the fix at t0 + 300 s is fix 60
            shown = {m["id"]: m for m in page.evaluate("fleetState.markers()")}
            assert sorted(shown) == sorted(VANS)
            for vid, (lat, lon) in expected.items():
                assert shown[vid]["lat"] == pytest.approx(lat, abs=1e-9)
                assert shown[vid]["lon"] == pytest.approx(lon, abs=1e-9)
                assert shown[vid]["ts"] == t0 + 300_000
                assert shown[vid]["status"] == "online"
            # live fixes meanwhile do not move the replayed vans
            gw.fix(VANS[0], now_ms(), -5.0, 119.5, route="B")
            assert page.locator("#replay-clock").inner_text().count(":") == 2

            # play at 60×: the vans move east along their stored tracks
            page.select_option("#replay-speed", "60")
            page.click("#replay-play")
            page.wait_for_function(
                f"""fleetState.markers().every(m => m.ts >= {moment + 20_000})
                    && fleetState.replay().playing""",
                timeout=30_000,
            )
            page.click("#replay-play")  # pause
            moved = {m["id"]: m for m in page.evaluate("fleetState.markers()")}
            for vid in VANS:
                assert moved[vid]["lon"] > expected[vid][1]
                assert abs(moved[vid]["lat"] - expected[vid][0]) < 1e-9
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "warroom-replay.png"))

            # one click back to live: the vans where they are now (VANS[0] moved meanwhile)
            page.click("#replay-live")
            now_at = {**live, VANS[0]: (-5.0, 119.5)}
            page.wait_for_function(
                """(live) => !fleetState.replay().active && Object.keys(live).every(id =>
                     fleetState.markers().some(m => m.id === id && m.lat === live[id][0]
                       && m.lon === live[id][1]))""",
                arg=now_at,
            )
            assert page.is_visible("#replay-enter")
            assert not errors, errors
            browser.close()
        gw.close()
