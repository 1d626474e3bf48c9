"""Acceptance: alerts a human can work, in headless Chromium against a running API.

Three pages are open at once, each with its own session: two operators' and a viewer's.
Incidents the analytics open (seeded through its own functions) appear on all three
live; the first operator acknowledges one and the other two pages see it change over
the websocket, then resolves it; a condition that clears on its own shows as cleared.
The viewer's page never shows an Acknowledge or Resolve button. A screenshot is saved
as ``artifacts/warroom-incidents.png``.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from api.tokens import Role
from broker.runner import MosquittoBroker
from devtools.browser import launch_chromium
from tests.fixtures.api import RunningApi, make_token, running_api
from tests.fixtures.incidents import bunching, cycle, stopped
from tests.fixtures.waiting import wait_for

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "artifacts"


def _open(browser: Browser, api: RunningApi, token: str) -> Page:
    """A page in a context of its own (its own session cookie)."""
    page = browser.new_context(viewport={"width": 1400, "height": 860}).new_page()
    page.goto(f"{api.base}/#token={token}")
    page.wait_for_function("window.fleetState && fleetState.state.connected", timeout=20_000)
    return page


def _item(incident_id: int) -> str:
    return f"#incidents li[data-incident='{incident_id}']"


def _shows_state(page: Page, incident_id: int, state: str) -> None:
    page.wait_for_selector(
        f"{_item(incident_id)} .incident-state[data-state='{state}']", timeout=10_000
    )


@pytest.mark.browser
@pytest.mark.timeout(180)
def test_an_operator_acknowledges_and_every_open_page_sees_it(
    db_dsn: str, broker: MosquittoBroker
) -> None:
    operator = make_token(db_dsn, Role.OPERATOR, "ops-desk")
    second = make_token(db_dsn, Role.OPERATOR, "ops-desk-2")
    viewer = make_token(db_dsn, Role.VIEWER, "wall-screen")
    with running_api(db_dsn, broker, alerts_poll_s=0.2) as api, sync_playwright() as p:
        browser = launch_chromium(p)
        errors: list[str] = []
        pages = [_open(browser, api, t) for t in (operator, second, viewer)]
        for page in pages:
            page.on("pageerror", lambda exc: errors.append(str(exc)))
        ops, other, wall = pages
        poller = api.app.state.incident_poller
        wait_for(lambda: poller.primed, 10, "the incident poller")

        # the analytics fold three bunching pairs of route B, direction 0, into one
        # incident; two vans stopped are one incident each
        cycle(
            db_dsn,
            bunching("pp-002", "pp-001"),
            bunching("pp-003", "pp-002"),
            bunching("pp-007", "pp-006"),
            stopped("pp-010"),
            stopped("pp-011", route="D"),
        )
        with httpx.Client(base_url=api.base, headers={"Authorization": f"Bearer {viewer}"}) as rest:
            found = rest.get("/api/v1/incidents?active=true").json()
        assert len(found) == 3
        (route_b,) = [i["id"] for i in found if i["kind"] == "bunching"]
        stop_10 = next(i["id"] for i in found if i["vehicle_id"] == "pp-010")
        for page in pages:  # pushed live to every page
            for iid in (i["id"] for i in found):
                _shows_state(page, iid, "open")
        text = ops.inner_text(_item(route_b))
        for van in ("pp-001", "pp-002", "pp-003", "pp-006", "pp-007"):
            assert van in text
        assert "B dir 0" in text and "since" in text
        shown = ops.evaluate("fleetState.state.incidents")
        assert {i["id"] for i in shown} == {i["id"] for i in found}

        # buttons for operators only
        assert ops.locator(f"{_item(route_b)} button[data-action='acknowledge']").count() == 1
        assert other.locator(f"{_item(route_b)} button[data-action='resolve']").count() == 1
        assert wall.locator("#incidents button").count() == 0

        # the first operator acknowledges; the second operator and the wall see it live
        ops.click(f"{_item(route_b)} button[data-action='acknowledge']")
        for page in (other, wall, ops):
            _shows_state(page, route_b, "acknowledged")
            assert "ack by ops-desk" in page.inner_text(_item(route_b))
        other.wait_for_selector(
            f"{_item(route_b)} button[data-action='acknowledge']", state="detached"
        )
        assert other.locator(f"{_item(route_b)} button[data-action='resolve']").count() == 1
        assert wall.locator("#incidents button").count() == 0
        ARTIFACTS.mkdir(exist_ok=True)
        ops.screenshot(path=str(ARTIFACTS / "warroom-incidents.png"))

        # the second operator resolves it; recorded with who
        other.click(f"{_item(route_b)} button[data-action='resolve']")
        for page in pages:
            _shows_state(page, route_b, "resolved")
            assert "resolved by ops-desk-2" in page.inner_text(_item(route_b))
        assert ops.locator(f"{_item(route_b)} button").count() == 0

        # a stopped van drives off: cleared by the system on every page
        cycle(
            db_dsn,
            bunching("pp-002", "pp-001"),
            bunching("pp-003", "pp-002"),
            bunching("pp-007", "pp-006"),
            stopped("pp-011", route="D"),
        )
        for page in pages:
            _shows_state(page, stop_10, "resolved")
            assert "cleared" in page.inner_text(_item(stop_10))
        assert wall.locator("#incidents button").count() == 0
        assert not errors, errors
        browser.close()
